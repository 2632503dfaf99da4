"""What a run is called, in MLflow and in TensorBoard alike."""

from __future__ import annotations

from omegaconf import DictConfig

from anyq.training.schema import Task


def run_name(cfg: DictConfig) -> str:
    """``tracking.run_name`` if set, else ``<variant>-seed<seed>``, with ``-test`` for a
    ``task=test`` run (it scores another run's checkpoint)."""
    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    return f"{cfg.model.variant}-seed{cfg.seed}{'-test' if cfg.task == Task.test else ''}"
