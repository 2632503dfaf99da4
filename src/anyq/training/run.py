"""Fit one model and score it on the test split, or score a checkpoint; tracking is injected by the caller."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from anyq.data.datamodule import ForecastDataModule
from anyq.metrics.scorer import score
from anyq.reference.oracle import OracleForecaster
from anyq.training.builders import Dataset, build_datamodule, build_model, build_module, build_trainer
from anyq.training.checkpoints import RunHistory, check_fits, model_settings, read_checkpoint, recorded_history
from anyq.training.schema import Task


@dataclass
class TrainOutcome:
    metrics: dict[str, float]
    curves: dict[str, list[float]]
    forecasts: dict[str, np.ndarray]
    val_history: list[dict[str, float]]
    importance_history: np.ndarray
    best_checkpoint: Optional[str]
    train_seconds: float
    data_summary: dict[str, Any] = field(default_factory=dict)

    def best_validation(self) -> dict[str, float]:
        """Validation metrics of the check with the lowest val/crps (the sweep objective)."""
        return self.best_of(self.val_history)

    @staticmethod
    def best_of(history: list[dict[str, float]]) -> dict[str, float]:
        if not history:
            return {}
        return min(history, key=lambda m: m["val/crps"] if np.isfinite(m["val/crps"]) else np.inf)


def oracle_crps(dataset: Dataset, datamodule: ForecastDataModule, levels: torch.Tensor) -> Optional[float]:
    """CRPS of the true conditional quantiles on the test windows (synthetic data only)."""
    if dataset.synthetic is None:
        return None
    windows = datamodule.test_windows
    oracle = OracleForecaster(dataset.synthetic, datamodule.history_length, datamodule.horizon_length)
    forecast = oracle.predict(windows.series_idx, windows.origin, levels.numpy())
    target = datamodule.dataset("test").target_array()
    scores = score(
        torch.as_tensor(forecast, dtype=torch.float32),
        torch.as_tensor(target, dtype=torch.float32),
        levels,
        torch.as_tensor(windows.series_idx),
        dataset.panel.n_series,
    )
    return float(scores["crps"])


def resolve_resume(cfg: DictConfig) -> Optional[str]:
    """``resume=last`` picks the newest last.ckpt of the same variant under outputs/.

    Raises:
        FileNotFoundError: the named checkpoint, or any last.ckpt for ``resume=last``, is missing.
    """
    if not cfg.resume:
        return None
    if cfg.resume != "last":
        path = Path(cfg.resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint not found: {path}")
        return str(path)
    own = Path(cfg.paths.checkpoints) / "last.ckpt"
    if own.is_file():
        return str(own)
    candidates = sorted(
        Path(cfg.paths.root, "outputs").glob(f"**/*-{cfg.model.variant}/checkpoints/last.ckpt"),
        key=lambda p: p.stat().st_mtime,
    )
    if not candidates:
        raise FileNotFoundError(
            f"resume=last: no last.ckpt for variant {cfg.model.variant} under {cfg.paths.root}/outputs"
        )
    return str(candidates[-1])


def resume_checkpoint(cfg: DictConfig, dataset: Dataset) -> Optional[str]:
    """The checkpoint ``resume=`` names, once it is known to fit this run.

    Training on from a checkpoint needs the same model and the same data; scoring one
    (``task=test``) needs the same model, on any data.

    Raises:
        FileNotFoundError: no such checkpoint.
        CheckpointError: it does not fit the configured model or (training) data.
    """
    path = resolve_resume(cfg)
    if path is None:
        return None
    fingerprint = dataset.fingerprint if cfg.task == Task.train else None
    check_fits(path, read_checkpoint(path), build_model(cfg), model_settings(cfg), fingerprint)
    return path


def fit_and_test(
    cfg: DictConfig,
    dataset: Dataset,
    *,
    loggers: Sequence[Any] = (),
    callbacks: Sequence[Callback] = (),
    ckpt_path: Optional[str] = None,
) -> TrainOutcome:
    """``task=train``: fit (from ``ckpt_path`` when resuming), then score the best epoch on
    the test split. ``task=test``: score ``ckpt_path`` on the test split; nothing trains and
    no checkpoint is written."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    datamodule = build_datamodule(cfg.data, dataset, cfg.seed)
    module = build_module(cfg, dataset.panel.n_series)
    history = RunHistory(dataset.fingerprint, model_settings(cfg))
    train_seconds = 0.0
    if cfg.task == Task.test:
        assert ckpt_path is not None, "task=test needs a checkpoint (checked by check_config)"
        checkpoint = read_checkpoint(ckpt_path)
        module.load_state_dict(checkpoint["state_dict"])
        history.load_state_dict(recorded_history(checkpoint))  # the scored run's own record
        trainer = build_trainer(cfg, loggers=loggers, callbacks=[*callbacks, history], checkpoints=False)
        best: Optional[str] = ckpt_path
    else:
        trainer = build_trainer(cfg, loggers=loggers, callbacks=[*callbacks, history])
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        train_seconds = time.perf_counter() - started
        best = _best_checkpoint(trainer)
        if best is not None:  # score the best epoch, sampler state included
            module.load_state_dict(read_checkpoint(best)["state_dict"])
        if module.forecaster.conformal is not None:
            calibrate(module, datamodule, best)
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = dict(module.test_metrics)
    oracle = oracle_crps(dataset, datamodule, module.levels.cpu())
    if oracle is not None:
        metrics["test/oracle_crps"] = oracle
        metrics["test/oracle_ratio"] = metrics["test/crps"] / oracle
        if "test_conformal/crps" in metrics:
            metrics["test_conformal/oracle_ratio"] = metrics["test_conformal/crps"] / oracle
    if cfg.task == Task.train:
        metrics["train_seconds"] = train_seconds
        metrics["train_steps"] = float(trainer.global_step)
    best_val = TrainOutcome.best_of(history.val_history)
    if "step" in best_val:
        metrics["best_step"] = best_val["step"]
    return TrainOutcome(
        metrics=metrics,
        curves=module.test_curves,
        forecasts=module.stored_test_forecasts(),
        val_history=history.val_history,
        importance_history=history.importance_history,
        best_checkpoint=best,
        train_seconds=train_seconds,
        data_summary=datamodule.summary(),
    )


def calibrate(module: Any, datamodule: ForecastDataModule, checkpoint: Optional[str]) -> None:
    """Fit the conformal offsets on the validation windows and write them into the tested
    checkpoint, so that the served model (logged from it) applies the same calibration."""
    module.fit_conformal(datamodule.val_dataloader())
    if checkpoint is None:
        return
    saved = read_checkpoint(checkpoint)
    prefix = "forecaster.conformal."
    for name, value in module.forecaster.conformal.state_dict().items():
        saved["state_dict"][prefix + name] = value.detach().cpu()
    torch.save(saved, checkpoint)


def _best_checkpoint(trainer: pl.Trainer) -> Optional[str]:
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
            return callback.best_model_path
    return None
