"""Where runs are stored: MLflow's SQLite backend in ``mlruns/`` unless told otherwise."""

from __future__ import annotations

import errno
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional
import urllib.error
import urllib.request
from urllib.parse import unquote, urlparse

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from anyq.errors import StoreNotFoundError, StoreUnwritable, closest, first_line
from anyq.tracking.view import prepare_experiment

# MLflow logs every SQLite error with its traceback before raising it with the same message:
# a full or read-only store would print it once per write. The raised error says it all.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

#: What SQLite (through MLflow and SQLAlchemy) says when the store cannot be written at all.
UNWRITABLE_MESSAGES = (
    "attempt to write a readonly database",
    "database or disk is full",
    "disk i/o error",
    "unable to open database file",
)
#: The same from the file system (artifacts, checkpoints, the SQLite journal).
UNWRITABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG})


def unwritable_reason(exc: BaseException) -> Optional[str]:
    """The one-line reason when ``exc`` (or an error it was raised from) says that the store or
    the disk cannot be written: SQLite's "database or disk is full", "attempt to write a
    readonly database", … (:data:`UNWRITABLE_MESSAGES`) or an ``OSError`` such as ENOSPC or
    EROFS (:data:`UNWRITABLE_ERRNOS`); None for anything else, a busy store included.

    The one place that tells a store that cannot be written from other errors.
    """
    if isinstance(exc, StoreUnwritable):
        return exc.reason
    seen: set[int] = set()
    todo: list[Optional[BaseException]] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in UNWRITABLE_ERRNOS:
            return first_line(current)
        text = str(current).lower()
        for message in UNWRITABLE_MESSAGES:
            if message in text:
                return message
        todo += [current.__cause__, current.__context__]
    return None


def as_unwritable(exc: BaseException) -> Optional[StoreUnwritable]:
    """``exc`` as a :class:`StoreUnwritable` (raised from it) when it is one, else None."""
    if isinstance(exc, StoreUnwritable):
        return exc
    reason = unwritable_reason(exc)
    return StoreUnwritable(reason) if reason is not None else None


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
    scheme = urlparse(uri).scheme.split("+", 1)[0].lower()
    if len(scheme) > 1 and scheme not in STORE_SCHEMES:
        near = closest(scheme, STORE_SCHEMES)
        raise StoreNotFoundError(f"tracking URI {uri}: {scheme!r} is not a kind of MLflow store"
                                 f"{f' (did you mean {near}?)' if near else ''}; one of {', '.join(STORE_SCHEMES)}")
    path = local_store_path(uri)
    if path is not None and not (path.is_file() if is_local_sqlite(uri) else path.is_dir()):
        raise StoreNotFoundError(f"no MLflow store at {path}: nothing to read there, nothing created "
                                 f"(a mistyped tracking URI or project root?)")
    if scheme in ("http", "https"):
        _check_server_answers(uri)
    return MlflowClient(tracking_uri=uri)


#: The kinds of tracking URI MLflow opens (``sqlite:///``, ``file:///``, a server, a database).
STORE_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
#: Seconds a reading command waits for a tracking server to answer before it says none does
#: (MLflow's own client retries for minutes before it gives up).
SERVER_ANSWER_SECONDS = 10.0


def _check_server_answers(uri: str) -> None:
    """StoreNotFoundError when no server answers at ``uri`` within :data:`SERVER_ANSWER_SECONDS`
    (any HTTP answer counts, an authentication error included)."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVER_ANSWER_SECONDS).close()
    except urllib.error.HTTPError:
        return  # the server answered
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreNotFoundError(f"no MLflow server answers at {uri} ({first_line(str(reason))})") from None


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
