"""Optuna storages from one URL, tuned for several workers sharing one study."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable, Optional

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

JOURNAL_PREFIX = "journal:///"
STORAGE_ENV = "ANYQ_OPTUNA_STORAGE"


def default_storage_url(mlruns_dir: str | Path) -> str:
    return f"sqlite:///{Path(mlruns_dir).resolve() / 'optuna.db'}"


def resolve_storage_url(explicit: Optional[str], mlruns_dir: str | Path) -> str:
    """``hydra.sweeper.storage`` wins, then ``$ANYQ_OPTUNA_STORAGE``, then ``mlruns/optuna.db``.

    The variable lets every machine of a shared study run the very same command, with
    the server's address (and nothing secret) set once per shell.
    """
    if explicit:
        return explicit
    if os.environ.get(STORAGE_ENV):
        return os.environ[STORAGE_ENV]
    return default_storage_url(mlruns_dir)


def driver_url(url: str) -> str:
    """Give a bare ``postgresql://`` URL the driver that is installed.

    SQLAlchemy 2.1 reads ``postgresql://`` as psycopg 3; anyq installs psycopg2
    (``psycopg2-binary``). Spelling the driver out keeps one URL valid for every worker,
    whichever of the two it has.
    """
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare) and importlib.util.find_spec("psycopg") is None \
                and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(bare):]
    return url


def redacted(url: str) -> str:
    """The URL without its password: fit for tags and logs."""
    if url.startswith(("sqlite:", JOURNAL_PREFIX)):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def make_storage(url: str, *, heartbeat_interval: Optional[int] = None, grace_period: Optional[int] = None,
                 on_stale: Optional[Callable[[optuna.Study, FrozenTrial], None]] = None) -> BaseStorage:
    """``sqlite:///…``, ``postgresql://…``, ``mysql://…`` or ``journal:///path/to/file.log``.

    SQLite gets a long busy timeout so concurrent workers wait for the write lock instead
    of failing; heartbeats let a live worker fail the trials of a dead one (Optuna's
    ``fail_stale_trials``, before each ask) and call ``on_stale`` with each of them.
    A journal file has no heartbeats.
    """
    if url.startswith(JOURNAL_PREFIX):
        path = Path("/" + url[len(JOURNAL_PREFIX):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    return RDBStorage(driver_url(url), engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                      grace_period=grace_period, heartbeat_stale_trial_callback=on_stale)


def load_trial(study_name: str, storage_url: str, number: int,
               pruner: Optional[optuna.pruners.BasePruner] = None) -> optuna.Trial:
    """The live trial a sweep engine created, so a job can report to it and be pruned."""
    storage = make_storage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              pruner=pruner or optuna.pruners.NopPruner())
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.trial.Trial(study, trial_id)
