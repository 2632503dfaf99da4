"""Structured configs: the typed schema behind every file in ``conf/``.

Hydra merges each YAML file onto these dataclasses, so a misspelled key or a value of the
wrong type in a file or an override fails at composition, before anything is trained.
Cross-field rules that a type cannot express live in :func:`check_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from anyq.model.config import (
    CONFORMAL_DEFAULT,
    MONOTONE_DEFAULT,
    MONOTONE_GRID_DEFAULT,
    AttentionConfig,
    BackboneConfig,
    SamplerConfig,
)


class ConfigError(ValueError):
    """An impossible configuration, reported in one line before any training."""


@dataclass
class SyntheticConfig:
    seed: int = 0
    size: int = 1
    n_series: int = 8
    start: str = "2015-01-01"
    years: int = 3
    gaps: bool = True


@dataclass
class SplitConfig:
    kind: str = "proportions"  # "proportions" or "dates"
    proportions: List[float] = field(default_factory=lambda: [0.667, 0.1665, 0.1665])
    train_end: Optional[str] = None
    val_end: Optional[str] = None
    test_end: Optional[str] = None


@dataclass
class CalendarConfig:
    """Known-future calendar inputs (anyq.data.calendar): hour of day, day of week, day of
    year and a public-holiday flag for every hour of a window."""

    enabled: bool = False
    holidays: str = "auto"  # auto | none | synthetic (the generator's own) | country (holidays package)
    country: Optional[str] = None  # one country for all series, e.g. "DE"
    countries: Dict[str, str] = field(default_factory=dict)  # per series id, overriding `country`
    subdivision: Optional[str] = None  # e.g. a state, passed to holidays.country_holidays
    timezone: Optional[str] = None  # timestamps are UTC, features in this zone; null: wall clock as given
    # the inputs the model takes, of hour, dow, doy, holiday; null: those the training range covers
    # (anyq.data.coverage), filled in before training so the logged config says which
    inputs: Optional[List[str]] = None


@dataclass
class DataConfig:
    name: str = "synthetic"
    source: str = "synthetic"  # "synthetic" or "file"
    path: Optional[str] = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    history_length: int = 168
    horizon_length: int = 48
    train_step: int = 4
    eval_step: int = 24
    origin_hour: int = 0
    max_history_gap: float = 0.25
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    train_batch_size: int = 256
    eval_batch_size: int = 512
    num_workers: int = 0


@dataclass
class ModelConfig:
    variant: str = MISSING
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    monotone: str = MONOTONE_DEFAULT  # "rearrange" (sorted grid, anyq.model.monotone) or "none"
    monotone_grid: int = MONOTONE_GRID_DEFAULT  # levels k / (K + 1) the rearrangement sorts over
    conformal: str = CONFORMAL_DEFAULT  # "per_level": split-conformal offsets fitted on validation (anyq.model.conformal)


@dataclass
class OptimConfig:
    lr: float = 5e-4
    warmup_updates: int = 200
    weight_decay: float = 0.0
    schedule: str = "inverse_sqrt"  # "inverse_sqrt" (NBEATS-AQ's), "cosine" or "constant" after warm-up
    min_lr_ratio: float = 0.0  # cosine: the lr at the last step, as a share of lr


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    patience: int = 3
    min_delta: float = 0.0


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    # Budget: training stops at max_steps optimiser steps or max_epochs epochs, whichever
    # comes first (-1 / null: no limit of that kind). With max_epochs null (a budget in
    # steps), validation runs every val_check_interval training batches (= steps unless
    # gradients are accumulated), which must divide the budget so the last step is
    # validated; with max_epochs set, at the end of every epoch.
    max_epochs: Optional[int] = 8
    max_steps: int = -1
    val_check_interval: Optional[int] = None
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    limit_test_batches: Any = 1.0
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    precision: str = "32-true"
    fast_dev_run: bool = False
    deterministic: bool = False
    enable_progress_bar: bool = True
    log_every_n_steps: int = 20
    num_threads: Optional[int] = None
    # EMA of the weights (anyq.training.averaging, Lightning's EMAWeightAveraging): validated,
    # checkpointed, tested and served weights are the average; null = off
    ema_decay: Optional[float] = None
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class EvaluationConfig:
    num_levels: int = 99  # test grid G = {1/(n+1), ..., n/(n+1)}: 0.01..0.99
    val_num_levels: int = 39  # per-epoch validation grid: 0.025..0.975, 2.5x cheaper than G
    coverage: List[float] = field(default_factory=lambda: [0.9, 0.95])
    store_forecasts: bool = True


@dataclass
class TrackingConfig:
    enabled: bool = True
    tracking_uri: Optional[str] = None  # None: sqlite store in ${paths.mlruns}
    experiment: str = "anyq"
    run_name: Optional[str] = None
    parent_run_id: Optional[str] = None
    compare_to_baseline: bool = True
    tensorboard: bool = False
    log_model: bool = True
    tags: Dict[str, str] = field(default_factory=dict)


@dataclass
class PathsConfig:
    root: str = "."
    mlruns: str = "${paths.root}/mlruns"
    output_dir: str = "${paths.root}/outputs/run"
    checkpoints: str = "${paths.output_dir}/checkpoints"


@dataclass
class TrialConfig:
    """Set by the sweep engine on each job so the job can report to its Optuna trial."""

    study_name: Optional[str] = None
    storage: Optional[str] = None
    number: Optional[int] = None


class Task(StrEnum):
    """What a job does; any other value fails at composition."""

    train = "train"  # fit (or resume fitting), then score the best epoch on the test split
    test = "test"  # score the checkpoint named by resume= on the test split; nothing trains


@dataclass
class ConfirmConfig:
    """``anyq-train confirm.study=<sweep>``: retrain a sweep's winner over seeds (anyq.app.confirm)."""

    study: Optional[str] = None  # the sweep's study name; None: an ordinary run
    seeds: int = 5  # seeds 0 .. seeds-1
    trial: Optional[int] = None  # None: the best trial (Pareto: best on the first objective)


@dataclass
class AppConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)
    seed: int = 0
    resume: Optional[str] = None  # "last" or a checkpoint path
    task: Task = Task.train  # train: fit, then test; test: only score the resume= checkpoint


#: The schema of each config group, as ``(group, name)``: the name a file's defaults list
#: starts with (``- model_schema``). ``(None, "app_schema")`` is the primary config's.
SCHEMAS: dict[tuple[str | None, str], type] = {
    (None, "app_schema"): AppConfig,
    ("data", "data_schema"): DataConfig,
    ("model", "model_schema"): ModelConfig,
    ("model/backbone", "backbone_schema"): BackboneConfig,
    ("model/sampler", "sampler_schema"): SamplerConfig,
    ("model/attention", "attention_schema"): AttentionConfig,
    ("optim", "optim_schema"): OptimConfig,
    ("trainer", "trainer_schema"): TrainerConfig,
    ("tracking", "tracking_schema"): TrackingConfig,
    ("paths", "paths_schema"): PathsConfig,
}


def register_configs() -> None:
    """Make the schema the base of ``conf/config.yaml`` and of each config group."""
    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)


_CHOICES = {
    "data.source": ("synthetic", "file"),
    "data.split.kind": ("proportions", "dates"),
    "data.calendar.holidays": ("auto", "none", "synthetic", "country"),
}


def _get(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def check_config(cfg: DictConfig) -> None:
    """Reject data settings no type can rule out (the model checks its own, see builders)."""
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    if cfg.data.source == "file" and not cfg.data.path:
        raise ConfigError("data.source=file needs data.path=<csv or parquet file>")
    if cfg.data.split.kind == "dates" and not (
        cfg.data.split.train_end and cfg.data.split.val_end and cfg.data.split.test_end
    ):
        raise ConfigError("data.split.kind=dates needs train_end, val_end and test_end")
    if cfg.task == Task.test and not cfg.resume:
        raise ConfigError("task=test scores a checkpoint: add resume=<path to .ckpt> or resume=last")
    for key in ("train_batch_size", "eval_batch_size", "history_length", "horizon_length"):
        if cfg.data[key] <= 0:
            raise ConfigError(f"data.{key}={cfg.data[key]} must be positive")
    check_budget(cfg.trainer)
    if cfg.trainer.ema_decay is not None and not 0.0 < cfg.trainer.ema_decay < 1.0:
        raise ConfigError(f"trainer.ema_decay={cfg.trainer.ema_decay} must be in (0, 1), or null for no averaging")
    if cfg.optim.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={cfg.optim.schedule!r} is not one of {', '.join(SCHEDULES)}")
    if not 0.0 <= cfg.optim.min_lr_ratio <= 1.0:
        raise ConfigError(f"optim.min_lr_ratio={cfg.optim.min_lr_ratio} must be in [0, 1]")


SCHEDULES = ("inverse_sqrt", "cosine", "constant")


def check_budget(t: DictConfig) -> None:
    """A step budget (``max_epochs`` null) needs ``max_steps`` and a validation interval that
    divides it, so the last step is validated and can be the one tested."""
    if t.fast_dev_run or t.max_epochs is not None:
        return
    if t.max_steps is None or t.max_steps <= 0:
        raise ConfigError("trainer.max_epochs=null (a budget in steps) needs trainer.max_steps > 0")
    interval = t.val_check_interval
    if interval is None or interval <= 0:
        raise ConfigError("trainer.max_epochs=null (a budget in steps) needs trainer.val_check_interval > 0")
    batches = t.max_steps * t.accumulate_grad_batches  # Lightning counts the interval in batches
    if batches % interval:
        raise ConfigError(
            f"trainer.max_steps={t.max_steps} x accumulate_grad_batches={t.accumulate_grad_batches} batches "
            f"is not a multiple of trainer.val_check_interval={interval}: the last steps would never be validated"
        )
