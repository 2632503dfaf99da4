"""hydra-submitit-launcher through anyq's presets: the local executor runs a real sweep (no
SLURM needed), and the SLURM preset's keys reach the sbatch script. Skipped, with the
reason, when the launcher is not installed (``make env-scale-out`` installs it; CI does)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path
from typing import Optional

import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from scale_helpers import (clean_env, running_trials, start_sweep, study_runs, study_trials, sweep_cmd,
                           trial_finished_in_mlflow, wait_for)

pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                    reason="hydra-submitit-launcher is not installed: `make env-scale-out` installs it")
TIMEOUT = 420


@pytest.mark.integration
def test_local_submitit_sweep_runs_three_trials_as_jobs(tmp_path):
    proc = start_sweep(tmp_path, "hydra/launcher=anyq_submitit_local", "hydra.sweeper.n_jobs=2",
                       "hydra.sweeper.n_trials=3", "trainer.max_epochs=2", "trainer.num_threads=1",
                       "tracking.compare_to_baseline=false")
    try:
        assert proc.wait(timeout=TIMEOUT) == 0, (tmp_path / "sweep.log").read_text()[-4000:]
    finally:
        proc.kill()
    trials = study_trials(tmp_path)
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    parent, kids, everything = study_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert sorted(int(k.data.tags["optuna.trial_number"]) for k in kids) == [0, 1, 2]
    assert all(trial_finished_in_mlflow(k) for k in kids)
    assert [r for r in everything if r.info.status == "RUNNING"] == []
    # each trial was its own Submitit job: a job folder with its pickled result
    results = list((tmp_path / "multirun" / "adaptive_attention" / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 3


def test_slurm_preset_keys_reach_sbatch_and_a_failed_submission_keeps_the_trial(tmp_path):
    slurm = ["hydra/launcher=anyq_slurm", "hydra.launcher.partition=debug", "hydra.launcher.account=anyq",
             "hydra.sweeper.n_trials=1"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    if not shutil.which("srun", path=os.environ["PATH"]):  # no SLURM here: refused before any trial
        done = subprocess.run(sweep_cmd(tmp_path / "no-slurm", *slurm), env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert done.returncode == 2, done.stderr[-3000:]
        assert done.stderr.strip().splitlines() == [
            'anyq-train: error: AnyqSlurmLauncher: Could not detect "srun", are you indeed on a slurm cluster?']
    # stand-ins: srun only has to exist; sbatch records the script it is given, then refuses it
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text('#!/bin/sh\ncp "$1" "$ANYQ_SBATCH_CAPTURE"\n'
                                    'echo "sbatch: error: no SLURM here" >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    captured = tmp_path / "job.sbatch"
    done = subprocess.run(sweep_cmd(tmp_path, *slurm), env={**env, "ANYQ_SBATCH_CAPTURE": str(captured)},
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1, done.stderr[-3000:]
    script = captured.read_text()
    for line in ("#SBATCH --partition=debug", "#SBATCH --account=anyq", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --mem=8GB", "#SBATCH --time=120", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"):
        assert line in script.splitlines(), (line, script)
    # the launcher broke, not the trial: it is failed as lost and waits, same parameters, for a rerun
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"].startswith("launcher failed: ")
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[1]) == 0
    parent, kids, everything = study_runs(tmp_path)
    assert parent.info.status == "FAILED" and parent.data.tags["error"] == "FailedJobError: sbatch: error: no SLURM here"
    assert [r for r in everything if r.info.status == "RUNNING"] == []


@pytest.mark.integration
def test_killed_submitit_job_is_a_lost_worker_retried_once(tmp_path):
    epochs = 8
    proc = start_sweep(tmp_path, "hydra/launcher=anyq_submitit_local", "hydra.sweeper.n_trials=1",
                       f"trainer.max_epochs={epochs}", "trainer.num_threads=1", "hydra.sweeper.pruner=null",
                       "tracking.compare_to_baseline=false")

    def kill_the_job_mid_training() -> Optional[tuple[int]]:
        running = running_trials(tmp_path)
        pids = job_pids(tmp_path)
        if len(running) == 1 and 1 <= len(running[0].intermediate_values) <= epochs - 3 and len(pids) == 1:
            os.kill(pids[0], signal.SIGKILL)
            return (running[0].number,)  # a tuple: trial 0 is found too
        return None

    (victim,) = wait_for(kill_the_job_mid_training, proc, TIMEOUT, "the trial's job mid-training", every_s=0.3)
    try:
        assert proc.wait(timeout=TIMEOUT) == 0, (tmp_path / "sweep.log").read_text()[-4000:]
    finally:
        proc.kill()
    trials = {t.number: t for t in study_trials(tmp_path)}
    assert trials[victim].state == TrialState.FAIL
    assert trials[victim].user_attrs["fail_reason"].startswith("worker lost: Submitit job ended without a result: ")
    retries = [t for t in trials.values() if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim]
    assert len(retries) == 1 and retries[0].params == trials[victim].params
    assert retries[0].state == TrialState.COMPLETE and len(trials) == 2
    _, kids, everything = study_runs(tmp_path)
    assert sorted(k.info.status for k in kids) == ["FINISHED", "KILLED"]
    assert [r for r in everything if r.info.status == "RUNNING"] == []


def job_pids(root: Path) -> list[int]:
    """Processes of Submitit's local jobs for this sweep (their command names the job folder)."""
    out = subprocess.run(["pgrep", "-f", f"submitit.core._submit.*{root}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]
