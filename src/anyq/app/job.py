"""One job of ``anyq-train``: train, test, track, and compare against the baseline.

The same function serves a single run, every trial of a sweep and every cell of an
ablation, so all of them record the same things.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
from filelock import FileLock
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback

from anyq.errors import first_line
from anyq.serving.publish import log_forecaster_model
from anyq.sweeping.pruning import TrialPruningCallback
from anyq.sweeping.storage import load_trial
from anyq.tracking.baseline import (
    SIGNATURE_TAG,
    baseline_config,
    baseline_tags,
    config_signature,
    deltas,
    find_baseline_run,
    is_baseline,
)
from anyq.tracking.datasets import log_dataset, panel_dataset
from anyq.tracking.lightning import AttachedMLFlowLogger
from anyq.tracking.runs import RunRecord, git_commit, open_run
from anyq.tracking.source import source_tags
from anyq.tracking.store import (
    artifact_root,
    ensure_store,
    get_or_create_experiment,
    is_local_sqlite,
    resolve_tracking_uri,
)
from anyq.training.builders import Dataset, load_dataset, validate_config
from anyq.training.checkpoints import override
from anyq.training.naming import run_name
from anyq.training.run import TrainOutcome, fit_and_test, resume_checkpoint
from anyq.training.schema import Task

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_run_id"


@dataclass
class Tracker:
    client: MlflowClient
    uri: str
    experiment_id: str
    mlruns: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Tracker":
        mlruns = Path(cfg.paths.mlruns)
        uri = resolve_tracking_uri(cfg.tracking.tracking_uri, mlruns)
        client = ensure_store(uri, mlruns)
        experiment_id = get_or_create_experiment(
            client, cfg.tracking.experiment, artifact_root(uri, mlruns, cfg.tracking.experiment)
        )
        return cls(client, uri, experiment_id, mlruns)

    def lock(self, name: str) -> FileLock:
        """A lock shared by the jobs of this machine (enough for SQLite; best effort elsewhere)."""
        directory = self.mlruns / "locks" if is_local_sqlite(self.uri) else Path(tempfile.gettempdir())
        directory.mkdir(parents=True, exist_ok=True)
        return FileLock(str(directory / f"{name}.lock"))


def hydra_overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # composed without a running Hydra app
        return []


def configured_pruner() -> Optional[optuna.pruners.BasePruner]:
    try:
        sweeper = HydraConfig.get().sweeper
    except ValueError:
        return None
    pruner = sweeper.get("pruner") if isinstance(sweeper, DictConfig) else None
    return instantiate(pruner) if pruner else None


def run_tags(cfg: DictConfig, dataset: Dataset) -> dict[str, str]:
    commit = git_commit(cfg.paths.root)
    tags = {
        "variant": cfg.model.variant,
        "dataset": dataset.name,
        "data_fingerprint": dataset.fingerprint,
        "seed": str(cfg.seed),
        "task": str(cfg.task),
        "git_commit": commit,
        **source_tags(commit),
        "overrides": " ".join(hydra_overrides()),
        SIGNATURE_TAG: config_signature(cfg, dataset.fingerprint),
        **baseline_tags(cfg, dataset.fingerprint),
        **{k: str(v) for k, v in cfg.tracking.tags.items()},
    }
    if cfg.trial.number is not None:
        tags.update({"optuna.study_name": str(cfg.trial.study_name),
                     "optuna.trial_number": str(cfg.trial.number)})
    return tags


def pruned_status(exc: BaseException) -> Optional[tuple[str, dict[str, str]]]:
    if isinstance(exc, optuna.TrialPruned):
        return "KILLED", {"trial_state": "PRUNED"}
    return None


def trial_callbacks(cfg: DictConfig, pruner: Optional[optuna.pruners.BasePruner]) -> list[Callback]:
    if cfg.trial.number is None or not cfg.trial.storage:
        return []
    trial = load_trial(cfg.trial.study_name, cfg.trial.storage, cfg.trial.number, pruner)
    if len(trial.study.directions) > 1:  # Optuna cannot prune multi-objective trials
        return []
    return [TrialPruningCallback(trial)]


def job_summary(outcome: TrainOutcome, run_id: Optional[str]) -> dict[str, Any]:
    """What the sweep engine reads: best validation scores, test scores, the run id."""
    summary: dict[str, Any] = {k: v for k, v in outcome.best_validation().items() if k.startswith("val/")}
    summary.update(outcome.metrics)
    summary["run_id"] = run_id
    return summary


def announce_checkpoint(cfg: DictConfig, outcome: TrainOutcome) -> None:
    """Print a trained run's best checkpoint and the override that takes it (pasteable as is)."""
    if cfg.task == Task.train and outcome.best_checkpoint:
        log.info("best checkpoint: %s  (score it: anyq-train task=test %s)",
                 outcome.best_checkpoint, override("resume", outcome.best_checkpoint))


def log_outcome(run: RunRecord, outcome: TrainOutcome, metrics: dict[str, float]) -> None:
    run.log_metrics(metrics)
    run.log_json(outcome.curves, "evaluation/curves.json")
    run.log_json(outcome.val_history, "evaluation/val_history.json")
    run.log_json(outcome.data_summary, "evaluation/data_summary.json")
    if outcome.forecasts:
        run.log_arrays(outcome.forecasts, "evaluation/test_forecasts.npz")
    if outcome.importance_history.size:
        run.log_arrays({"probabilities": outcome.importance_history}, "evaluation/sampler_importance.npz")


def train_tracked(
    cfg: DictConfig,
    dataset: Dataset,
    tracker: Tracker,
    pruner: Optional[optuna.pruners.BasePruner],
    compare: bool,
) -> dict[str, Any]:
    """Train and record one run; then compare it with its baseline, training that if needed.

    The baseline comes after the model so that a baseline that cannot train (say, the
    same NaN-producing learning rate) leaves the model's own run recorded, with the
    reason under ``baseline_error``.
    """
    ckpt_path = resume_checkpoint(cfg, dataset)  # refused here, before any run is opened
    source_run_id = None
    if ckpt_path is not None:  # checkpoints/ sits in the run's output dir, beside the run id
        run_id_file = Path(ckpt_path).parent.parent / RUN_ID_FILE
        source_run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    tags = run_tags(cfg, dataset)
    testing = cfg.task == Task.test  # a new run scores the checkpoint; its own run stays as it is
    if testing:
        tags.update({"scored_checkpoint": ckpt_path, "scored_run_id": source_run_id or "unknown"})
    with open_run(
        tracker.client,
        tracker.experiment_id,
        run_name=run_name(cfg),
        tags=tags,
        parent_run_id=cfg.tracking.parent_run_id,
        resume_run_id=None if testing else source_run_id,
        status_for=pruned_status,
    ) as run:
        output_dir = Path(cfg.paths.checkpoints).parent
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / RUN_ID_FILE).write_text(run.run_id)
        run.log_config(cfg)
        log_dataset(tracker.client, run.run_id,
                    panel_dataset(dataset.name, dataset.panel, dataset.fingerprint, cfg.data))
        logger = AttachedMLFlowLogger(
            experiment_name=cfg.tracking.experiment, tracking_uri=tracker.uri, run_id=run.run_id
        )
        outcome = fit_and_test(cfg, dataset, loggers=[logger],
                               callbacks=trial_callbacks(cfg, pruner), ckpt_path=ckpt_path)
        announce_checkpoint(cfg, outcome)
        metrics = dict(outcome.metrics)
        if is_baseline(cfg):
            metrics.update(deltas(metrics, metrics))
        elif compare and not testing:  # scoring a checkpoint trains nothing, no baseline either
            try:
                baseline = ensure_baseline(cfg, dataset, tracker)
            except Exception as exc:  # noqa: BLE001 - the model's own run stands
                log.warning("baseline failed: %s", exc)
                run.set_tags({"baseline_error": first_line(exc, with_type=True)})
            else:
                metrics.update(deltas(metrics, baseline))
                run.set_tags({"baseline_run_id": baseline["run_id"]})
        log_outcome(run, outcome, metrics)
        if cfg.tracking.log_model:
            log_forecaster_model(run, cfg, outcome)
        return job_summary(outcome, run.run_id)


def ensure_baseline(cfg: DictConfig, dataset: Dataset, tracker: Tracker) -> dict[str, Any]:
    """Reuse a finished matching baseline run, or train one (once, even with parallel jobs)."""
    base_cfg = baseline_config(cfg)
    signature = config_signature(base_cfg, dataset.fingerprint)
    with tracker.lock(f"baseline-{signature}"):
        run = find_baseline_run(tracker.client, signature, dataset.fingerprint)
        if run is None:
            log.info("No finished baseline run with signature %s: training it first", signature)
            out = Path(cfg.paths.output_dir) / "baseline"
            base_cfg.paths.output_dir = str(out)
            base_cfg.paths.checkpoints = str(out / "checkpoints")
            base_cfg.tracking.tags = {**base_cfg.tracking.tags, "role": "baseline"}
            train_tracked(base_cfg, dataset, tracker, None, compare=False)
            run = find_baseline_run(tracker.client, signature, dataset.fingerprint)
            assert run is not None, "baseline run did not finish"
        else:
            log.info("Reusing baseline run %s", run.info.run_id)
    return {**run.data.metrics, "run_id": run.info.run_id}


def run_job(cfg: DictConfig, pruner: Optional[optuna.pruners.BasePruner] = None) -> dict[str, Any]:
    validate_config(cfg)
    pruner = pruner or configured_pruner()
    dataset = load_dataset(cfg.data)
    if not cfg.tracking.enabled:
        outcome = fit_and_test(cfg, dataset, callbacks=trial_callbacks(cfg, pruner),
                               ckpt_path=resume_checkpoint(cfg, dataset))
        announce_checkpoint(cfg, outcome)
        return job_summary(outcome, None)
    tracker = Tracker.from_config(cfg)
    if is_baseline(cfg):
        # a baseline job holds its signature's lock while it trains, so a job beside it (make
        # run trains both models side by side) waits for it instead of training a second one
        with tracker.lock(f"baseline-{config_signature(cfg, dataset.fingerprint)}"):
            return train_tracked(cfg, dataset, tracker, pruner, compare=cfg.tracking.compare_to_baseline)
    return train_tracked(cfg, dataset, tracker, pruner, compare=cfg.tracking.compare_to_baseline)

