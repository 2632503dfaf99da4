"""One job of ``anyq-train`` (Hydra has composed ``cfg``): validate -> data -> fit/test (:mod:`anyq.training.run`)
-> record (:mod:`anyq.tracking.recording`) -> compare, after the run is closed (:mod:`anyq.tracking.baseline_comparison`).

The same function serves a single run, every trial of a sweep and every cell of an ablation.
"""

from __future__ import annotations

import logging
import shlex
from typing import Any, Optional

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback

from anyq.app.paths import report_hint
from anyq.errors import Terminated
from anyq.interrupts import stop_if_requested
from anyq.serving.publish import log_forecaster_model
from anyq.sweeping.pruning import TrialPruningCallback
from anyq.sweeping.storage import load_trial
from anyq.tracking.baseline import FROM_BASELINE_VARIANT, is_baseline
from anyq.tracking.baseline_comparison import BASELINE_ERROR_TAG, BASELINE_RUN_TAG, compare_with_baseline, own_baseline_lock
from anyq.tracking.recording import JobStore, log_outcome, mlflow_logger, open_job_run
from anyq.training.builders import Dataset, load_dataset
from anyq.training.checkpoints import override
from anyq.training.run import TrainOutcome, fit_and_test, prepare, settle_calendar
from anyq.training.schema import Task

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig, pruner: Optional[optuna.pruners.BasePruner] = None) -> dict[str, Any]:
    """Train (or score) the run ``cfg`` describes; returns the best ``val/*`` scores, the test
    metrics and ``run_id`` (None untracked), what the sweep engine reads. ``cfg`` is valid:
    :func:`anyq.app.train.run_job`, every job's way in, validated it before torch was imported.

    Raises:
        Terminated: a signal asked the process to stop (:mod:`anyq.interrupts`), checked
            before the data load, before the run opens and after the fit.
    """
    stop_if_requested()  # a job started after a stop was asked (a worker's next job) stops here
    pruner = pruner or configured_pruner()
    dataset = load_dataset(cfg.data)
    cfg = settle_calendar(cfg, dataset)  # before any signature: the inputs decide the numbers
    if not cfg.tracking.enabled:
        stop_if_requested()  # a safe point: the data are loaded
        outcome = fit_and_test(prepare(cfg, dataset), callbacks=trial_callbacks(cfg, pruner))
        announce_checkpoint(cfg, outcome)
        return job_summary(outcome, None)
    store = JobStore.from_config(cfg)
    with own_baseline_lock(cfg, dataset.fingerprint, store):  # a job beside a baseline waits for it
        return train_tracked(cfg, dataset, store, pruner, compare=cfg.tracking.compare_to_baseline)


def train_tracked(cfg: DictConfig, dataset: Dataset, store: JobStore,
                  pruner: Optional[optuna.pruners.BasePruner], compare: bool) -> dict[str, Any]:
    """Fit/test and record one run; once it is closed, compare it with its baseline (trained
    then when the store has none; a baseline, or a scored checkpoint, compares with nothing).

    Raises:
        Terminated: a signal asked the process to stop, before the run was opened (nothing
            recorded) or during it (closed KILLED, :func:`anyq.training.run.fit_and_test`), or
            while its baseline trained (not for a sweep's trial, whose finished run counts).
    """
    stop_if_requested()  # a safe point: the data are loaded, no run is open yet
    plan = prepare(cfg, dataset)  # a checkpoint that does not fit is refused before any run is opened
    with open_job_run(cfg, dataset, store, plan.ckpt_path, hydra_overrides(), run_status) as run:
        outcome = fit_and_test(plan, loggers=[mlflow_logger(cfg, store, run.run_id)],
                               callbacks=trial_callbacks(cfg, pruner))
        announce_checkpoint(cfg, outcome)
        log_outcome(run, cfg, outcome)
        if cfg.tracking.log_model:
            log_forecaster_model(run, cfg, outcome)
    if compare and cfg.task == Task.train and not is_baseline(cfg):
        try:
            compare_with_baseline(cfg, dataset.fingerprint, store, run.run_id, outcome.metrics,
                                  train=lambda base: train_tracked(base, dataset, store, None, compare=False))
        except Terminated:
            if cfg.trial.number is None:
                raise
            # a trial's own run is finished: its value stands (the sweep stops after telling it);
            # the baseline (not started, or closed KILLED) is trained by the resumed sweep
            log.warning("trial %s: stopped while training its baseline; the trial's run %s is finished and "
                        "counts, without its comparison", cfg.trial.number, run.run_id)
    return job_summary(outcome, run.run_id)


def hydra_overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # composed without a running Hydra app
        return []


def hydra_model_choice() -> Optional[str]:
    """The ``model`` option the job composed (None without a running Hydra app)."""
    try:
        return HydraConfig.get().runtime.choices.get("model")
    except ValueError:
        return None


def configured_pruner() -> Optional[optuna.pruners.BasePruner]:
    try:
        sweeper = HydraConfig.get().sweeper
    except ValueError:
        return None
    pruner = sweeper.get("pruner") if isinstance(sweeper, DictConfig) else None
    return instantiate(pruner) if pruner else None


def trial_callbacks(cfg: DictConfig, pruner: Optional[optuna.pruners.BasePruner]) -> list[Callback]:
    if cfg.trial.number is None or not cfg.trial.storage:
        return []
    trial = load_trial(cfg.trial.study_name, cfg.trial.storage, cfg.trial.number, pruner)
    if len(trial.study.directions) > 1:  # Optuna cannot prune multi-objective trials
        return []
    return [TrialPruningCallback(trial)]


def run_status(exc: BaseException) -> Optional[tuple[str, dict[str, str]]]:
    """A pruned trial is a KILLED run (a signal's is too: :func:`anyq.tracking.runs.exception_status`)."""
    if isinstance(exc, optuna.TrialPruned):
        return "KILLED", {"trial_state": "PRUNED"}
    return None


def job_summary(outcome: TrainOutcome, run_id: Optional[str]) -> dict[str, Any]:
    best = {k: v for k, v in outcome.best_validation().items() if k.startswith("val/")}
    return {**best, **outcome.metrics, "run_id": run_id}


#: Overrides that tie a job to its study, its trial or its own checkpoint, not to what it trains on:
#: a command that scores the job's checkpoint leaves them out.
_NOT_SCORING = ("trial.", "tracking.parent_run_id", "tracking.tags.", "confirm.", "hydra.", "hydra/")


#: The job's own model choice and settings, which give way when it trained another variant's
#: model: a baseline trained for its comparison (anyq.tracking.baseline.baseline_config).
_VARIANT_OWN = tuple(f"model{sep}{key}" for key in FROM_BASELINE_VARIANT for sep in "./")


def scoring_command(overrides: list[str], checkpoint: str, variant: Optional[str] = None) -> str:
    """The ``anyq-train`` command that scores ``checkpoint`` as its job was configured: the
    job's own ``overrides`` (Hydra's ``overrides.task``: data, model, recipe, ...) less those
    linking it to a study (:data:`_NOT_SCORING`), ``task`` and ``resume``; shell-quoted, pasteable.
    ``variant``: the checkpoint is that variant's model although the job composed another (its
    baseline): ``model=<variant>`` replaces the job's model choice (``model=``) and its variant,
    sampler and attention settings (:data:`_VARIANT_OWN`); the backbone's stay."""
    parser = OverridesParser.create()
    kept = []
    for text in overrides:
        parsed = parser.parse_override(text)
        key = parsed.key_or_group
        if key in ("task", "resume") or key.startswith(_NOT_SCORING):
            continue
        if variant is not None and (key == "model" or key.startswith(_VARIANT_OWN)):
            continue
        value = parsed.value()
        if isinstance(value, str) and parsed.input_line.count("=") == 1 and not parsed.is_add():
            text = override(key, value)  # tracking.experiment='main' -> tracking.experiment=main
        kept.append(text)
    model = [f"model={variant}"] if variant is not None else []
    return shlex.join(["anyq-train", *kept, *model, "task=test", override("resume", checkpoint)])


def announce_checkpoint(cfg: DictConfig, outcome: TrainOutcome) -> None:
    """Print a trained run's best checkpoint and the command that scores it on the same data
    and model (pasteable as is, :func:`scoring_command`)."""
    if cfg.task == Task.train and outcome.best_checkpoint:
        chosen = hydra_model_choice()
        variant = cfg.model.variant if chosen is not None and chosen != cfg.model.variant else None
        log.info("best checkpoint: %s  (score it: %s)", outcome.best_checkpoint,
                 scoring_command(hydra_overrides(), outcome.best_checkpoint, variant))


def print_comparison(cfg: DictConfig, run_id: str) -> None:
    """A single run's closing lines: its test scores beside its baseline's (the table that closes
    ``make run``, :func:`anyq.reporting.table.print_runs`) and how to report it."""
    from mlflow.exceptions import MlflowException

    from anyq.reporting.table import print_runs

    store = JobStore.from_config(cfg)
    run = store.client.get_run(run_id)
    runs = [run]
    tags = run.data.tags
    if tags.get(BASELINE_RUN_TAG):
        try:
            runs.insert(0, store.client.get_run(tags[BASELINE_RUN_TAG]))
        except MlflowException:
            pass
    experiment = cfg.tracking.experiment
    print_runs(runs, title=f"Run {run_id} against its baseline (experiment {experiment!r}): test split")
    if len(runs) == 1:
        why = tags.get(BASELINE_ERROR_TAG) or ("it is the baseline" if is_baseline(cfg) else
                                               "no comparison was asked for (tracking.compare_to_baseline=false)")
        print(f"No baseline comparison: {why}", flush=True)
    print(f"Report: {report_hint(experiment, cfg.paths.root)}", flush=True)
