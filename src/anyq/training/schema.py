"""Structured configs: the typed schema behind every file in ``conf/``.

Hydra merges each YAML file onto these dataclasses, so a misspelled key or a value of the
wrong type in a file or an override fails at composition, before anything is trained.
Each numeric setting declares its range here (``ranged(default, ge=..)``, :mod:`anyq.settings`);
:func:`check_config` checks every declared range and the rules a type cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from anyq.errors import ConfigError, DataError, SettingError
from anyq.model.config import AttentionConfig, BackboneConfig, OutputConfig, SamplerConfig
from anyq.settings import check_settings, ranged


@dataclass
class SyntheticConfig:
    seed: int = ranged(0, ge=0)
    size: int = ranged(1, ge=1)
    n_series: int = ranged(8, ge=1)
    start: str = "2015-01-01"
    years: int = ranged(3, ge=1)
    gaps: bool = True


@dataclass
class SplitConfig:
    kind: str = "proportions"  # "proportions" or "dates"
    proportions: List[float] = ranged(factory=lambda: [0.667, 0.1665, 0.1665], gt=0, le=1)  # summing to <= 1
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
    # the history input's holiday hours: auto | keep | week_before (each by the same hour 168 h
    # earlier, recursively; targets, scores and the references keep the real values;
    # anyq.data.holiday_history). Reads the holidays above even with enabled false; week_before
    # needs a holiday calendar; auto: week_before where there is one, keep where there is none.
    holiday_history: str = "auto"


@dataclass
class DataConfig:
    name: str = "synthetic"
    source: str = "synthetic"  # "synthetic" or "file"
    path: Optional[str] = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    history_length: int = ranged(168, ge=1)
    horizon_length: int = ranged(48, ge=1)
    train_step: int = ranged(4, ge=1)  # hours between training windows
    eval_step: int = ranged(24, ge=1)  # hours between validation/test windows: whole days (origin_hour)
    origin_hour: int = ranged(0, ge=0, le=23)
    max_history_gap: float = ranged(0.25, ge=0, le=1)
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    train_batch_size: int = ranged(256, ge=1)
    eval_batch_size: int = ranged(512, ge=1)
    num_workers: int = ranged(0, ge=0)


@dataclass
class ModelConfig(OutputConfig):
    """``model``: the variant's name, its backbone, sampler and attention, and the forecaster's own
    settings (:class:`anyq.model.config.OutputConfig`)."""

    variant: str = MISSING
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)


@dataclass
class OptimConfig:
    lr: float = ranged(5e-4, gt=0)
    warmup_updates: int = ranged(200, ge=0)
    weight_decay: float = ranged(0.0, ge=0)
    schedule: str = "inverse_sqrt"  # "inverse_sqrt" (NBEATS-AQ's), "cosine" or "constant" after warm-up
    min_lr_ratio: float = ranged(0.0, ge=0, le=1)  # cosine: the lr at the last step, as a share of lr


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    patience: int = ranged(3, ge=1)
    min_delta: float = ranged(0.0, ge=0)


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    # Budget: training stops at max_steps optimiser steps or max_epochs epochs, whichever
    # comes first (-1 / null: no limit of that kind). With max_epochs null (a budget in
    # steps), validation runs every val_check_interval training batches (= steps unless
    # gradients are accumulated), which must divide the budget so the last step is
    # validated; with max_epochs set, at the end of every epoch.
    max_epochs: Optional[int] = ranged(8, ge=1)
    max_steps: int = ranged(-1, ge=1, also={-1: "no limit"})
    val_check_interval: Optional[int] = ranged(None, ge=1)
    # a share of the split's batches (float in [0, 1]) or a number of batches (int)
    limit_train_batches: Any = ranged(1.0, ge=0)
    limit_val_batches: Any = ranged(1.0, ge=0)
    limit_test_batches: Any = ranged(1.0, ge=0)
    gradient_clip_val: Optional[float] = ranged(1.0, ge=0)
    accumulate_grad_batches: int = ranged(1, ge=1)
    precision: str = "32-true"
    fast_dev_run: bool = False
    deterministic: bool = False
    enable_progress_bar: bool = True  # Lightning's bar on a terminal; piped output gets progress lines
    # plain progress lines (anyq.training.epoch_progress) instead of the bar, even on a terminal: for
    # jobs that run side by side (sweep trials), whose bars would overwrite each other
    progress_lines: bool = False
    progress_every_s: float = ranged(30.0, gt=0)  # wall seconds between progress lines inside an epoch
    log_every_n_steps: int = ranged(20, ge=1)
    num_threads: Optional[int] = ranged(None, ge=1)
    # EMA of the weights (anyq.training.averaging, Lightning's EMAWeightAveraging): validated,
    # checkpointed, tested and served weights are the average; null = off
    ema_decay: Optional[float] = ranged(None, gt=0, lt=1)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class EvaluationConfig:
    num_levels: int = ranged(99, ge=1)  # test grid G = {1/(n+1), ..., n/(n+1)}: 0.01..0.99
    val_num_levels: int = ranged(39, ge=1)  # per-epoch validation grid: 0.025..0.975, 2.5x cheaper than G
    # central intervals scored; each one's bounds must lie within both grids
    coverage: List[float] = ranged(factory=lambda: [0.9, 0.95], gt=0, lt=1)
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
    number: Optional[int] = ranged(None, ge=0)


class Task(StrEnum):
    """What a job does; any other value fails at composition."""

    train = "train"  # fit (or resume fitting), then score the best epoch on the test split
    test = "test"  # score the checkpoint named by resume= on the test split; nothing trains


@dataclass
class ConfirmConfig:
    """``anyq-confirm <sweep>``, or ``anyq-train confirm.study=<sweep>``: retrain a sweep's winner
    over seeds (anyq.app.confirm_study)."""

    study: Optional[str] = None  # the sweep's study name; None: an ordinary run
    seeds: int = ranged(5, ge=1)  # seeds 0 .. seeds-1
    trial: Optional[int] = ranged(None, ge=0)  # None: the best trial (Pareto: best on the first objective)


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
    seed: int = ranged(0, ge=0, le=2**32 - 1)  # numpy's and Lightning's seed range
    resume: Optional[str] = None  # "last" or a checkpoint path
    task: Task = Task.train  # train: fit, then test; test: only score the resume= checkpoint


#: The schema of each config group, as ``(group, name)``: a file of the group starts its
#: defaults list with ``- /<name>@_here_`` (``- /model_schema@_here_``: the schema merged at
#: the file's own package). ``(None, "app_schema")`` is the primary config's.
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
    """Make the schema the base of ``conf/config.yaml`` and of each config group.

    Every schema is stored at the root of Hydra's config store, not in its group: a node
    stored in a group is one of the group's options, which Hydra would list (``model:
    …, model_schema, …``) and let ``model=model_schema`` select.
    """
    store = ConfigStore.instance()
    for (_group, name), node in SCHEMAS.items():
        store.store(name=name, node=node)


_CHOICES = {
    "data.source": ("synthetic", "file"),
    "data.split.kind": ("proportions", "dates"),
    "data.calendar.holidays": ("auto", "none", "synthetic", "country"),
    "data.calendar.holiday_history": ("auto", "keep", "week_before"),
}


def _get(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def check_config(cfg: DictConfig, *, here: bool = True) -> None:
    """Every setting no type can rule out, before any data is read or run opened: the declared
    range of each numeric setting (:func:`anyq.settings.check_settings`: NaN and inf never
    pass), the choices, the data source and its file, the split (dates that parse and
    increase, or shares), the window grid, the budget and the evaluation grids. The model's
    cross-field rules and the device are checked beside it (:func:`anyq.training.validation.validate_config`).
    ``here=False``: the job runs on another machine, whose files this one cannot see.

    Raises:
        ConfigError: one line naming the setting (``keys``: the settings it names).
    """
    try:
        check_settings(AppConfig, cfg)
    except SettingError as exc:
        raise ConfigError(str(exc), exc.keys) from None
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}", (key,))
    check_data(cfg.data, here=here)
    if cfg.task == Task.test and not cfg.resume:
        raise ConfigError("task=test scores a checkpoint: add resume=<path to .ckpt> or resume=last", ("resume",))
    check_budget(cfg.trainer)
    check_evaluation(cfg.evaluation)
    if cfg.optim.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={cfg.optim.schedule!r} is not one of {', '.join(SCHEDULES)}",
                          ("optim.schedule",))


def check_data(data: DictConfig, *, here: bool = True) -> None:
    """The data source, its file (``here``: on this machine), the split and the window grid
    (``data.*``); ConfigError."""
    from anyq.data.splits import check_proportions, inclusive_end  # pandas: loaded once a config is checked

    if data.source == "file":
        if not data.path:
            raise ConfigError("data.source=file needs data.path=<csv or parquet file>", ("data.path",))
        if here and not Path(data.path).is_file():
            raise ConfigError(f"data.path={data.path}: data file not found", ("data.path",))
    split = data.split
    if split.kind == "dates" and not (split.train_end and split.val_end and split.test_end):
        raise ConfigError("data.split.kind=dates needs train_end, val_end and test_end", ("data.split",))
    if split.kind == "dates":
        ends = {}
        for name in ("train_end", "val_end", "test_end"):
            try:
                ends[name] = inclusive_end(str(split[name]))
            except DataError as exc:
                raise ConfigError(f"data.split.{name}={split[name]}: {exc}", (f"data.split.{name}",)) from None
        names = list(ends)
        for before, after in zip(names, names[1:]):
            if not ends[before] < ends[after]:
                raise ConfigError(f"data.split.{after}={split[after]} must come after "
                                  f"data.split.{before}={split[before]}", (f"data.split.{before}", f"data.split.{after}"))
    else:
        dates = [f"data.split.{name}={split[name]}" for name in ("train_end", "val_end", "test_end")
                 if split[name]]
        if dates:  # a date the proportions split would silently ignore
            raise ConfigError(f"{', '.join(dates)}: split dates are read only with data.split.kind=dates "
                              f"(now {split.kind}, which splits by data.split.proportions); add data.split.kind=dates",
                              ("data.split.kind", *(d.split("=")[0] for d in dates)))
        try:
            check_proportions(list(split.proportions))
        except DataError as exc:
            raise ConfigError(f"data.split.proportions: {exc}", ("data.split.proportions",)) from None
    if data.source == "synthetic":
        try:
            inclusive_end(str(data.synthetic.start))
        except DataError as exc:
            raise ConfigError(f"data.synthetic.start={data.synthetic.start}: {exc}", ("data.synthetic.start",)) from None
    if data.eval_step % 24:  # validation and test windows are issued at origin_hour every day
        raise ConfigError(f"data.eval_step={data.eval_step} must be a multiple of 24: validation and test "
                          f"windows are all issued at data.origin_hour={data.origin_hour}", ("data.eval_step",))


def check_evaluation(evaluation: DictConfig) -> None:
    """Each coverage interval's bounds lie on or between levels of both evaluation grids
    (:func:`anyq.metrics.levels.evaluation_grid`: ``i / (n + 1)``, ``i = 1..n``, the span
    :func:`~anyq.metrics.levels.level_bracket` reads), checked without torch; ConfigError."""
    tol = 1e-6  # level_bracket's
    for key in ("num_levels", "val_num_levels"):
        n = int(evaluation[key])
        low, high = 1 / (n + 1), n / (n + 1)
        for p in evaluation.coverage:
            for level in ((1.0 - p) / 2.0, (1.0 + p) / 2.0):
                if not low - tol <= level <= high + tol:
                    raise ConfigError(
                        f"evaluation.coverage={p} needs level {level:.6g}, outside the grid of "
                        f"evaluation.{key}={evaluation[key]} ({low:.6g}..{high:.6g})",
                        ("evaluation.coverage", f"evaluation.{key}"))


SCHEDULES = ("inverse_sqrt", "cosine", "constant")


def check_budget(t: DictConfig) -> None:
    """A step budget (``max_epochs`` null) needs ``max_steps`` and a validation interval that
    divides it, so the last step is validated and can be the one tested."""
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = t[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and value > 1):
            raise ConfigError(f"trainer.{key}={value} must be a share of the batches (a float in [0, 1]) "
                              "or a number of batches (an int)", (f"trainer.{key}",))
    if t.fast_dev_run or t.max_epochs is not None:
        return
    if t.max_steps is None or t.max_steps <= 0:
        raise ConfigError("trainer.max_epochs=null (a budget in steps) needs trainer.max_steps > 0",
                          ("trainer.max_epochs", "trainer.max_steps"))
    interval = t.val_check_interval
    if interval is None or interval <= 0:
        raise ConfigError("trainer.max_epochs=null (a budget in steps) needs trainer.val_check_interval > 0",
                          ("trainer.max_epochs", "trainer.val_check_interval"))
    batches = t.max_steps * t.accumulate_grad_batches  # Lightning counts the interval in batches
    if batches % interval:
        fits = max(d for d in range(1, min(interval, batches) + 1) if batches % d == 0)
        raise ConfigError(
            f"trainer.max_steps={t.max_steps} x accumulate_grad_batches={t.accumulate_grad_batches} batches "
            f"is not a multiple of trainer.val_check_interval={interval}: the last steps would never be validated "
            f"(trainer.val_check_interval={fits} fits)",
            ("trainer.max_steps", "trainer.accumulate_grad_batches", "trainer.val_check_interval"),
        )
