"""The metric names the setup guide and the docs promise exist under exactly those names.

A user told to watch ``train/loss`` searches MLflow and TensorBoard for ``train/loss``; a
name that Lightning renamed (``train/loss_epoch``) is a name the user never finds.
"""

from __future__ import annotations

import re
from pathlib import Path

from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from anyq.app.job import run_job

ROOT = Path(__file__).resolve().parents[1]
# The setup guide's "Monitoring" list (ADAPTIVE_ATTENTION_SETUP.md), word for word.
GUIDE_NAMES = {"train/loss", "val/loss", "val/crps", "val/coverage-0.9"}
NAME = re.compile(r"`((?:train|val|test|delta)/[A-Za-z0-9_.\-]+)`")


def documented_names() -> set[str]:
    """Every concrete metric name written in backticks in the README and docs/."""
    names: set[str] = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        names.update(NAME.findall(page.read_text()))
    return names


def test_docs_name_the_guide_metrics():
    assert GUIDE_NAMES <= documented_names()


def test_every_promised_name_exists_in_mlflow_and_tensorboard(compose_cfg, tmp_path):
    cfg = compose_cfg("tracking=mlflow_tensorboard", "tracking.log_model=false", "trainer.log_every_n_steps=1")
    summary = run_job(cfg)
    run_id = summary["run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    in_mlflow = set(client.get_run(run_id).data.metrics)
    names = documented_names() | GUIDE_NAMES
    missing = sorted(names - in_mlflow)
    assert not missing, f"promised but not in MLflow: {missing}"
    # per epoch, as the README says: one train/loss and one val/loss point per epoch
    for key in ("train/loss", "val/loss", "val/crps", "val/coverage-0.9"):
        assert len(client.get_metric_history(run_id, key)) == cfg.trainer.max_epochs, key

    (folder,) = (tmp_path / "tb_logs" / "anyq").glob(f"*/{run_id[:8]}")
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    curves = {n for n in names if n.startswith(("train/", "val/"))}
    assert not sorted(curves - scalars), f"promised but not in TensorBoard: {sorted(curves - scalars)}"
    assert len(acc.Scalars("train/loss")) == cfg.trainer.max_epochs
