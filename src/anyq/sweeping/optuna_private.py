"""The parts of Optuna the sweep engine needs that Optuna keeps private (pinned: optuna 5.0.0).

Each function wraps one private name, and ``tests/test_private_apis.py`` pins what it does,
so an Optuna upgrade that moves one breaks that test, not the engine.

- :func:`study_storage`: the storage a study writes through (``Study._storage``). Optuna
  wraps an ``RDBStorage`` in its caching storage; the engine must write through the same
  object as the study, or the study's cache would miss the engine's writes.
- :func:`heartbeat_enabled`: ``optuna.storages._heartbeat.is_heartbeat_enabled``.
- :func:`stale_trial_ids`: the RUNNING trials whose heartbeat stopped
  (``BaseHeartbeat._get_stale_trial_ids``). Optuna's public ``fail_stale_trials`` fails them
  before its callback runs, too late to flag them out of the study's total.
"""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import is_heartbeat_enabled


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object ``study`` reads and writes through."""
    return study._storage


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether ``storage`` records heartbeats (an RDB storage given ``heartbeat_interval``)."""
    return is_heartbeat_enabled(storage)


def stale_trial_ids(storage: BaseStorage, study_id: int) -> list[int]:
    """Ids of the study's RUNNING trials whose last heartbeat is older than the grace period;
    [] for a storage without heartbeats."""
    if not heartbeat_enabled(storage):
        return []
    return list(storage._get_stale_trial_ids(study_id))  # type: ignore[attr-defined]
