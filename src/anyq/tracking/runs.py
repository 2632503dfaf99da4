"""One MLflow run per trained model: tags, params, artifacts, and an honest final status."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from omegaconf import DictConfig, OmegaConf

from anyq.errors import StoreUnwritable, first_line
from anyq.tracking.store import as_unwritable, unwritable_reason

RESUMES_TAG = "resumes"  # how many times the run was resumed; segment k records under resume{k}.
_SEGMENT = re.compile(r"^resume(\d+)\.")


def git_commit(root: str | Path) -> str:
    """HEAD of the project, suffixed ``-dirty`` when tracked files have changed."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys to strings: MLflow params are flat."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


class RunRecord:
    """Handle on an open run: everything a finished model leaves behind goes through here.

    Every write waits out a busy store and raises :class:`StoreUnwritable` for one that
    cannot be written (:func:`while_store_busy`). ``MlflowClient.log_batch`` splits a batch
    into the store's per-call limits (1000 metrics, 100 params or tags) itself.
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.ending: tuple[str, Optional[str]] = ("FINISHED", None)

    def conclude(self, status: str, error: Optional[str] = None) -> None:
        """The status (FINISHED or FAILED) the run closes with when its
        :func:`run_lifecycle` block ends without an exception, and the one-line reason
        that becomes its ``error`` tag (a study whose trials failed never reads as fine)."""
        self.ending = (status, error[:500] if error else None)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        while_store_busy(lambda: self.client.log_batch(self.run_id, tags=items))

    def log_params(self, params: Mapping[str, str]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, v[:6000]) for k, v in params.items() if k not in existing]
        while_store_busy(lambda: self.client.log_batch(self.run_id, params=items))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        while_store_busy(lambda: self.client.log_batch(self.run_id, metrics=items))

    def resume_count(self) -> int:
        return int(self.client.get_run(self.run_id).data.tags.get(RESUMES_TAG, "0"))

    def log_config(self, cfg: DictConfig) -> dict[str, tuple[Optional[str], str]]:
        """Record the config the run (or, resumed, its new segment) runs with.

        A new run: ``config.yaml`` and one param per key. Resume number k (MLflow params
        never change): ``resume{k}/config.yaml``, a param ``resume{k}.<key>`` for every key
        whose value differs from what the run last ran with, and the tag ``resume{k}.changes``
        (``key: old -> new; ...``). Returns those changes ({} for a new run).
        """
        container = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(container, dict)
        params = flatten(container)
        segment = self.resume_count()
        if segment == 0:
            while_store_busy(lambda: self.client.log_text(self.run_id, OmegaConf.to_yaml(cfg, resolve=True),
                                                          "config.yaml"))
            self.log_params(params)
            return {}
        before = self.effective_params()
        changes = {k: (before.get(k), v) for k, v in params.items() if before.get(k) != v}
        while_store_busy(lambda: self.client.log_text(self.run_id, OmegaConf.to_yaml(cfg, resolve=True),
                                                      f"resume{segment}/config.yaml"))
        self.log_params({f"resume{segment}.{k}": new for k, (_, new) in changes.items()})
        text = "; ".join(f"{k}: {old} -> {new}" for k, (old, new) in sorted(changes.items()))
        self.set_tags({f"resume{segment}.changes": (text or "none")[:5000]})
        return changes

    def effective_params(self) -> dict[str, str]:
        """The params the run last ran with: the first segment's, overlaid by each resume's."""
        params = self.client.get_run(self.run_id).data.params
        current = {k: v for k, v in params.items() if not _SEGMENT.match(k)}
        segments = sorted((int(m.group(1)), k) for k in params if (m := _SEGMENT.match(k)))
        for _, key in segments:
            current[_SEGMENT.sub("", key)] = params[key]
        return current

    def log_json(self, payload: Any, artifact_file: str) -> None:
        while_store_busy(lambda: self.client.log_dict(self.run_id, payload, artifact_file))

    def log_arrays(self, arrays: Mapping[str, np.ndarray], artifact_file: str) -> None:
        """Compressed ``.npz`` artifact, e.g. the test forecasts that reports recompute from."""
        directory, name = Path(artifact_file).parent.as_posix(), Path(artifact_file).name
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            np.savez_compressed(path, **arrays)
            while_store_busy(lambda: self.client.log_artifact(self.run_id, str(path),
                                                              None if directory == "." else directory))


def exception_status(exc: BaseException) -> str:
    """KILLED for interruptions (a signal's :class:`~anyq.errors.Terminated`, any other
    ``SystemExit``, ``KeyboardInterrupt``), FAILED for errors."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "KILLED"
    return "FAILED"


StatusFor = Callable[[BaseException], Optional[tuple[str, Mapping[str, str]]]]
Hold = Callable[[str], AbstractContextManager[Any]]


@contextmanager
def run_lifecycle(client: MlflowClient, run_id: str, status_for: Optional[StatusFor] = None) -> Iterator[RunRecord]:
    """Yield the open run ``run_id`` and close it on leaving, never RUNNING: every run anyq
    opens, a job's and a study's parent alike, lives in such a block.

    The block ends normally: the run closes with :meth:`RunRecord.conclude`'s status
    (FINISHED unless told FAILED) and its ``error`` tag. It ends with an exception: the run
    closes FAILED with the exception's first line as its ``error`` tag, or KILLED for an
    interruption (:func:`exception_status`), and the exception goes on. ``status_for`` maps an
    exception to (status, extra tags) first, so that a caller can record, e.g., a pruned trial
    as KILLED with ``trial_state=PRUNED`` without this layer knowing Optuna.

    Raises:
        StoreUnwritable: the store or the disk could not be written (:func:`unwritable_reason`),
            whatever wrote it (MLflow, Lightning's checkpoints, an artifact). The run is closed
            FAILED with the reason; when that write fails too, it stays RUNNING until the next
            command that opens the store finds it orphaned.
    """
    record = RunRecord(client, run_id)
    try:
        yield record
    except BaseException as exc:
        unwritable = as_unwritable(exc)
        status, extra = (status_for(exc) if status_for else None) or (exception_status(exc), {})
        message = first_line(unwritable if unwritable is not None else exc, with_type=True)
        try:
            try:
                record.set_tags({"error": message, **extra})
            finally:
                close_run(client, run_id, status)
        except StoreUnwritable:
            if unwritable is None:
                raise
            # as expected: the store that failed the run cannot close it either
            unwritable.run_state = (f"run {run_id} stays RUNNING until the next anyq-train "
                                    "that can write the store closes it FAILED")
        else:
            if unwritable is not None:
                unwritable.run_state = f"run {run_id} closed {status}"
        if unwritable is not None and unwritable is not exc:
            raise unwritable from exc
        raise
    else:
        status, error = record.ending
        if error:
            record.set_tags({"error": error})
        elif "error" in while_store_busy(lambda: client.get_run(run_id)).data.tags:
            # a reopened run (a resume, a study's rerun) that ended well: the old reason no longer holds
            while_store_busy(lambda: client.delete_tag(run_id, "error"))
        close_run(client, run_id, status)


@contextmanager
def open_run(
    client: MlflowClient,
    experiment_id: str,
    *,
    run_name: Optional[str],
    tags: Mapping[str, Any],
    parent_run_id: Optional[str] = None,
    resume_run_id: Optional[str] = None,
    status_for: Optional[StatusFor] = None,
    hold: Optional[Hold] = None,
) -> Iterator[RunRecord]:
    """Create a run (or reopen ``resume_run_id``) and yield it in a :func:`run_lifecycle`:
    closed FINISHED, FAILED or KILLED, never left RUNNING.

    ``resume_run_id`` reopens a finished run: its tags are updated (the command line of each
    resume goes to ``resume{k}.overrides``) and ``resumes`` counts the resumes, so that
    :meth:`RunRecord.log_config` records the new segment's settings beside the first.
    ``hold(run_id)`` is held from before the run is (re)opened until after it is closed: the
    sign that its process lives (:mod:`anyq.tracking.orphans`).

    Raises:
        StoreUnwritable: as :func:`run_lifecycle`.
    """
    hold = hold or (lambda run_id: nullcontext())
    all_tags = {k: str(v) for k, v in tags.items()}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    with ExitStack() as held:  # released last, once the run is closed
        if resume_run_id:
            held.enter_context(hold(resume_run_id))
            while_store_busy(lambda: client.update_run(resume_run_id, status="RUNNING"))
            run_id = resume_run_id
        else:
            if run_name:
                all_tags[MLFLOW_RUN_NAME] = run_name
            run = while_store_busy(lambda: client.create_run(experiment_id, run_name=run_name, tags=all_tags))
            run_id = run.info.run_id
        with run_lifecycle(client, run_id, status_for) as record:
            if resume_run_id:
                tags_before = while_store_busy(lambda: client.get_run(run_id)).data.tags
                segment = int(tags_before.get(RESUMES_TAG, "0")) + 1
                # the first command line stays; each resume's own is kept beside it
                resumed = {(f"resume{segment}.{k}" if k == "overrides" else k): v for k, v in all_tags.items()}
                if "error" in tags_before:  # how the last segment ended; closing this one FINISHED drops it
                    resumed[f"resume{segment}.previous_error"] = tags_before["error"]
                record.set_tags({**resumed, "resumed": "true", RESUMES_TAG: str(segment)})
            else:
                held.enter_context(hold(run_id))
            yield record


def close_run(client: MlflowClient, run_id: str, status: str) -> None:
    """End a run (FINISHED, FAILED or KILLED), waiting out a briefly locked store: every run
    anyq opens, trial and study parents included, is closed through here.

    Raises:
        StoreUnwritable: the store cannot be written; the run stays as it was.
    """
    while_store_busy(lambda: client.set_terminated(run_id, status=status))


#: What a database says when another writer inserted the same key first (two workers tagging
#: one study parent at once): tried again, the write is an update.
INSERT_RACE = ("UniqueViolation", "UNIQUE constraint failed", "duplicate key value violates unique constraint")


def is_store_busy(exc: BaseException) -> bool:
    """The store is locked by another writer (MLflow's TEMPORARILY_UNAVAILABLE, which it also
    gives a full or read-only SQLite file: those are :func:`unwritable_reason`'s, not busy), or
    another writer inserted the same key first (:data:`INSERT_RACE`)."""
    if not isinstance(exc, MlflowException) or unwritable_reason(exc) is not None:
        return False
    return exc.error_code == "TEMPORARILY_UNAVAILABLE" or any(text in str(exc) for text in INSERT_RACE)


def while_store_busy(write: Callable[[], Any], attempts: int = 3, pause_s: float = 1.0) -> Any:
    """Run ``write``, retrying while the store is busy (:func:`is_store_busy`).

    A SQLite store is locked by one writer at a time (MLflow waits 20 s for it per try); a
    run closed while another process's write holds the lock must not be lost. Writes of this
    process are never interrupted half-way (a signal only sets a flag, :mod:`anyq.interrupts`),
    so it never waits on itself.

    Raises:
        StoreUnwritable: the store or the disk cannot be written (full, read-only), from the
            first try: waiting does not help.
        MlflowException: the store stayed busy for ``attempts`` tries, or failed otherwise.
    """
    for attempt in range(attempts):
        try:
            return write()
        except Exception as exc:
            unwritable = as_unwritable(exc)
            if unwritable is not None:
                raise unwritable from exc
            if not is_store_busy(exc) or attempt == attempts - 1:
                raise
            time.sleep(pause_s)
