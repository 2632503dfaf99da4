"""Ablation studies through ``anyq-train -m ablation=variants``: one run per cell, extendable."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from anyq.tracking.readiness import untrained_reasons
from anyq.training.recipe import recipe_hash
from conftest import ABLATION, compose_config, run_cli


def study_runs(root: Path):
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("ablation")
    parents = client.search_runs([experiment.experiment_id], "tags.role = 'study'")
    assert len(parents) == 1
    kids = client.search_runs([experiment.experiment_id],
                              f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parents[0].info.run_id}'")
    everything = client.search_runs([experiment.experiment_id], "")
    return parents[0], kids, everything


def test_ablation_trains_each_cell_once_and_reruns_add_only_new_cells(tmp_path, monkeypatch):
    run_cli(tmp_path, *ABLATION, 'hydra.sweeper.params.seed="0,1"')
    parent, kids, everything = study_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study_name"] == "ablation" and parent.data.tags["role"] == "study"
    cells = sorted((k.data.tags["variant"], k.data.tags["seed"]) for k in kids)
    assert cells == [("adaptive_attention", "0"), ("adaptive_attention", "1"),
                     ("baseline_adaptive", "0"), ("baseline_adaptive", "1")]
    assert all(k.info.status == "FINISHED" for k in kids)
    assert len(everything) == 5  # the cells and their parent: no extra baseline was trained
    # the main job's recipe, on the parent and every cell
    recipe = recipe_hash(compose_config(tmp_path, ["experiment=cpu_demo"]))
    assert (parent.data.tags["recipe"], parent.data.tags["recipe_hash"]) == ("cpu_demo", recipe)
    assert {(k.data.tags["recipe"], k.data.tags["recipe_hash"]) for k in kids} == {("cpu_demo", recipe)}
    baseline_of_seed = {k.data.tags["seed"]: k.info.run_id for k in kids
                        if k.data.tags["variant"] == "baseline_adaptive"}
    for k in kids:
        if k.data.tags["variant"] == "adaptive_attention":  # compared with the study's own baseline cell
            assert k.data.tags["baseline_run_id"] == baseline_of_seed[k.data.tags["seed"]]
            assert "delta/crps_vs_baseline" in k.data.metrics
    # the study's parent says whether its models are trained enough to judge, and which are not
    untrained = {k.data.tags["variant"] for k in kids if untrained_reasons(k.data.metrics)}
    assert parent.data.tags["trained_enough"] == ("false" if untrained else "true")
    assert all(f"{variant}: seed " in parent.data.tags.get("trained_enough_reason", "") for variant in untrained)
    first_ids = {k.info.run_id for k in kids}

    from anyq.app import train

    real, trained = train.run_job, []

    def counting(cfg):
        trained.append((cfg.model.variant, cfg.seed))
        return real(cfg)

    monkeypatch.setattr(train, "run_job", counting)
    run_cli(tmp_path, *ABLATION, "seed=0,1,2")  # the command line replaces the file's seeds
    assert sorted(trained) == [("adaptive_attention", 2), ("baseline_adaptive", 2)]
    parent_again, kids, everything = study_runs(tmp_path)
    assert parent_again.info.run_id == parent.info.run_id and parent_again.info.status == "FINISHED"
    assert len(kids) == 6 and len(everything) == 7
    assert first_ids < {k.info.run_id for k in kids}  # the finished cells were kept, not retrained
    assert sorted(k.data.tags["seed"] for k in kids if k.info.run_id not in first_ids) == ["2", "2"]

    trained.clear()
    run_cli(tmp_path, *ABLATION, 'hydra.sweeper.params.seed="0,1,2"')  # nothing left to do
    assert trained == []
    assert len(study_runs(tmp_path)[1]) == 6
