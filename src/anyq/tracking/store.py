"""Where runs are stored: MLflow's SQLite backend in ``mlruns/`` unless told otherwise."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import unquote, urlparse

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from anyq.tracking.view import prepare_experiment


def resolve_tracking_uri(tracking_uri: Optional[str], mlruns_dir: str | Path) -> str:
    """An explicit setting wins, then ``MLFLOW_TRACKING_URI``, then ``mlruns/mlflow.db``."""
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(mlruns_dir).resolve() / 'mlflow.db'}"


@contextmanager
def tracking_uri(uri: Optional[str] = None) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to ``uri`` (if given) for the block only, then
    put back as it was: the next job of a sweep or a test may use another store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    if uri is not None:
        mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


class StoreNotFoundError(FileNotFoundError):
    """A command that only reads was pointed at a place where no store exists (one line)."""


def local_store_path(uri: str) -> Optional[Path]:
    """Where a local store lives: the SQLite file of ``sqlite:///…``, the folder of a file store
    (``file:///…`` or a plain path); None for a server (``http://``, ``postgresql://``, …)."""
    if is_local_sqlite(uri):
        return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme or len(parsed.scheme) == 1:  # a plain path (a Windows drive letter too)
        return Path(uri)
    return None


def open_existing_store(uri: str) -> MlflowClient:
    """A client on a store that already exists, for the commands that only read (report,
    compare, confirm's look-up of its sweep, the UI check, ``anyq-predict --run``).

    MLflow creates a missing local store on first use, so a mistyped ``MLFLOW_TRACKING_URI``
    or ``paths.root`` would leave an empty ``mlflow.db`` (or ``mlruns/`` folder) behind and
    then find nothing in it. Here nothing is created: :class:`StoreNotFoundError` names the
    place instead. A server's store is the server's business and is not checked.
    """
    path = local_store_path(uri)
    if path is not None and not (path.is_file() if is_local_sqlite(uri) else path.is_dir()):
        raise StoreNotFoundError(f"no MLflow store at {path}: nothing to read there, nothing created "
                                 f"(a mistyped tracking URI or project root?)")
    return MlflowClient(tracking_uri=uri)


def ensure_store(uri: str, mlruns_dir: str | Path) -> MlflowClient:
    """Create the store once, under a lock: parallel first writers race on a fresh SQLite file."""
    if not is_local_sqlite(uri):
        return MlflowClient(tracking_uri=uri)
    mlruns = Path(mlruns_dir).resolve()
    mlruns.mkdir(parents=True, exist_ok=True)
    with FileLock(str(mlruns / ".store.lock")):  # the client creates the tables on first use
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client


def artifact_root(uri: str, mlruns_dir: str | Path, experiment: str) -> Optional[str]:
    """Artifacts beside the SQLite file; a tracking server decides for itself."""
    if is_local_sqlite(uri):
        return (Path(mlruns_dir).resolve() / "artifacts" / experiment).as_uri()
    return None


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: Optional[str]) -> str:
    """The experiment's id, created if needed; either way it opens on the model-training view
    with the saved comparison view (:mod:`anyq.tracking.view`)."""
    experiment_id = _get_or_create(client, name, artifact_location)
    prepare_experiment(client, experiment_id)
    return experiment_id


def _get_or_create(client: MlflowClient, name: str, artifact_location: Optional[str]) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # another worker created it between our two calls
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
