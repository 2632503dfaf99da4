"""Every command takes the store where ``anyq-train`` writes it: the directory it runs in, or
``$ANYQ_ROOT`` (``conf/paths/default.yaml``'s ``paths.root``), never the checkout by default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from anyq.errors import closest
from conftest import TINY
from scale_helpers import clean_env

BIN = Path(sys.executable).parent


def command(name: str, *argv: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_commands_started_in_a_data_folder_read_the_runs_trained_there(tmp_path):
    """A researcher trains from their data's folder with the installed script: the readers
    started there show that run, not the checkout's store."""
    env = {k: v for k, v in clean_env(OMP_NUM_THREADS="1").items() if k != "ANYQ_ROOT"}
    base = command("anyq-train", *TINY, "model=baseline_adaptive", "tracking.log_model=false", cwd=tmp_path, env=env)
    assert base.returncode == 0, base.stderr[-3000:]
    # a baseline alone is nothing to compare yet: one line, without suggesting the name it was given
    early = command("anyq-report", "--experiment", "anyq", "--no-log", cwd=tmp_path, env=env)
    assert early.returncode == 2 and "nor any run trained outside a study" in early.stderr
    assert "did you mean" not in early.stderr

    model = command("anyq-train", *TINY, "model=nbeats_aq", "tracking.log_model=false", cwd=tmp_path, env=env)
    assert model.returncode == 0, model.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.variant = 'nbeats_aq'")
    assert len(runs) == 1
    compare = command("anyq-compare", "--last", "1", cwd=tmp_path, env=env)
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert f"MLflow store: sqlite:///{tmp_path}/mlruns/mlflow.db" in compare.stdout
    assert runs[0].info.run_id[:8] in compare.stdout
    # the experiment's report goes beside the store, under ./reports
    report = command("anyq-report", "--experiment", "anyq", "--no-log", cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "reports" / "anyq" / "index.html").is_file()


def test_the_closest_name_is_never_the_name_itself():
    assert closest("anyq", ["anyq", "anyq2"]) == "anyq2"
    assert closest("anyq", ["anyq"]) is None
