"""Helpers shared by the launcher tests: free loopback ports, `anyq-train -m` as a subprocess,
and what a finished study left in Optuna and MLflow (local SQLite files under one root)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from anyq.sweeping.storage import STORAGE_ENV
from conftest import TINY

REPO = Path(__file__).resolve().parents[1]
SPACE = [
    "hydra.sweeper.params=null",
    "model.attention.adaptive_temp=interval(0.0, 2.0)",
    "model.attention.n_heads=choice(1, 2)",
    "hydra.sweeper.sampler.n_startup_trials=2",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This shell's environment without shared-study settings: each test owns its root."""
    env = {k: v for k, v in os.environ.items() if k not in (STORAGE_ENV, "MLFLOW_TRACKING_URI")}
    env.update(PYTHONWARNINGS="ignore", **extra)
    return env


def sweep_cmd(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "anyq.app.train", "-m", "sweep=adaptive_attention", *TINY, *SPACE,
            f"paths.root={root}", *extra]


def start_sweep(root: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "sweep.log", "wb")  # a file, not a pipe: a full pipe would block the sweep
    proc = subprocess.Popen(sweep_cmd(root, *extra), env=env or clean_env(), stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO)
    log.close()
    return proc


def study_trials(root: Path, name: str = "adaptive_attention") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root}/mlruns/optuna.db").get_trials()


def study_exists(root: Path, name: str = "adaptive_attention") -> bool:
    """Whether the sweep has created its study, read without writing: opening the storage with
    Optuna would create its tables, racing the sweep that is creating them."""
    path = root / "mlruns" / "optuna.db"
    if not path.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone() is not None
    except sqlite3.Error:  # no tables yet, or a writer holds the lock
        return False


def running_trials(root: Path, name: str = "adaptive_attention") -> list[optuna.trial.FrozenTrial]:
    """The study's RUNNING trials; none while the study does not exist yet."""
    if not study_exists(root, name):
        return []
    return [t for t in study_trials(root, name) if t.state == optuna.trial.TrialState.RUNNING]


def study_runs(root: Path, experiment: str = "adaptive_attention"):
    """(parent run, its child runs, every run of the experiment)."""
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    everything = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in everything if r.data.tags.get("role") == "study"]
    assert len(parents) == 1, [r.data.tags for r in parents]
    kids = [r for r in everything if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parents[0].info.run_id]
    return parents[0], kids, everything


def trial_finished_in_mlflow(run) -> bool:
    return run.info.status == "FINISHED" or (
        run.info.status == "KILLED" and run.data.tags.get("trial_state") == "PRUNED")


def wait_for(condition: Callable[[], Any], proc: Optional[subprocess.Popen], timeout_s: float, what: str,
             every_s: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something true, and return that; fail when
    ``proc`` (if given) ends first or ``timeout_s`` passes (the one place a test waits by sleeping)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}")
        time.sleep(every_s)
    raise AssertionError(f"no {what} within {timeout_s:.0f} s")
