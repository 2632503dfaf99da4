"""A lock per study, shared by every worker that can reach its storage.

Asking Optuna for a trial and checking the study's total must happen as one step, or
several workers overshoot ``n_trials``. SQLite and journal files lock with a file beside
them; PostgreSQL and MySQL with the server's advisory locks, so workers on other machines
queue too.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from filelock import FileLock

from anyq.sweeping.storage import driver_url


def _key(study_name: str) -> int:
    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def study_lock(storage_url: str, study_name: str, timeout: float = 600.0) -> Iterator[None]:
    if storage_url.startswith(("sqlite:///", "journal:///")):
        path = Path("/" + storage_url.split(":///", 1)[1].lstrip("/"))
        with FileLock(str(path.parent / f".{path.name}.{_key(study_name) & 0xFFFFFFFF:08x}.lock"),
                      timeout=timeout):
            yield
        return
    engine = sa.create_engine(driver_url(storage_url), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _key(study_name)})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _key(study_name)})
        elif engine.dialect.name == "mysql":
            name = f"anyq-{_key(study_name)}"
            conn.execute(sa.text("SELECT GET_LOCK(:n, :t)"), {"n": name, "t": int(timeout)})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
        else:
            raise ValueError(f"no study lock for storage {engine.dialect.name!r}")
    engine.dispose()
