"""hydra-submitit-launcher through anyq's presets: the local executor runs a real sweep (no
SLURM needed), and the SLURM preset's keys reach the sbatch script. Skipped, with the
reason, when the launcher is not installed (``make env-scale-out`` installs it; CI does)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from scale_helpers import clean_env, start_sweep, study_runs, study_trials, sweep_cmd, trial_finished_in_mlflow

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
    fake = tmp_path / "bin" / "sbatch"  # records the script it is given, then refuses it
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\ncp "$1" "$ANYQ_SBATCH_CAPTURE"\necho "sbatch: error: no SLURM here" >&2\nexit 1\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    captured = tmp_path / "job.sbatch"
    env = clean_env(ANYQ_SBATCH_CAPTURE=str(captured), PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(sweep_cmd(tmp_path, "hydra/launcher=anyq_slurm", "hydra.launcher.partition=debug",
                                    "hydra.launcher.account=anyq", "hydra.sweeper.n_trials=1"),
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1, done.stderr[-3000:]
    script = captured.read_text()
    for line in ("#SBATCH --partition=debug", "#SBATCH --account=anyq", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --mem=8GB", "#SBATCH --time=120", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1"):
        assert line in script.splitlines(), (line, script)
    # the launcher broke, not the trial: it is failed as lost and waits, same parameters, for a rerun
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"].startswith("launcher failed: ")
    assert trials[1].system_attrs["failed_trial"] == 0
    parent, kids, everything = study_runs(tmp_path)
    assert parent.info.status == "KILLED"
    assert [r for r in everything if r.info.status == "RUNNING"] == []
