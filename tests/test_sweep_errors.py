"""How a sweep ends when something is wrong: the trial's own config, the search space, the
stored study, a signal. Every case asserts what is recorded and how the process exits."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from anyq.errors import SpaceError, SweepRefused
from anyq.sweeping.space import fit_space_to_config, parse_search_space
from anyq.tracking.trial_runs import TRIAL_NUMBER_TAG
from conftest import TINY, run_cli
from scale_helpers import clean_env, start_sweep, study_runs, study_trials, sweep_cmd, wait_for

SWEEP = ["-m", "sweep=adaptive_attention", "trainer.max_epochs=1", *TINY, "hydra.sweeper.pruner=null"]
TIMEOUT = 300


def refused(root: Path, *overrides: str) -> str:
    """The one-line reason a sweep is refused before its first trial."""
    with pytest.raises(SweepRefused) as caught:
        run_cli(root, *SWEEP, "hydra.sweeper.params=null", *overrides)
    message = str(caught.value.error)
    assert "\n" not in message
    return message


# --------------------------------------------------- the space against the schema
def test_integer_interval_on_an_int_key_searches_integers(compose_cfg):
    cfg = compose_cfg("model=adaptive_attention")
    space, _ = parse_search_space(None, ["model.attention.num_blocks=interval(1, 3)",
                                         "model.attention.adaptive_temp=interval(0, 2)",
                                         "model.attention.n_heads=int(interval(1, 4))"])
    assert space["model.attention.num_blocks"] == FloatDistribution(1.0, 3.0)  # Hydra reads floats
    fitted = fit_space_to_config(space, cfg)
    assert fitted["model.attention.num_blocks"] == IntDistribution(1, 3)
    assert fitted["model.attention.adaptive_temp"] == FloatDistribution(0.0, 2.0)  # a float key stays float
    assert fitted["model.attention.n_heads"] == IntDistribution(1, 4)
    stepped, _ = parse_search_space(None, ["model.attention.num_blocks=range(1.0, 4.0)"])
    assert fit_space_to_config(stepped, cfg)["model.attention.num_blocks"] == IntDistribution(1, 3)


def test_issue_command_interval_on_num_blocks_runs_integer_trials(tmp_path):
    run_cli(tmp_path, *SWEEP, "hydra.sweeper.params=null", "model.attention.num_blocks=interval(1,3)",
            "hydra.sweeper.n_trials=2")
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(type(t.params["model.attention.num_blocks"]) is int for t in trials)
    assert all(1 <= t.params["model.attention.num_blocks"] <= 3 for t in trials)
    _, kids, _ = study_runs(tmp_path)
    assert {k.data.params["model.attention.num_blocks"] for k in kids} == \
        {str(t.params["model.attention.num_blocks"]) for t in trials}


@pytest.mark.parametrize("override, expected", [
    ("model.attention.num_blocks=interval(1.5, 3)",
     "search space: model.attention.num_blocks is an integer, but its range 1.5..3.0 is not; "
     "use int(interval(a, b)) or range(a, b) with whole ends"),
    ("model.attention.num_block=choice(1, 2)",
     "search space: model.attention.num_block is not a key of the config (write +model.attention.num_block=... "
     "to add one)"),
    ("trainer.max_epochs=choice(two, 3)", "search space: Error merging override trainer.max_epochs=two"),
    ("model=choice(adaptive_attention, no_such_model)", "search space: In 'config': Could not find 'model/no_such_model'"),
])
def test_a_space_that_does_not_fit_the_config_is_refused_before_any_trial(tmp_path, override, expected):
    assert refused(tmp_path, override, "hydra.sweeper.n_trials=2").startswith(expected)
    assert not (tmp_path / "mlruns" / "optuna.db").exists()  # no study, no trial, no run


def test_refused_sweep_is_one_line_on_stderr_and_exit_2(tmp_path):
    done = subprocess.run(sweep_cmd(tmp_path, "model.attention.num_blocks=interval(1.5, 3)", "hydra.sweeper.n_trials=1"),
                          env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "anyq-train: error: search space: model.attention.num_blocks is an integer, but its range 1.5..3.0 is "
        "not; use int(interval(a, b)) or range(a, b) with whole ends"]


# ------------------------------------------------------- one trial's own config
def test_trial_whose_config_is_invalid_fails_once_and_the_sweep_goes_on(tmp_path):
    # d_model=16: n_heads=3 cannot divide it; the seed draws 3 for trial 1 only
    run_cli(tmp_path, *SWEEP, "hydra.sweeper.params=null", "model.attention.n_heads=choice(2, 3)",
            "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=1", "hydra.sweeper.n_trials=3")
    trials = study_trials(tmp_path)
    bad = [t for t in trials if t.params["model.attention.n_heads"] == 3]
    assert bad and len(trials) == 3  # exactly the total: a config failure counts, is not re-enqueued
    assert all(t.state == TrialState.FAIL for t in bad)
    assert all(t.user_attrs["fail_reason"].startswith("invalid trial config: ") for t in bad)
    assert all("n_heads" in t.user_attrs["fail_reason"] for t in bad)
    assert not any(t.system_attrs.get("failed_trial") is not None for t in trials)
    assert all(t.state == TrialState.COMPLETE for t in trials if t not in bad)
    parent, kids, everything = study_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert sorted(int(k.data.tags["optuna.trial_number"]) for k in kids) == \
        sorted(t.number for t in trials if t not in bad)  # an invalid trial never started a run
    assert [r for r in everything if r.info.status == "RUNNING"] == []


# ------------------------------------------------------- the stored study's space
def test_resuming_with_a_changed_space_is_refused_and_nothing_is_left_running(tmp_path):
    original = "model.attention.n_heads=choice(2, 4)"
    run_cli(tmp_path, *SWEEP, "hydra.sweeper.params=null", original, "hydra.sweeper.n_trials=1")
    message = refused(tmp_path, "model.attention.n_heads=choice(2, 4, 8)", "hydra.sweeper.n_trials=2")
    assert message.startswith("study 'adaptive_attention' has a different space for model.attention.n_heads: "
                              "it was searched over CategoricalDistribution(choices=(2, 4)), now "
                              "CategoricalDistribution(choices=(2, 4, 8)); use a new hydra.sweeper.study_name")
    message = refused(tmp_path, "model.attention.n_heads=range(2, 5)", "hydra.sweeper.n_trials=2")
    assert "different space for model.attention.n_heads" in message  # a changed type too
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # refused before any trial
    _, _, everything = study_runs(tmp_path)
    assert [r.info.status for r in everything if r.data.tags.get("role") == "study"] == ["FINISHED"]

    run_cli(tmp_path, *SWEEP, "hydra.sweeper.params=null", original, "hydra.sweeper.n_trials=2")  # no orphan to wait on
    assert [t.state for t in study_trials(tmp_path)] == [TrialState.COMPLETE] * 2


def test_changed_space_check_names_the_first_differing_parameter():
    from anyq.sweeping.engine import check_space_matches

    study = optuna.create_study()
    study.ask({"a": CategoricalDistribution([1, 2]), "b": FloatDistribution(0, 1)})
    check_space_matches(study, {"a": CategoricalDistribution([1, 2]), "b": FloatDistribution(0, 1),
                                "c": IntDistribution(0, 3)})  # a new parameter is fine
    with pytest.raises(SpaceError, match="different space for b"):
        check_space_matches(study, {"a": CategoricalDistribution([1, 2]), "b": FloatDistribution(0, 2)})


# ---------------------------------------------------------------------- signals
# (a single run's: tests/test_signals.py)
def epoch_done(root: Path) -> bool:
    """A checkpoint exists (an epoch is done; with 500 epochs, fit goes on). Not read from
    MLflow's database: opening it while the job creates it races its migrations."""
    return any(root.rglob("*.ckpt"))


def test_sigterm_during_a_sweep_trial_exits_143_with_the_trial_failed_and_re_enqueued(tmp_path):
    proc = start_sweep(tmp_path, "trainer.max_epochs=500", "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=null")
    wait_for(lambda: epoch_done(tmp_path), proc, TIMEOUT, "an epoch")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, (tmp_path / "sweep.log").read_text()[-3000:]
    trials = study_trials(tmp_path)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.WAITING) == 1
    failed = next(t for t in trials if t.state == TrialState.FAIL)
    assert failed.user_attrs["fail_reason"] == "sweep interrupted"
    parent, kids, everything = study_runs(tmp_path)
    assert parent.info.status == "KILLED"
    assert [r for r in everything if r.info.status == "RUNNING"] == []


def test_sigterm_during_a_parallel_sweep_exits_143_with_nothing_running(tmp_path):
    proc = start_sweep(tmp_path, "trainer.max_epochs=500", "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner=null",
                       "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
                       "trainer.num_threads=1", "tracking.compare_to_baseline=false")
    wait_for(lambda: epoch_done(tmp_path), proc, TIMEOUT, "an epoch")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, (tmp_path / "sweep.log").read_text()[-3000:]
    trials = study_trials(tmp_path)
    assert TrialState.RUNNING not in {t.state for t in trials}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["fail_reason"] == "sweep interrupted" for t in failed)
    parent, kids, everything = study_runs(tmp_path)
    assert parent.info.status == "KILLED"
    running = {r.data.tags.get(TRIAL_NUMBER_TAG): r.data.tags for r in kids if r.info.status == "RUNNING"}
    assert running == {}, (tmp_path / "sweep.log").read_text()[-5000:]
