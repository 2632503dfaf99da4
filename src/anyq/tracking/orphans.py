"""Runs whose process ended without closing them, closed by the next command that opens the store.

Every run a job opens holds a lock file, ``<locks>/runs/<run id>.lock``, from before the run
is opened until after it is closed (:func:`hold_run`, passed to
:func:`anyq.tracking.runs.open_run`); a study's parent run holds it shared by each process of
the study (:func:`hold_shared_run`, :func:`anyq.tracking.study_parent.open_study_parent`). The operating system releases the lock when the
process ends, however it ends: SIGKILL, an out-of-memory kill, or a store that could not be
written even to close the run. A run whose lock can be taken while it reads RUNNING is
orphaned: :func:`close_orphaned_runs` closes it FAILED with ``error`` = :data:`ORPHAN_REASON`.

It reaches the runs whose lock files this machine sees: every run of a local SQLite store
(the locks live beside it, ``mlruns/locks/runs``), and this machine's runs of a tracking
server. The runs a trial's job opened (its own and its baseline: tagged
:data:`~anyq.tracking.trial_runs.OPENED_BY_TRIAL_TAG` or with a trial number) are left to the sweep
(:func:`anyq.tracking.trial_runs.close_trial_runs`), which learns of the death from Optuna's
heartbeats and records the trial's state beside the run's: one owner for each run, so the
states a lost trial leaves do not depend on which clean-up runs first.
"""

from __future__ import annotations

import fcntl
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from anyq.tracking.runs import RunRecord, close_run
from anyq.tracking.store import is_local_sqlite
from anyq.tracking.trial_runs import OPENED_BY_TRIAL_TAG, TRIAL_NUMBER_TAG

log = logging.getLogger(__name__)
ORPHAN_REASON = "its process ended before closing the run (killed, or the store could not be written)"


def run_lock_dir(uri: str, mlruns: Path) -> Path:
    """Where open runs hold their locks: beside a local SQLite store (``mlruns/locks/runs``), this
    machine's temporary folder for any other store."""
    if is_local_sqlite(uri):
        return Path(mlruns) / "locks" / "runs"
    return Path(tempfile.gettempdir()) / "anyq-runs"


@contextmanager
def hold_shared_run(lock_dir: Path, run_id: str) -> Iterator[None]:
    """:func:`hold_run` for a run several processes keep open at once (a study's parent, shared by
    a sweep's workers): each holds the lock shared, so the run is orphaned only once every one of
    them has ended. The lock file stays (another holder may still use it).

    Raises:
        OSError: the lock file cannot be created (a full or read-only disk).
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{run_id}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # the exclusive try of close_orphaned_runs fails while held
        yield


@contextmanager
def hold_run(lock_dir: Path, run_id: str) -> Iterator[None]:
    """Hold the lock that says the run ``run_id`` has a living process; removed after.

    Raises:
        OSError: the lock file cannot be created (a full or read-only disk).
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{run_id}.lock"
    with FileLock(str(path)):
        yield
    # Removed only when the block ended normally. After an exception the run may still be
    # RUNNING (a store that could not be written could not close it): the free lock file is
    # how the next command that opens the store finds it, closes it FAILED, and removes the
    # file (close_orphaned_runs), as it removes the file of a run that was closed.
    try:
        path.unlink(missing_ok=True)
    except OSError:  # a read-only disk: the next command finds the run closed and skips it
        pass


def close_orphaned_runs(client: MlflowClient, lock_dir: Path) -> list[str]:
    """Close FAILED every RUNNING run of ``client``'s store whose lock in ``lock_dir`` is free
    (its process ended); return their ids. A lock held by a living process, naming a run of
    another store, or naming a run of a sweep's trial (closed by the sweep), is left alone.

    Raises:
        StoreUnwritable: the store still cannot be written (the run stays RUNNING).
    """
    closed: list[str] = []
    if not lock_dir.is_dir():
        return closed
    for path in sorted(lock_dir.glob("*.lock")):
        lock = FileLock(str(path), timeout=0)
        try:
            lock.acquire()
        except (Timeout, OSError):  # its process lives (or the disk is read-only: nothing to do)
            continue
        try:
            try:
                run = client.get_run(path.stem)
            except MlflowException:  # a run of another store (locks of a tracking server's runs)
                continue
            if run.info.status == "RUNNING" and _of_a_trial(run.data.tags):
                continue  # the sweep's clean-up closes it with its trial's state; its lock stays
            if run.info.status == "RUNNING":
                RunRecord(client, run.info.run_id).set_tags({"error": ORPHAN_REASON})
                close_run(client, run.info.run_id, "FAILED")
                closed.append(run.info.run_id)
                log.warning("run %s was left RUNNING by a process that ended; closed FAILED", run.info.run_id)
            path.unlink(missing_ok=True)
        finally:
            lock.release()
    return closed


def _of_a_trial(tags: dict[str, str]) -> bool:
    return OPENED_BY_TRIAL_TAG in tags or TRIAL_NUMBER_TAG in tags
