"""Fit one model and score it on the test split, or score a checkpoint; tracking is injected by the caller.

:func:`prepare` builds the run (seeded data and model) and refuses, before anything trains or
is recorded, a ``resume=`` checkpoint that does not fit it; :func:`fit_and_test` runs it and
returns everything the run produced as one :class:`TrainOutcome`. Histories and test scores
are kept by callbacks (:class:`~anyq.training.checkpoints.RunHistory`,
:class:`~anyq.training.evaluation.TestScores`); Lightning loads the checkpoint a test scores
(``ckpt_path="best"`` after a fit).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from anyq.data.calendar import INPUTS, spec_from_config
from anyq.data.coverage import calendar_coverage, covered_inputs
from anyq.data.datamodule import ForecastDataModule
from anyq.data.panel import Panel
from anyq.data.windows import make_windows
from anyq.interrupts import stop_if_requested
from anyq.metrics.levels import evaluation_grid
from anyq.metrics.scorer import score
from anyq.reference.oracle import OracleForecaster
from anyq.reference.seasonal_naive import SeasonalNaiveForecaster
from anyq.training.builders import Dataset, build_datamodule, build_module, build_trainer
from anyq.training.checkpoints import (
    CALENDAR_INPUTS_SETTING,
    RunHistory,
    check_fits,
    model_settings,
    own_checkpoint_folder,
    read_checkpoint,
    recorded_history,
)
from anyq.training.evaluation import TestScores
from anyq.training.module import ForecastingModule
from anyq.training.schema import Task
from anyq.training.stopping import StopOnRequest, lightning_stopped

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    """What one run produced: test ``metrics`` (``test/*``, ``test_conformal/*``, ``test_online/*``, oracle ratios,
    ``train_seconds``, ``train_steps``, ``best_step``), the test ``curves``, the test
    ``forecasts`` (:attr:`TestScores.forecasts`), the validation history per check, the sampler's
    importance per check ``[checks, bins]``, and the checkpoint that was tested."""

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


@dataclass
class RunPlan:
    """A run ready to go: its config, data, seeded datamodule and module, and the checkpoint
    it resumes from (``task=train``) or scores (``task=test``), already known to fit."""

    cfg: DictConfig
    dataset: Dataset
    datamodule: ForecastDataModule
    module: ForecastingModule
    ckpt_path: Optional[str]


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


#: run tags of the calendar decision: the inputs taken, and each one left out with its reason
CALENDAR_INPUTS_TAG = "calendar.inputs"
CALENDAR_DROPPED_TAG = "calendar.dropped"
#: what ``data.calendar.holiday_history`` came to (``auto`` resolved: keep | week_before)
HOLIDAY_HISTORY_TAG = "calendar.holiday_history"


def settle_calendar(cfg: DictConfig, dataset: Dataset) -> DictConfig:
    """``cfg`` with ``data.calendar.inputs`` filled in and the calendar tags set
    (:data:`CALENDAR_INPUTS_TAG`, :data:`CALENDAR_DROPPED_TAG`, :data:`HOLIDAY_HISTORY_TAG` in
    ``tracking.tags``); ``cfg`` itself unchanged. Without calendar inputs only the holiday
    history's tag is set (the history rule reads holidays with the inputs off).

    The inputs are, first found: the ones ``data.calendar.inputs`` names; the ones the
    ``resume=`` checkpoint's model takes (all four for a checkpoint written before inputs could
    be left out), so a scored or resumed model gets the inputs it was trained with; else the
    ones the training range covers (:mod:`anyq.data.coverage`). One log line says which and why.

    Raises:
        FileNotFoundError: ``resume=`` names no checkpoint.
        CheckpointError: that file is not a checkpoint.
    """
    spec = spec_from_config(cfg.data)
    if not cfg.data.calendar.enabled:
        out = copy.deepcopy(cfg)
        with open_dict(out):
            out.tracking.tags[HOLIDAY_HISTORY_TAG] = spec.holiday_history if spec is not None else "keep"
        return out
    assert spec is not None
    windows = make_windows(dataset.panel, dataset.splits.train, cfg.data.history_length, cfg.data.horizon_length,
                           step=cfg.data.train_step, max_history_gap=cfg.data.max_history_gap)
    coverage = calendar_coverage(spec, dataset.panel, windows)
    if cfg.data.calendar.get("inputs") is not None:
        inputs, why = spec.inputs, "as data.calendar.inputs sets"
    elif (recorded := _checkpoint_inputs(cfg)) is not None:
        inputs, why = recorded, "as the resume= checkpoint's model takes"
    else:
        inputs, why = covered_inputs(coverage), "those the training range covers"
    dropped = {name: coverage[name].reason for name in INPUTS if name not in inputs}
    uncovered = [f"{name} ({coverage[name].reason})" for name in inputs if not coverage[name].covered]
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.data.calendar.inputs = list(inputs)
        out.tracking.tags[CALENDAR_INPUTS_TAG] = ",".join(inputs) or "none"
        out.tracking.tags[HOLIDAY_HISTORY_TAG] = spec.holiday_history
        if dropped:
            out.tracking.tags[CALENDAR_DROPPED_TAG] = "; ".join(f"{k}: {v}" for k, v in dropped.items())
    log.info("calendar inputs: %s, %s%s%s; holiday history: %s", ",".join(inputs) or "none", why,
             "".join(f"; {name} left out: {reason}" for name, reason in dropped.items()),
             f"; taken although not covered: {', '.join(uncovered)}" if uncovered else "", spec.holiday_history)
    return out


def _checkpoint_inputs(cfg: DictConfig) -> Optional[tuple[str, ...]]:
    path = resolve_resume(cfg)
    if path is None:
        return None
    settings = recorded_history(read_checkpoint(path)).get("settings", {})
    recorded = settings.get(CALENDAR_INPUTS_SETTING)
    return tuple(recorded) if recorded is not None else INPUTS


def prepare(cfg: DictConfig, dataset: Dataset) -> RunPlan:
    """Seed, build the datamodule and the module, and check the ``resume=`` checkpoint against
    that module: training on needs the same model and the same data; scoring (``task=test``)
    needs the same model, on any data (a warning says when the data are not its training data). The calendar inputs are settled first when ``cfg`` does
    not name them (:func:`settle_calendar`; the plan's ``cfg`` names them).

    Raises:
        FileNotFoundError: no such checkpoint.
        CheckpointError: it does not fit the configured model or (training) data.
    """
    if cfg.data.calendar.enabled and cfg.data.calendar.get("inputs") is None:
        cfg = settle_calendar(cfg, dataset)
    path = resolve_resume(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    datamodule = build_datamodule(cfg.data, dataset, cfg.seed)
    module = build_module(cfg, dataset.panel.n_series)
    if path is not None:
        checkpoint, training = read_checkpoint(path), cfg.task == Task.train
        check_fits(path, checkpoint, module.forecaster, model_settings(cfg), dataset.fingerprint if training else None)
        trained_on = recorded_history(checkpoint).get("data_fingerprint")
        if not training and trained_on not in (None, dataset.fingerprint):
            log.warning("scoring %s on other data than it was trained on (data fingerprint %s; it was trained "
                        "on %s): the scores are this data's", path, dataset.fingerprint, trained_on)
    return RunPlan(cfg, dataset, datamodule, module, path)


def fit_and_test(plan: RunPlan, *, loggers: Sequence[Any] = (), callbacks: Sequence[Callback] = ()) -> TrainOutcome:
    """``task=train``: fit (from the plan's checkpoint when resuming), then score the best
    checkpoint on the test split (the last weights when none was written: fast dev run).
    ``task=test``: score the plan's checkpoint; nothing trains and no checkpoint is written.

    Raises:
        Terminated: a signal asked the process to stop (:mod:`anyq.interrupts`): the fit
            ended at a step boundary (:mod:`anyq.training.stopping`) and nothing was tested.
    """
    cfg, module, datamodule = plan.cfg, plan.module, plan.datamodule
    history = RunHistory(plan.dataset.fingerprint, model_settings(cfg))
    scores = TestScores(evaluation_grid(cfg.evaluation.num_levels), plan.dataset.panel.n_series,
                        tuple(cfg.evaluation.coverage), cfg.evaluation.store_forecasts)
    metrics: dict[str, float] = {}
    train_seconds = 0.0
    if cfg.task == Task.test:
        assert plan.ckpt_path is not None, "task=test needs a checkpoint (checked by check_config)"
        trainer = build_trainer(cfg, loggers=loggers, callbacks=[*callbacks, history, scores], checkpoints=False)
        with lightning_stopped():
            trainer.test(module, datamodule=datamodule, ckpt_path=plan.ckpt_path, verbose=False)
        best: Optional[str] = plan.ckpt_path
        val_history, importance = history.val_history, history.importance_history  # the scored run's own
    else:
        calibration = [ConformalCalibration()] if module.forecaster.conformal is not None else []
        trainer = build_trainer(cfg, loggers=loggers,
                                callbacks=[*callbacks, history, scores, *calibration, StopOnRequest()])
        # from the first checkpoint to the tested one
        with own_checkpoint_folder(cfg.paths.checkpoints), lightning_stopped():
            started = time.perf_counter()
            trainer.fit(module, datamodule=datamodule, ckpt_path=plan.ckpt_path)
            stop_if_requested()  # a fit ended by a signal: not tested, its run closed KILLED
            train_seconds = time.perf_counter() - started
            metrics.update({"train_seconds": train_seconds, "train_steps": float(trainer.global_step)})
            # the whole run's record: testing the best checkpoint restores that epoch's history
            val_history, importance = list(history.val_history), history.importance_history
            best = _best_checkpoint(trainer)
            trainer.test(module, datamodule=datamodule, ckpt_path="best" if best else None, verbose=False)
    metrics = {**scores.metrics, **oracle_ratios(plan, scores), **naive_ratios(plan, scores), **metrics}
    best_val = TrainOutcome.best_of(val_history)
    if "step" in best_val:
        metrics["best_step"] = best_val["step"]
    return TrainOutcome(
        metrics=metrics,
        curves=scores.curves,
        forecasts={**scores.forecasts, **window_labels(plan.dataset.panel)} if scores.forecasts else {},
        val_history=val_history,
        importance_history=importance,
        best_checkpoint=best,
        train_seconds=train_seconds,
        data_summary=datamodule.summary(),
    )


def window_labels(panel: Panel) -> dict[str, np.ndarray]:
    """What names the stored windows for a reader: ``series_ids [S]`` (``series_idx`` indexes
    it) and ``index_start`` (the timestamp of hour 0, ISO 8601; ``origin`` counts hours from it)."""
    return {"series_ids": np.asarray(panel.ids, dtype=str),
            "index_start": np.asarray(pd.Timestamp(panel.index[0]).isoformat())}


def oracle_ratios(plan: RunPlan, scores: TestScores) -> dict[str, float]:
    """``test/oracle_crps`` and the test CRPS over it (``test_conformal/``, ``test_online/`` too);
    {} on real data."""
    oracle = oracle_crps(plan.dataset, plan.datamodule, scores.levels)
    if oracle is None:
        return {}
    out = {"test/oracle_crps": oracle, "test/oracle_ratio": scores.metrics["test/crps"] / oracle}
    for family in ("test_conformal", "test_online"):
        if f"{family}/crps" in scores.metrics:
            out[f"{family}/oracle_ratio"] = scores.metrics[f"{family}/crps"] / oracle
    return out


def naive_ratios(plan: RunPlan, scores: TestScores) -> dict[str, float]:
    """``test/naive_crps`` (seasonal naive on the same test windows) and the test CRPS over it;
    {} when seasonal naive cannot forecast them (a horizon longer than its week)."""
    naive = naive_crps(plan.dataset, plan.datamodule, scores.levels)
    if naive is None or not naive > 0.0:
        return {}
    return {"test/naive_crps": naive, "test/naive_ratio": scores.metrics["test/crps"] / naive}


def naive_crps(dataset: Dataset, datamodule: ForecastDataModule, levels: torch.Tensor,
               split: str = "test") -> Optional[float]:
    """CRPS of seasonal naive (``anyq.reference.seasonal_naive``, fitted on the training range) on
    the windows of ``split`` (``"val"`` or ``"test"``), scored like the models; None when the
    horizon exceeds its season."""
    windows = datamodule.windows(split)
    season = SeasonalNaiveForecaster().season
    if datamodule.horizon_length > season or windows.origin.size == 0 or int(windows.origin.min()) < season:
        return None
    try:
        naive = SeasonalNaiveForecaster(season, datamodule.horizon_length).fit(dataset.panel, dataset.splits.train)
    except ValueError:  # a training range shorter than a season
        return None
    forecast = naive.predict(datamodule.filled_values, windows.series_idx, windows.origin, levels.numpy())
    target = datamodule.dataset(split).target_array()
    scores = score(torch.as_tensor(forecast, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32),
                   levels, torch.as_tensor(windows.series_idx), dataset.panel.n_series)
    return float(scores["crps"])


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


class ConformalCalibration(Callback):
    """After a fit, once the tested weights are loaded (the best checkpoint's): fit the conformal
    offsets on the validation windows and write them into that checkpoint, so that the served
    model (logged from it) applies the same calibration."""

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, ForecastingModule)
        with torch.inference_mode(False), torch.no_grad():  # offsets are kept weights, not test outputs
            pl_module.fit_conformal(trainer.datamodule.val_dataloader())  # type: ignore[attr-defined]
        if not trainer.ckpt_path:
            return
        saved = read_checkpoint(trainer.ckpt_path)
        prefix = "forecaster.conformal."
        for name, value in pl_module.forecaster.conformal.state_dict().items():  # type: ignore[union-attr]
            saved["state_dict"][prefix + name] = value.detach().cpu().clone()
        torch.save(saved, trainer.ckpt_path)


def _best_checkpoint(trainer: pl.Trainer) -> Optional[str]:
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
            return callback.best_model_path
    return None
