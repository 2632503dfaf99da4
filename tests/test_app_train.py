"""The training app end to end, in-process through Hydra's compose API."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from mlflow.tracking import MlflowClient

from anyq.app.job import run_job
from anyq.app.train import run_job as validated_job
from anyq.errors import ConfigError, NonFiniteLossError
from anyq.training.config_tree import VARIANTS


def client_for(cfg) -> MlflowClient:
    return MlflowClient(f"sqlite:///{Path(cfg.paths.mlruns).resolve() / 'mlflow.db'}")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fast_dev_run_of_every_variant(compose_cfg, variant):
    cfg = compose_cfg(f"model={variant}", "trainer.fast_dev_run=true", "tracking=none")
    summary = run_job(cfg)
    # the synthetic data's oracle knows the true distribution: no model scores below it, and
    # the ratio is the two logged CRPS divided (a scorer on the wrong scale or the wrong
    # windows breaks one or the other)
    assert summary["test/oracle_crps"] > 0
    assert summary["test/oracle_ratio"] == pytest.approx(summary["test/crps"] / summary["test/oracle_crps"])
    assert summary["test/oracle_ratio"] > 1.0
    assert 0.0 <= summary["test/coverage-0.9"] <= 1.0


def test_impossible_heads_fail_before_training(compose_cfg):
    cfg = compose_cfg("model.attention.d_model=10", "model.attention.n_heads=4", "tracking=none")
    with pytest.raises(ConfigError, match="d_model=10 is not divisible by model.attention.n_heads=4"):
        validated_job(cfg)


def test_misspelled_override_fails_at_composition(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="tempurature"):
        compose_cfg("model.sampler.tempurature=2")


def test_wrong_type_fails_at_composition(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="n_heads"):
        compose_cfg("model.attention.n_heads=eight")


def test_missing_data_file_is_one_line(compose_cfg, tmp_path):
    cfg = compose_cfg("data=csv", f"data.path={tmp_path}/nope.csv", "tracking=none")
    with pytest.raises(ConfigError) as err:  # found by validation, before any data is read
        validated_job(cfg)
    assert str(err.value) == f"data.path={tmp_path}/nope.csv: data file not found"
    assert err.value.keys == ("data.path",)


def test_run_records_metrics_tags_and_baseline_delta(compose_cfg):
    cfg = compose_cfg("model=adaptive_attention")
    summary = run_job(cfg)
    client = client_for(cfg)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    for key in ("variant", "dataset", "data_fingerprint", "seed", "git_commit", "overrides",
                "baseline_run_id"):
        assert key in run.data.tags, key
    metrics = run.data.metrics
    for key in ("test/crps", "test/crps_norm", "test/coverage-0.9", "test/coverage-0.95",
                "test/width-0.9", "test/marfe", "test/mape", "test/crossing_rate",
                "test/oracle_ratio", "delta/crps_vs_baseline", "delta/coverage-0.9_vs_baseline"):
        assert key in metrics, key
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/crps")}
    assert len(history) == cfg.trainer.max_epochs
    for key in ("train/loss", "val/loss", "val/coverage-0.9"):
        assert client.get_metric_history(run.info.run_id, key), key
    baseline = client.get_run(run.data.tags["baseline_run_id"])
    assert baseline.data.tags["variant"] == "baseline_adaptive"
    assert metrics["delta/crps_vs_baseline"] == pytest.approx(
        metrics["test/crps"] - baseline.data.metrics["test/crps"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "config.yaml" in artifacts

    # A second model with the same data, seed and budget reuses that baseline.
    again = run_job(compose_cfg("model=modulation_off"))
    assert client.get_run(again["run_id"]).data.tags["baseline_run_id"] == baseline.info.run_id
    baselines = client.search_runs([run.info.experiment_id], "tags.variant = 'baseline_adaptive'")
    assert len(baselines) == 1

    # Another seed is another budget: a new baseline is trained.
    third = run_job(compose_cfg("model=modulation_off", "seed=1"))
    assert client.get_run(third["run_id"]).data.tags["baseline_run_id"] != baseline.info.run_id


def test_crash_leaves_run_failed(compose_cfg):
    cfg = compose_cfg("model=baseline_adaptive", "optim.lr=1e30", "trainer.gradient_clip_val=null",
                      "trainer.log_every_n_steps=1")
    with pytest.raises(NonFiniteLossError, match="nan|inf"):
        run_job(cfg)
    runs = client_for(cfg).search_runs(
        [client_for(cfg).get_experiment_by_name("anyq").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "error" in runs[0].data.tags


def test_resume_continues_from_saved_step_with_sampler_state(compose_cfg):
    first = compose_cfg("model=adaptive_attention", "tracking.compare_to_baseline=false",
                        "trainer.max_epochs=1")
    summary = run_job(first)
    last = Path(first.paths.checkpoints) / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    sampler_keys = [k for k in saved["state_dict"] if ".sampler." in k]
    assert sampler_keys and saved["global_step"] > 0

    resumed = compose_cfg("model=adaptive_attention", "tracking.compare_to_baseline=false",
                          "trainer.max_epochs=2", f"resume={last}")
    seen = {}

    import pytorch_lightning as pl

    class Probe(pl.Callback):
        def on_train_start(self, trainer, module):
            seen["step"] = trainer.global_step
            seen["sampler"] = {k: v.clone() for k, v in module.state_dict().items() if ".sampler." in k}

    from anyq.app import job as job_module
    original = job_module.trial_callbacks
    job_module.trial_callbacks = lambda cfg, pruner: [Probe()]
    try:
        again = run_job(resumed)
    finally:
        job_module.trial_callbacks = original
    assert seen["step"] == saved["global_step"]
    for key in sampler_keys:
        assert torch.equal(seen["sampler"][key], saved["state_dict"][key]), key
    assert again["run_id"] == summary["run_id"]  # the same MLflow run continues
    client = client_for(first)
    assert len(client.get_metric_history(summary["run_id"], "val/crps")) == 2
