"""A job's MLflow run: the store it goes to, its tags, and what a trained model leaves behind.

A run is opened by :func:`open_job_run` (tags, config, dataset input; a resumed checkpoint
reopens the run it came from), fed per-epoch metrics by :func:`mlflow_logger`, and given the
outcome by :func:`log_outcome`: the test metrics and the ``evaluation/`` artifacts
(``curves.json``, ``val_history.json``, ``data_summary.json``, ``test_forecasts.npz``,
``sampler_importance.npz``).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from filelock import FileLock
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from anyq.metrics.families import HEADLINE_TAG, headline_family
from anyq.tracking.baseline import (
    SIGNATURE_TAG,
    baseline_tags,
    config_signature,
    deltas,
    is_baseline,
)
from anyq.tracking.datasets import log_dataset, panel_dataset
from anyq.tracking.lightning import AttachedMLFlowLogger
from anyq.tracking.orphans import close_orphaned_runs, hold_run, run_lock_dir
from anyq.tracking.readiness import REASON_TAG, readiness_tags
from anyq.tracking.recipe_tags import recipe_tags
from anyq.tracking.runs import RunRecord, StatusFor, git_commit, open_run, while_store_busy
from anyq.tracking.source import source_tags
from anyq.tracking.store import (
    artifact_root,
    ensure_store,
    get_or_create_experiment,
    is_local_sqlite,
    resolve_tracking_uri,
)
from anyq.tracking.trial_runs import OPENED_BY_TRIAL_TAG, STUDY_NAME_TAG, TRIAL_NUMBER_TAG, trial_key
from anyq.training.builders import Dataset
from anyq.training.naming import run_name
from anyq.training.run import TrainOutcome
from anyq.training.schema import Task

RUN_ID_FILE = "mlflow_run_id"  # in a run's output folder, beside checkpoints/: the run they belong to


@dataclass
class JobStore:
    """The store of a job: client, tracking URI, experiment, and the ``mlruns/`` folder."""

    client: MlflowClient
    uri: str
    experiment_id: str
    mlruns: Path

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "JobStore":
        """Open (or create) the store and the experiment, then close the runs that a process
        which ended left RUNNING (:mod:`anyq.tracking.orphans`).

        Raises:
            StoreUnwritable: the store cannot be written (full, read-only).
        """
        mlruns = Path(cfg.paths.mlruns)
        uri = resolve_tracking_uri(cfg.tracking.tracking_uri, mlruns)

        def open_store() -> "JobStore":
            client = ensure_store(uri, mlruns)
            experiment_id = get_or_create_experiment(
                client, cfg.tracking.experiment, artifact_root(uri, mlruns, cfg.tracking.experiment)
            )
            return cls(client, uri, experiment_id, mlruns)

        store: JobStore = while_store_busy(open_store)
        close_orphaned_runs(store.client, store.run_locks)
        return store

    @property
    def lock_dir(self) -> Path:
        """Beside a local SQLite store; this machine's temporary folder for a tracking server."""
        return self.mlruns / "locks" if is_local_sqlite(self.uri) else Path(tempfile.gettempdir())

    @property
    def run_locks(self) -> Path:
        """Where open runs hold their locks (:func:`anyq.tracking.orphans.run_lock_dir`)."""
        return run_lock_dir(self.uri, self.mlruns)

    def lock(self, name: str) -> FileLock:
        """A lock shared by the jobs of this machine (enough for SQLite; best effort elsewhere)."""
        directory = self.lock_dir
        directory.mkdir(parents=True, exist_ok=True)
        return FileLock(str(directory / f"{name}.lock"))


def run_tags(cfg: DictConfig, dataset: Dataset, overrides: Sequence[str]) -> dict[str, str]:
    """The tags every run carries: variant, headline metric family, data, seed, task, source,
    signatures, recipe, trial."""
    commit = git_commit(cfg.paths.root)
    tags = {
        "variant": cfg.model.variant,
        HEADLINE_TAG: headline_family(str(cfg.model.get("conformal", "none"))),
        "dataset": dataset.name,
        "data_fingerprint": dataset.fingerprint,
        "seed": str(cfg.seed),
        "task": str(cfg.task),
        "git_commit": commit,
        **source_tags(commit),
        "overrides": " ".join(overrides),
        SIGNATURE_TAG: config_signature(cfg, dataset.fingerprint),
        **baseline_tags(cfg, dataset.fingerprint),
        **recipe_tags(cfg),
        **{k: str(v) for k, v in cfg.tracking.tags.items()},
    }
    if cfg.trial.number is not None:
        tags.update({STUDY_NAME_TAG: str(cfg.trial.study_name), TRIAL_NUMBER_TAG: str(cfg.trial.number)})
        if cfg.tracking.parent_run_id:
            tags[OPENED_BY_TRIAL_TAG] = trial_key(cfg.tracking.parent_run_id, cfg.trial.number)
    return tags


def checkpoint_run_id(ckpt_path: Optional[str]) -> Optional[str]:
    """The run a checkpoint was written by (``<output dir>/checkpoints/x.ckpt`` -> ``<output dir>/mlflow_run_id``)."""
    if ckpt_path is None:
        return None
    run_id_file = Path(ckpt_path).parent.parent / RUN_ID_FILE
    return run_id_file.read_text().strip() if run_id_file.is_file() else None


@contextmanager
def open_job_run(cfg: DictConfig, dataset: Dataset, store: JobStore, ckpt_path: Optional[str],
                 overrides: Sequence[str] = (), status_for: Optional[StatusFor] = None) -> Iterator[RunRecord]:
    """Open the job's run, closed FINISHED, FAILED or KILLED on leaving (never RUNNING).

    ``task=train`` from a checkpoint reopens the run that wrote it; ``task=test`` opens a run of
    its own tagged ``scored_checkpoint`` and ``scored_run_id`` (the scored run stays as it is).
    """
    source_run_id = checkpoint_run_id(ckpt_path)
    tags = run_tags(cfg, dataset, overrides)
    testing = cfg.task == Task.test
    if testing:
        tags.update({"scored_checkpoint": str(ckpt_path), "scored_run_id": source_run_id or "unknown"})
    with open_run(
        store.client,
        store.experiment_id,
        run_name=run_name(cfg),
        tags=tags,
        parent_run_id=cfg.tracking.parent_run_id,
        resume_run_id=None if testing else source_run_id,
        status_for=status_for,
        hold=lambda run_id: hold_run(store.run_locks, run_id),
    ) as run:
        output_dir = Path(cfg.paths.checkpoints).parent
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / RUN_ID_FILE).write_text(run.run_id)
        run.log_config(cfg)
        data_input = panel_dataset(dataset.name, dataset.panel, dataset.fingerprint, cfg.data)
        while_store_busy(lambda: log_dataset(store.client, run.run_id, data_input))
        yield run


def mlflow_logger(cfg: DictConfig, store: JobStore, run_id: str) -> AttachedMLFlowLogger:
    """Lightning's per-epoch metrics into the open run ``run_id``."""
    return AttachedMLFlowLogger(experiment_name=cfg.tracking.experiment, tracking_uri=store.uri, run_id=run_id)


def log_outcome(run: RunRecord, cfg: DictConfig, outcome: TrainOutcome) -> None:
    """The outcome's metrics (a baseline's ``delta/*`` against itself too), whether the model is
    trained enough to judge (``anyq.tracking.readiness``) and the artifacts."""
    metrics = dict(outcome.metrics)
    if is_baseline(cfg):
        metrics.update(deltas(metrics, metrics))
    run.log_metrics(metrics)
    readiness = readiness_tags(metrics)
    run.set_tags(readiness)
    if REASON_TAG not in readiness and REASON_TAG in run.client.get_run(run.run_id).data.tags:
        run.client.delete_tag(run.run_id, REASON_TAG)  # a resumed run that is trained enough now
    run.log_json(outcome.curves, "evaluation/curves.json")
    run.log_json(outcome.val_history, "evaluation/val_history.json")
    run.log_json(outcome.data_summary, "evaluation/data_summary.json")
    if outcome.forecasts:
        run.log_arrays(outcome.forecasts, "evaluation/test_forecasts.npz")
    if outcome.importance_history.size:
        run.log_arrays({"probabilities": outcome.importance_history}, "evaluation/sampler_importance.npz")
