"""A sweep killed while a trial trains its baseline: the rerun closes every run that trial's
job opened (its own run and the baseline's), and the trial's run says what Optuna says."""

from __future__ import annotations

import signal
import subprocess

import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from anyq.sweeping.engine import STALE_REASON
from anyq.tracking.trial_runs import OPENED_BY_TRIAL_TAG, TRIAL_NUMBER_TAG
from scale_helpers import REPO, clean_env, start_sweep, study_runs, study_trials, sweep_cmd, wait_for

DEADLINE_S = 300
SETTINGS = ["hydra.sweeper.n_trials=1", "trainer.max_epochs=15", "tracking.log_model=false",
            "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2"]


def running_baseline(root) -> str | None:
    try:
        client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
        experiment = client.get_experiment_by_name("adaptive_attention")
        if experiment is None:
            return None
        found = client.search_runs([experiment.experiment_id],
                                   filter_string="tags.role = 'baseline' and attributes.status = 'RUNNING'")
    except Exception:  # noqa: BLE001 - the store is being created
        return None
    return found[0].info.run_id if found else None


@pytest.mark.slow
def test_a_trial_killed_while_training_its_baseline_leaves_no_run_running_after_the_rerun(tmp_path):
    root = tmp_path / "study"
    sweep = start_sweep(root, *SETTINGS, env=clean_env(OMP_NUM_THREADS="1"))
    try:
        baseline = wait_for(lambda: running_baseline(root), sweep, DEADLINE_S, "the trial's baseline in training",
                            every_s=0.05)
        sweep.send_signal(signal.SIGKILL)
        assert sweep.wait(timeout=60) == -signal.SIGKILL
    finally:
        if sweep.poll() is None:
            sweep.kill()

    rerun = subprocess.run(sweep_cmd(root, *SETTINGS), env=clean_env(OMP_NUM_THREADS="1"), cwd=REPO,
                           capture_output=True, text=True, timeout=DEADLINE_S)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    trials = {t.number: t for t in study_trials(root)}
    assert trials[0].state == TrialState.FAIL
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[1]) == 0  # failed stale, retried
    assert trials[1].state == TrialState.COMPLETE and trials[1].params == trials[0].params

    parent, kids, everything = study_runs(root)
    by_id = {r.info.run_id: r for r in everything}
    dead_baseline = by_id[baseline]
    assert dead_baseline.data.tags[OPENED_BY_TRIAL_TAG] == f"{parent.info.run_id}/0"
    assert dead_baseline.info.status == "KILLED" and dead_baseline.data.tags["error"] == STALE_REASON
    by_number = {int(k.data.tags[TRIAL_NUMBER_TAG]): k for k in kids}
    assert sorted(by_number) == [0, 1]
    # trial 0's job had finished its own run; Optuna failed the trial and retried it: the run agrees
    assert by_number[0].info.status == "KILLED"
    assert by_number[0].data.tags["trial_state"] == "FAIL" and by_number[0].data.tags["error"] == STALE_REASON
    assert by_number[1].info.status == "FINISHED" and "trial_state" not in by_number[1].data.tags
    new_baseline = by_id[by_number[1].data.tags["baseline_run_id"]]
    assert new_baseline.info.status == "FINISHED"
    assert new_baseline.data.tags[OPENED_BY_TRIAL_TAG] == f"{parent.info.run_id}/1"
    assert parent.info.status == "FINISHED"
    assert [r.info.run_id for r in everything if r.info.status == "RUNNING"] == []
