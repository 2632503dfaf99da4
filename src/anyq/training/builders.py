"""Turn a composed config into data, model and trainer objects (no tracking here)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import (
    Accelerator,
    CPUAccelerator,
    CUDAAccelerator,
    MPSAccelerator,
    XLAAccelerator,
)
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint

from anyq.data.calendar import CalendarSpec, spec_from_config
from anyq.data.datamodule import ForecastDataModule
from anyq.data.panel import Panel
from anyq.data.reader import read_long_frame
from anyq.data.splits import SplitRanges, split_by_dates, split_by_proportions
from anyq.data.synthetic import SyntheticData, generate_synthetic
from anyq.errors import ConfigError, closest
from anyq.model.forecaster import AnyQuantileForecaster, check_model_config, forecaster_from_config
from anyq.training.averaging import AveragedWeights
from anyq.training.checkpoints import BEST_FILENAME, BEST_STEP_FILENAME
from anyq.training.diagnostics import diagnostic_callbacks, tensorboard_logger
from anyq.training.epoch_progress import progress_callbacks, show_bar
from anyq.training.module import ForecastingModule
from anyq.training.schema import check_config


@dataclass(frozen=True)
class Dataset:
    """A loaded panel, its split, and (synthetic data only) the generator that knows the truth."""

    name: str
    panel: Panel
    splits: SplitRanges
    synthetic: Optional[SyntheticData]

    @property
    def fingerprint(self) -> str:
        return self.panel.fingerprint()


def load_dataset(data: DictConfig) -> Dataset:
    synthetic = None
    if data.source == "synthetic":
        synthetic = generate_synthetic(**OmegaConf.to_container(data.synthetic))
        panel = synthetic.panel
    else:
        panel = Panel.from_long(read_long_frame(Path(data.path)))
    split = data.split
    if split.kind == "dates":
        splits = split_by_dates(panel, split.train_end, split.val_end, split.test_end)
    else:
        splits = split_by_proportions(panel, tuple(split.proportions))
    return Dataset(name=data.name, panel=panel, splits=splits, synthetic=synthetic)


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


def validate_config(cfg: DictConfig, *, here: bool = True) -> None:
    """The one validation pass, before any data is read or run opened: every setting's range
    and the data settings (:func:`anyq.training.schema.check_config`), then the model's own
    checks (d_model divisible by n_heads, lengths divisible by the patch, ...: the same
    functions the networks' constructors run, without building them), the calendar, and the
    device. ``here=False`` (a job that will run on another machine) skips what only that
    machine can tell: whether the data file exists and the accelerator is there.

    Raises:
        ConfigError: one line naming the setting.
    """
    check_config(cfg, here=here)
    try:
        model = OmegaConf.to_container(cfg.model, resolve=True)
        assert isinstance(model, dict)
        check_model_config(model, cfg.data.history_length, cfg.data.horizon_length)
        spec_from_config(cfg.data)
    except ValueError as exc:
        raise ConfigError(str(exc), getattr(exc, "keys", ())) from None
    check_trainer_values(cfg.trainer)
    if here:
        check_device(cfg.trainer)


#: ``trainer.accelerator`` values and Lightning's accelerators behind them (``gpu``: CUDA or
#: Apple's MPS, as Lightning reads it; ``auto`` picks whatever is there and is not checked).
ACCELERATORS: dict[str, tuple[type[Accelerator], ...]] = {
    "cpu": (CPUAccelerator,), "gpu": (CUDAAccelerator, MPSAccelerator), "cuda": (CUDAAccelerator,),
    "mps": (MPSAccelerator,), "tpu": (XLAAccelerator,),
}


#: ``trainer.precision`` values Lightning 2 accepts (``Trainer(precision=…)``), aliases included.
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64",
              "transformer-engine", "transformer-engine-float16")


def check_devices(devices: Any) -> None:
    """``trainer.devices`` is what Lightning reads as devices: ``auto``, a count ``>= 1`` (or -1,
    all of them), or a non-empty list of device indices ``>= 0``. ConfigError."""
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        ok = len(devices) > 0 and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
    elif isinstance(devices, bool):
        ok = False
    elif isinstance(devices, int):
        ok = devices >= 1 or devices == -1
    else:
        ok = str(devices) == "auto"
    if not ok:
        raise ConfigError(f"trainer.devices={devices} must be auto, a count >= 1 (or -1: all), or a list of "
                          "device indices", ("trainer.devices",))


def check_trainer_values(t: DictConfig) -> None:
    """``trainer.devices`` and ``trainer.precision`` are values Lightning reads, on any machine. ConfigError."""
    check_devices(t.devices)
    if str(t.precision) not in PRECISIONS:
        near = closest(str(t.precision), PRECISIONS)
        hint = f"did you mean {near}? " if near else ""
        raise ConfigError(f"trainer.precision={t.precision!r} is not a precision Lightning knows ({hint}"
                          f"one of {', '.join(PRECISIONS[:6])})", ("trainer.precision",))


def check_device(t: DictConfig) -> None:
    """``trainer.accelerator`` is on this machine, with ``trainer.devices`` of it. ConfigError."""
    name = str(t.accelerator)
    if name == "auto":
        return
    if name not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator={name!r} is not one of auto, {', '.join(ACCELERATORS)}",
                          ("trainer.accelerator",))
    usable = [kind for kind in ACCELERATORS[name] if kind.is_available()]
    if not usable:
        raise ConfigError(f"trainer.accelerator={name}: this machine has no {name} that torch can use; "
                          "train on the CPU with trainer=cpu", ("trainer.accelerator",))
    if name == "cpu":
        return  # devices=N on the CPU is N processes, not N chips
    count = usable[0].auto_device_count()
    devices = t.devices
    wanted = len(devices) if OmegaConf.is_list(devices) else devices if isinstance(devices, int) else None
    if wanted is not None and wanted != -1 and not 1 <= wanted <= count:
        raise ConfigError(f"trainer.devices={devices}: this machine has {count} {name} device(s)",
                          ("trainer.devices",))


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
