"""Turn a composed config into data, model and trainer objects (no tracking here)."""

from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint

from anyq.data.calendar import CalendarSpec, spec_from_config
from anyq.data.dataset import Dataset, load_dataset  # noqa: F401 - the pipeline's names, defined with the data
from anyq.data.datamodule import ForecastDataModule
from anyq.model.forecaster import AnyQuantileForecaster, forecaster_from_config
from anyq.training.averaging import AveragedWeights
from anyq.training.checkpoints import BEST_FILENAME, BEST_STEP_FILENAME
from anyq.training.diagnostics import diagnostic_callbacks, tensorboard_logger
from anyq.training.epoch_progress import progress_callbacks, show_bar
from anyq.training.module import ForecastingModule


def calendar_spec(data: DictConfig) -> Optional[CalendarSpec]:
    """The calendar the model takes: None when it takes no calendar input at all (calendar off,
    or every input left out); ``data.calendar.inputs`` null means all four (see
    :func:`anyq.training.run.settle_calendar`, which fills it in before training)."""
    spec = spec_from_config(data)
    return spec if spec is not None and spec.num_features else None


def build_datamodule(data: DictConfig, dataset: Dataset, seed: int) -> ForecastDataModule:
    """The windows of ``dataset`` with the calendar inputs the model takes and, with
    ``data.calendar.holiday_history`` other than ``keep``, the holiday hours the history input
    replaces (the series' whole holiday calendar, whichever inputs the model takes)."""
    panel = dataset.panel
    spec = calendar_spec(data)
    calendar = spec.panel_features(panel.ids, panel.index) if spec is not None else None
    holidays = spec_from_config(data)
    history_holidays = (holidays.holiday_flags(panel.ids, panel.index) > 0
                        if holidays is not None and holidays.cleans_history else None)
    return ForecastDataModule(panel, dataset.splits, data, seed=seed, calendar=calendar,
                              history_holidays=history_holidays)


def build_model(cfg: DictConfig) -> AnyQuantileForecaster:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    spec = calendar_spec(cfg.data)
    return forecaster_from_config(model, cfg.data.history_length, cfg.data.horizon_length,
                                  **(spec.network_inputs() if spec is not None else {}))


def step_budget(t: DictConfig) -> bool:
    """Whether the budget is in optimiser steps (``max_epochs`` null) rather than epochs."""
    return t.max_epochs is None


def build_module(cfg: DictConfig, num_series: int) -> ForecastingModule:
    optim = OmegaConf.to_container(cfg.optim, resolve=True)  # OptimConfig: the module's keywords
    assert isinstance(optim, dict)
    return ForecastingModule(
        build_model(cfg),
        num_series=num_series,
        **optim,
        num_levels=cfg.evaluation.num_levels,
        val_num_levels=cfg.evaluation.val_num_levels,
        coverage=tuple(cfg.evaluation.coverage),
    )


#: Keyword arguments of ``pl.Trainer``: every ``trainer.*`` key of that name is passed as is.
_TRAINER_ARGUMENTS = frozenset(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}


def trainer_settings(t: DictConfig) -> dict[str, Any]:
    """``pl.Trainer`` keywords from ``cfg.trainer``: the keys ``pl.Trainer`` takes by the same
    name, with the budget read as :func:`step_budget` says and the bar shown only on a terminal."""
    settings = {key: value for key, value in OmegaConf.to_container(t, resolve=True).items()
                if key in _TRAINER_ARGUMENTS}
    steps = step_budget(t)
    settings.update(
        max_epochs=-1 if steps else t.max_epochs,
        val_check_interval=t.val_check_interval if steps else None,
        check_val_every_n_epoch=None if steps else 1,
        enable_progress_bar=show_bar(t.enable_progress_bar, t.progress_lines),  # else EpochLines
    )
    return settings


def build_trainer(
    cfg: DictConfig,
    *,
    loggers: Sequence[Any] = (),
    callbacks: Sequence[Callback] = (),
    checkpoints: bool = True,
) -> pl.Trainer:
    """The Lightning trainer of ``cfg.trainer``; ``checkpoints=False`` writes none (scoring only)."""
    t = cfg.trainer
    # jobs print side by side (make run's two models, a sweep's trials): each line says whose it is
    label = (f"{cfg.model.variant}, trial {cfg.trial.number}" if cfg.trial.number is not None
             else str(cfg.model.variant))
    lines = progress_callbacks(t.enable_progress_bar, t.progress_lines, t.progress_every_s, label)
    all_callbacks: list[Callback] = [*callbacks, *lines]
    all_loggers = list(loggers)
    if cfg.tracking.tensorboard:  # a second logger beside MLflow: anyq.training.diagnostics
        all_loggers.append(tensorboard_logger(cfg, all_loggers))
        all_callbacks.extend(diagnostic_callbacks())
    if checkpoints and not t.fast_dev_run:
        all_callbacks.append(
            ModelCheckpoint(
                dirpath=cfg.paths.checkpoints,
                filename=BEST_STEP_FILENAME if step_budget(t) else BEST_FILENAME,  # no '=': pastes into resume=
                auto_insert_metric_name=False,
                monitor="val/crps",
                mode="min",
                save_last=True,
            )
        )
    if t.ema_decay is not None and checkpoints and not t.fast_dev_run:  # training only
        all_callbacks.append(AveragedWeights(t.ema_decay))
    if t.early_stopping.enabled:
        all_callbacks.append(
            EarlyStopping(
                monitor="val/crps",
                mode="min",
                patience=t.early_stopping.patience,
                min_delta=t.early_stopping.min_delta,
            )
        )
    return pl.Trainer(
        **trainer_settings(t),
        logger=all_loggers or False,
        callbacks=all_callbacks,
        default_root_dir=cfg.paths.output_dir,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
