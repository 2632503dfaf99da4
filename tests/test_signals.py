"""A signal stops ``anyq-train`` at a safe point: the exit status is 128 + the signal number,
the runs it interrupted are closed KILLED, finished runs stay as they were, nothing is left
RUNNING. Every case drives a real ``anyq-train`` process and signals it once a state is seen."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from conftest import TINY
from scale_helpers import REPO, clean_env, wait_for

DEADLINE_S = 300
ANYQ_TRAIN = Path(sys.executable).with_name("anyq-train")  # the console script, as a user runs it
SINGLE = [*TINY, "model=adaptive_attention", "trainer.max_epochs=500", "tracking.experiment=sig",
          "tracking.compare_to_baseline=false", "tracking.log_model=false"]


def start(root: Path, *argv: str) -> subprocess.Popen:
    """``anyq-train`` in the background, its output in ``root/train.log``."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "train.log", "wb") as log:
        return subprocess.Popen([str(ANYQ_TRAIN), *argv, f"paths.root={root}"], env=clean_env(OMP_NUM_THREADS="1"),
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def log_tail(root: Path) -> str:
    return (root / "train.log").read_text()[-4000:]


def all_runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def checkpoints(root: Path) -> list[Path]:
    """The checkpoint folders written so far: one per run that has validated once (its run is open)."""
    return sorted({p.parent for p in root.rglob("*.ckpt")})


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_fit_stops_at_a_step_and_closes_the_run_killed(tmp_path, sig, status):
    proc = start(tmp_path, *SINGLE)
    wait_for(lambda: checkpoints(tmp_path), proc, DEADLINE_S, "a checkpoint")
    proc.send_signal(sig)
    assert proc.wait(timeout=DEADLINE_S) == status, log_tail(tmp_path)
    runs = all_runs(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"]
    assert runs[0].data.tags["error"] == f"Terminated: stopped by {signal.Signals(sig).name}"
    assert "test/crps" not in runs[0].data.metrics  # stopped after the fit: nothing was tested
    assert "Traceback" not in log_tail(tmp_path)
    assert log_tail(tmp_path).strip().splitlines()[-1] == (
        f"anyq-train: stopped by {signal.Signals(sig).name}: the runs it had open are closed KILLED; the same "
        "command continues (a study trains what it lacks; a single run: add resume=last)")


def test_sigterm_to_a_joblib_grid_kills_the_running_cells_at_once_and_keeps_the_finished_one(tmp_path):
    """The parent forwards its stop to joblib's workers; each worker's job stops at a step and
    closes its run KILLED itself (not left RUNNING for the next command to close FAILED), a
    cell still queued stops before it opens a run, and the parent closes the study KILLED
    once every cell has answered. Cells: one short, three long; two workers."""
    proc = start(tmp_path, "-m", "ablation=variants", *TINY, "hydra.sweeper.params.model=adaptive_attention",
                 "hydra.sweeper.params.seed=0", "trainer.max_steps=6,99999,99996,99993",
                 "trainer.val_check_interval=3", "trainer.early_stopping.enabled=false",  # long cells run until stopped
                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 "tracking.compare_to_baseline=false", "tracking.log_model=false", "tracking.experiment=grid",
                 "hydra.sweeper.study_name=grid", "hydra.sweep.subdir=cell${hydra.job.num}")

    def short_cell_finished_and_two_long_ones_validated() -> bool:
        if len(checkpoints(tmp_path)) < 3 or not (tmp_path / "mlruns" / "mlflow.db").is_file():
            return False
        return any(r.info.status == "FINISHED" for r in all_runs(tmp_path))

    wait_for(short_cell_finished_and_two_long_ones_validated, proc, DEADLINE_S,
             "one cell finished, two others training")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=DEADLINE_S) == 143, log_tail(tmp_path)
    runs = all_runs(tmp_path)
    parent = next(r for r in runs if r.data.tags.get("role") == "study")
    cells = {r.data.params["trainer.max_steps"]: r for r in runs
             if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id}
    assert {k: r.info.status for k, r in cells.items()} == \
        {"6": "FINISHED", "99999": "KILLED", "99996": "KILLED"}, log_tail(tmp_path)  # 99993: never opened
    assert {cells[k].data.tags["error"] for k in ("99999", "99996")} == {"Terminated: stopped by SIGTERM"}
    assert parent.info.status == "KILLED"
    assert parent.data.tags["error"] == "Terminated: stopped by SIGTERM"
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []


SECOND_SIGNAL = textwrap.dedent("""
    import os, signal, sys
    from anyq.interrupts import requested, stop_on_signals

    with stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)  # the first: only recorded
        print("asked", requested(), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # the second: the default action
        print("still alive", flush=True)
""")


def test_a_second_signal_ends_the_process_at_once():
    done = subprocess.run([sys.executable, "-c", SECOND_SIGNAL], capture_output=True, text=True,
                          env=clean_env(), cwd=REPO, timeout=120)
    assert done.stdout.split("\n")[0] == f"asked {int(signal.SIGTERM)}", done.stderr
    assert "still alive" not in done.stdout
    assert done.returncode == -signal.SIGTERM  # ended by the signal itself, not by an exit status


FIRST_SIGNAL_AT_A_SAFE_POINT = textwrap.dedent("""
    import os, signal
    from anyq.interrupts import on_request, requested, stop_if_requested, stop_on_signals

    heard = []
    with stop_on_signals():
        with on_request(lambda: heard.append(requested())):
            os.kill(os.getpid(), signal.SIGINT)
            print("work goes on", heard, flush=True)  # the handler raised nothing
            stop_if_requested()  # the safe point
            print("not reached", flush=True)
""")


def test_the_first_signal_is_only_recorded_and_stops_the_work_at_the_next_safe_point():
    done = subprocess.run([sys.executable, "-c", FIRST_SIGNAL_AT_A_SAFE_POINT], capture_output=True, text=True,
                          env=clean_env(), cwd=REPO, timeout=120)
    assert done.stdout.splitlines() == [f"work goes on [{int(signal.SIGINT)}]"], done.stderr
    assert done.returncode == 130  # Terminated: 128 + SIGINT


REPORT_STAGES = textwrap.dedent("""
    import os, signal
    from anyq.interrupts import stop_on_signals
    from anyq.reporting.study_progress import Stages

    with stop_on_signals(), Stages("report", 3) as stage:
        stage("reading runs")
        os.kill(os.getpid(), signal.SIGTERM)  # arrives during the first stage, which goes on
        print("first stage done", flush=True)
        stage("drawing figures")  # a safe point: the report stops here
        print("not reached", flush=True)
""")


def test_a_report_stops_at_its_next_stage():
    """``anyq-report`` runs its stages in a ``stop_on_signals`` block; a stage's start is a safe point."""
    done = subprocess.run([sys.executable, "-c", REPORT_STAGES], capture_output=True, text=True,
                          env=clean_env(), cwd=REPO, timeout=120)
    lines = done.stdout.splitlines()
    assert [line.split("  elapsed")[0] for line in lines] == ["report: stage 1/3: reading runs", "first stage done"], \
        done.stdout + done.stderr
    assert done.returncode == 143


def test_terminated_keeps_its_signal_and_exit_status_through_pickling():
    """A job's result crosses processes pickled (joblib, Ray, submitit)."""
    import pickle

    from anyq.errors import Terminated

    again = pickle.loads(pickle.dumps(Terminated(signal.SIGTERM)))
    assert (again.signum, again.code, str(again)) == (signal.SIGTERM, 143, "stopped by SIGTERM")


TRIAL_STOPPED_IN_ITS_BASELINE = textwrap.dedent("""
    import os, signal, sys
    from anyq.app import job, train

    real = job.compare_with_baseline

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C once the trial's run is finished, as its baseline trains
        return real(*args, **kwargs)

    job.compare_with_baseline = interrupted
    sys.argv = ["anyq-train", *sys.argv[1:]]
    train.cli()  # the console script's entry: its signal handling included
""")


def test_a_trial_stopped_while_its_baseline_trains_keeps_its_finished_run(tmp_path):
    """The signal stops the sweep (130) and its baseline (before or during its run, then KILLED),
    but the trial, whose own run finished, is COMPLETE and not trained again; the resumed sweep
    trains the baseline."""
    import optuna
    from optuna.trial import TrialState

    argv = ["-m", "sweep=adaptive_attention", "trainer.max_epochs=2", *TINY, "hydra.sweeper.params=null",
            "model.attention.n_heads=choice(1, 2)", "hydra.sweeper.pruner=null", "hydra.sweeper.n_trials=2",
            f"paths.root={tmp_path}"]
    done = subprocess.run([sys.executable, "-c", TRIAL_STOPPED_IN_ITS_BASELINE, *argv], capture_output=True,
                          text=True, env=clean_env(OMP_NUM_THREADS="1"), cwd=REPO, timeout=600)
    assert done.returncode == 130, done.stderr[-3000:]
    assert "stopped while training its baseline" in done.stdout + done.stderr
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    trials = optuna.load_study(study_name="adaptive_attention", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # not FAIL, no retry waiting
    runs = all_runs(tmp_path)
    assert "RUNNING" not in {r.info.status for r in runs}
    assert [r.info.status for r in runs if r.data.tags.get("variant") == "adaptive_attention"] == ["FINISHED"]
    assert not any(r.data.tags.get("variant") == "baseline_adaptive" and r.info.status == "FINISHED" for r in runs)

    again = subprocess.run([str(ANYQ_TRAIN), *argv], capture_output=True, text=True,
                           env=clean_env(OMP_NUM_THREADS="1"), cwd=REPO, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name="adaptive_attention", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert any(r.data.tags.get("variant") == "baseline_adaptive" and r.info.status == "FINISHED"
               for r in all_runs(tmp_path))
