"""``anyq-confirm``: its command line, and the overrides a confirm study takes and refuses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import OmegaConf

from anyq.app import confirm, train
from anyq.app.confirm_study import command_line_keys, crps_line
from conftest import compose_config

SWEEP = "adaptive_attention"


def recorded_sweep(root: Path) -> MlflowClient:
    """A finished sweep as the MLflow store holds it (all a confirm study reads): the parent run
    naming trial 0 best, and that trial's FINISHED run with the config it logged."""
    trial = compose_config(root, [f"sweep={SWEEP}", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                                  "trainer.limit_val_batches=1", "tracking.log_model=false"], job="trial")
    (root / "mlruns").mkdir()
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.create_experiment(SWEEP, artifact_location=(root / "mlruns" / "artifacts").as_uri())
    parent = client.create_run(experiment, tags={"role": "study", "study_name": SWEEP, "best_trial": "0",
                                                 "optuna.storage": f"sqlite:///{root}/mlruns/optuna.db"})
    run = client.create_run(experiment, tags={MLFLOW_PARENT_RUN_ID: parent.info.run_id, "optuna.trial_number": "0",
                                              "variant": SWEEP, "recipe": "cpu_demo"})
    client.log_text(run.info.run_id, OmegaConf.to_yaml(trial, resolve=True), "config.yaml")  # as a job logs it
    client.set_terminated(run.info.run_id, "FINISHED")
    return client


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    recorded_sweep(root)
    return root


def error_lines(err: str, command: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"{command}: error:")]


@pytest.mark.parametrize("command, override", [
    ("anyq-confirm", "trainer=fast"),
    ("anyq-confirm", "model=nbeats_aq"),
    ("anyq-confirm", "model/attention=plain"),
    ("anyq-confirm", "experiment=guide_full"),
    ("anyq-train", "optim=adam"),
])
def test_a_config_group_is_refused_before_anything_trains(sweep_root, capsys, monkeypatch, command, override):
    """A group's file would replace the trial's settings and the sweep's recipe (trainer=fast drops
    the weight averaging and early stopping, model/attention=plain the searched temperature)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = MlflowClient(f"sqlite:///{sweep_root}/mlruns/mlflow.db")
    study = [SWEEP, "--seeds", "1"] if command == "anyq-confirm" else [f"confirm.study={SWEEP}", "confirm.seeds=1"]
    monkeypatch.setattr(sys, "argv", [command, *study, override, f"paths.root={sweep_root}"])
    with pytest.raises(SystemExit) as exit_:
        confirm.main() if command == "anyq-confirm" else train.cli()
    assert exit_.value.code == 2
    assert error_lines(capsys.readouterr().err, command) == [
        f"{command}: error: override {override!r}: anyq-confirm retrains the sweep's trial under the sweep's recipe, "
        f"so it takes single settings (e.g. trainer.max_steps=4000), not a config group, whose file would replace "
        f"the trial's settings"]
    assert client.get_experiment_by_name(f"{SWEEP}-confirm") is None  # no study opened, no run trained
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 2


@pytest.mark.parametrize("command, flag", [
    ("anyq-confirm", "-m"),
    ("anyq-confirm", "--multirun"),
    ("anyq-confirm", "hydra.mode=MULTIRUN"),
    ("anyq-train", "-m"),
])
def test_a_multirun_is_refused_before_anything_runs(sweep_root, capsys, monkeypatch, command, flag):
    """Under -m Hydra's sweeper would run the confirm study as a sweep's trial (and a sweep
    over confirm.seeds=3,5 as several studies at once): one line, exit 2, no folder, no run."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = MlflowClient(f"sqlite:///{sweep_root}/mlruns/mlflow.db")
    study = [SWEEP, "--seeds", "1"] if command == "anyq-confirm" else [f"confirm.study={SWEEP}", "confirm.seeds=1"]
    monkeypatch.setattr(sys, "argv", [command, *study, f"paths.root={sweep_root}", flag])
    with pytest.raises(SystemExit) as exit_:
        confirm.main() if command == "anyq-confirm" else train.cli()
    assert exit_.value.code == 2
    assert error_lines(capsys.readouterr().err, command) == [
        f"{command}: error: a confirm study is one job that trains its seeds itself (--seeds N, confirm.seeds=N); "
        f"it takes no -m/--multirun (hydra.mode=MULTIRUN)"]
    assert not (sweep_root / "multirun").exists()  # Hydra's sweep never started
    assert client.get_experiment_by_name(f"{SWEEP}-confirm") is None
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 2


def test_single_settings_apply_and_where_to_confirm_is_the_commands_own(tmp_path):
    cfg = compose_config(tmp_path, [f"confirm.study={SWEEP}"])
    overrides = [f"confirm.study={SWEEP}", "confirm.seeds=3", "trainer.max_steps=4000", "paths.root=/x", "seed=4",
                 "+tracking.tags.note=a", "data.synthetic.n_series=3", "data.split.proportions=[0.7,0.15,0.15]"]
    assert command_line_keys(overrides, cfg) == ["trainer.max_steps", "data.synthetic.n_series",
                                                 "data.split.proportions"]


def test_the_sweep_seeds_and_trial_are_the_confirm_keys(sweep_root, capsys, monkeypatch):
    """``anyq-confirm <sweep> --seeds 3 --trial 2`` composes as ``anyq-train confirm.study=<sweep>
    confirm.seeds=3 confirm.trial=2``; Hydra's own flags pass through."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(sys, "argv", ["anyq-confirm"])  # the command sets it for Hydra
    confirm.main([SWEEP, "--seeds", "3", "--trial", "2", "trainer.max_steps=4000", f"paths.root={sweep_root}",
                  "--cfg", "job"])
    printed = OmegaConf.create(capsys.readouterr().out)
    assert OmegaConf.to_container(printed.confirm) == {"study": SWEEP, "seeds": 3, "trial": 2}
    assert printed.trainer.max_steps == 4000


@pytest.mark.parametrize("name, hint", [
    ("ablatoin", f"sweeps in the store: {SWEEP}; or "),  # near the ablation's name, which confirm does not take
    ("adaptive_atention", f"did you mean {SWEEP}? "),
])
def test_an_unknown_sweep_is_matched_against_sweeps_only(tmp_path, capsys, monkeypatch, name, hint):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = recorded_sweep(tmp_path)
    ablation = client.create_experiment("ablation", artifact_location=(tmp_path / "mlruns" / "a").as_uri())
    client.create_run(ablation, tags={"role": "study", "study_name": "ablation", "study_kind": "grid"})
    monkeypatch.setattr(sys, "argv", ["anyq-confirm"])
    with pytest.raises(SystemExit) as exit_:
        confirm.main([name, "--seeds", "1", f"paths.root={tmp_path}"])
    assert exit_.value.code == 2
    assert error_lines(capsys.readouterr().err, "anyq-confirm") == [
        f"anyq-confirm: error: no study parent run for study {name!r} in the store ({hint}train a sweep first, "
        f"`make sweep`)"]


@pytest.mark.parametrize("override", ['resume="outputs/x/best-epoch=07.ckpt"', "task=test"])
def test_resume_and_task_are_refused_not_ignored(sweep_root, capsys, monkeypatch, override):
    """A confirm study trains each seed from the start: resume= or task= would be silently
    dropped, so they are one line and exit 2, before anything trains."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = MlflowClient(f"sqlite:///{sweep_root}/mlruns/mlflow.db")
    monkeypatch.setattr(sys, "argv", ["anyq-confirm"])
    with pytest.raises(SystemExit) as exit_:
        confirm.main([SWEEP, "--seeds", "1", override, f"paths.root={sweep_root}"])
    assert exit_.value.code == 2
    key = override.split("=")[0]
    assert error_lines(capsys.readouterr().err, "anyq-confirm") == [
        f"anyq-confirm: error: override {override!r}: anyq-confirm trains every seed from the start (a rerun "
        f"trains only the seeds that did not finish), so it takes no {key}=; to score a checkpoint: anyq-train "
        f"task=test resume=<path>"]
    assert client.get_experiment_by_name(f"{SWEEP}-confirm") is None


def test_the_crps_line_gives_an_interval_only_from_two_seeds_or_more():
    verdict = {"seeds": 1, "crps_mean": 2656.31, "crps_ci_low": float("nan"), "crps_ci_high": float("nan"),
               "baseline_crps_mean": 2701.0}
    assert crps_line(verdict) == "test CRPS over 1 seed: 2656.3 (no interval from one seed); baseline 2701.0"
    verdict.update(seeds=3, crps_ci_low=2601.04, crps_ci_high=2711.58)
    assert crps_line(verdict) == "test CRPS over 3 seeds: 2656.3 (95 % CI 2601.0 .. 2711.6); baseline 2701.0"
