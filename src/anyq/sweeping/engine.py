"""The sweep engine: a persistent Optuna study driven through any Hydra launcher.

What it adds to hydra-optuna-sweeper's loop (and why it replaces it):

- ``n_trials`` is the study's total: a rerun resumes and stops at the total, and several
  workers (processes or machines) share the study without overshooting, because
  "count, then ask" runs under a per-study lock (:mod:`anyq.sweeping.locks`).
- Each job gets a handle on its trial (``trial.*`` overrides), so it reports ``val/crps``
  per epoch and can be pruned; a pruned job comes back as ``optuna.TrialPruned``.
- A job that raises or returns NaN is told FAIL with its reason and the sweep goes on.
- Heartbeats mark the trials of a dead worker FAIL (flagged ``interrupted``) and enqueue a
  retry with the same parameters; an interrupt of this worker fails its own trials the
  same way before it exits. No trial stays RUNNING.
- Integer ranges keep Hydra's meaning (the plugin turned ``range(1, 5)`` into 1..5).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import BaseDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from anyq.sweeping.locks import study_lock
from anyq.sweeping.space import as_override, quote
from anyq.sweeping.storage import make_storage

log = logging.getLogger(__name__)
INTERRUPTED = "anyq:interrupted"
Launch = Callable[[Sequence[Sequence[str]], int], Sequence[JobReturn]]


@dataclass
class SweepSettings:
    study_name: str
    storage_url: str
    directions: list[str]
    objectives: list[str]
    n_trials: int
    n_jobs: int = 1
    sampler: Optional[optuna.samplers.BaseSampler] = None
    heartbeat_interval: int = 10
    grace_period: int = 30
    poll_seconds: float = 2.0
    max_retry: int = 2


def _on_stale(study: optuna.Study, trial: FrozenTrial, retry: RetryHeartbeatStaleTrialCallback) -> None:
    """A dead worker's trial: enqueue its parameters again, flag the failure as not counted."""
    retry(study, trial)
    study._storage.set_trial_system_attr(trial._trial_id, INTERRUPTED, True)
    study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "worker stopped (no heartbeat)")


def open_study(settings: SweepSettings) -> optuna.Study:
    retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)
    storage = make_storage(
        settings.storage_url,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.grace_period,
    )
    if isinstance(storage, optuna.storages.RDBStorage):
        storage.heartbeat_stale_trial_callback = lambda s, t: _on_stale(s, t, retry)  # type: ignore[attr-defined]
    return optuna.create_study(
        study_name=settings.study_name,
        storage=storage,
        sampler=settings.sampler,
        directions=settings.directions,
        load_if_exists=True,
    )


def counts_toward_total(trial: FrozenTrial) -> bool:
    """Every trial counts except those failed by an interruption (they are retried)."""
    return not (trial.state == TrialState.FAIL and trial.system_attrs.get(INTERRUPTED))


class Heartbeat:
    """Keeps this worker's trials alive in the storage while their jobs run."""

    def __init__(self, study: optuna.Study, trials: Sequence[optuna.Trial], interval: int) -> None:
        self.storage = study._storage
        self.trial_ids = [t._trial_id for t in trials]
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            if hasattr(self.storage, "record_heartbeat"):
                for trial_id in self.trial_ids:
                    self.storage.record_heartbeat(trial_id)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


class StudyRunner:
    """Runs one worker's share of a study; call :meth:`run` from every worker alike."""

    def __init__(self, settings: SweepSettings, launch: Launch,
                 trial_overrides: Callable[[optuna.Trial], list[str]] = lambda t: []) -> None:
        self.settings = settings
        self.launch = launch
        self.trial_overrides = trial_overrides
        self.study = open_study(settings)
        self.job_idx = 0

    # ------------------------------------------------------------------ asking
    def _next_batch(self, space: dict[str, BaseDistribution]) -> Optional[list[optuna.Trial]]:
        """Trials for this worker's next batch; [] to wait for others; None when done."""
        with study_lock(self.settings.storage_url, self.settings.study_name):
            fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            counted = [t for t in trials if counts_toward_total(t)]
            waiting = sum(t.state == TrialState.WAITING for t in counted)
            running = sum(t.state == TrialState.RUNNING for t in counted)
            fresh = max(0, self.settings.n_trials - len(counted))
            take = min(self.settings.n_jobs, waiting + fresh)
            if take == 0:
                return None if running == 0 else []
            return [self.study.ask(fixed_distributions=space) for _ in range(take)]

    # ---------------------------------------------------------------- telling
    def _tell(self, trial: optuna.Trial, result: JobReturn) -> TrialState:
        if result.status == JobStatus.COMPLETED:
            summary = result.return_value
            try:
                values = [float(summary[key]) for key in self.settings.objectives]
            except (KeyError, TypeError, ValueError) as exc:
                return self._fail(trial, f"objective missing from the job's result: {exc}")
            if not all(math.isfinite(v) for v in values):
                return self._fail(trial, f"objective is not finite: {values}")
            self.study.tell(trial, values=values if len(values) > 1 else values[0])
            return TrialState.COMPLETE
        error = result._return_value
        if isinstance(error, optuna.TrialPruned):
            trial.set_user_attr("prune_reason", str(error))
            self.study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        return self._fail(trial, f"{type(error).__name__}: {error}".splitlines()[0])

    def _fail(self, trial: optuna.Trial, reason: str) -> TrialState:
        log.warning("trial %d failed: %s", trial.number, reason)
        trial.set_user_attr("fail_reason", reason[:1000])
        self.study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL

    def _abandon(self, trials: Sequence[optuna.Trial]) -> None:
        """This worker is being interrupted: fail its trials now, retry them later."""
        retry = RetryHeartbeatStaleTrialCallback(max_retry=self.settings.max_retry)
        for trial in trials:
            frozen = self.study._storage.get_trial(trial._trial_id)
            if frozen.state != TrialState.RUNNING:
                continue
            trial.set_user_attr("fail_reason", "sweep interrupted")
            self.study._storage.set_trial_system_attr(trial._trial_id, INTERRUPTED, True)
            self.study.tell(trial, state=TrialState.FAIL)
            retry(self.study, frozen)

    # ------------------------------------------------------------------- loop
    def run(self, space: dict[str, BaseDistribution], fixed: Sequence[str]) -> optuna.Study:
        while True:
            batch = self._next_batch(space)
            if batch is None:
                return self.study
            if not batch:  # other workers' trials still running: wait for them or their death
                time.sleep(self.settings.poll_seconds)
                continue
            overrides = [
                [*fixed, *(as_override(k, v) for k, v in t.params.items()), *self.trial_overrides(t)]
                for t in batch
            ]
            try:
                with Heartbeat(self.study, batch, self.settings.heartbeat_interval):
                    results = self.launch(overrides, self.job_idx)
            except BaseException:
                self._abandon(batch)
                raise
            self.job_idx += len(batch)
            for trial, result in zip(batch, results):
                state = self._tell(trial, result)
                log.info("trial %d: %s", trial.number, state.name)


def trial_link_overrides(settings: SweepSettings, trial: optuna.Trial) -> list[str]:
    """What a job needs to find its own trial in the storage."""
    return [
        f"trial.study_name={quote(settings.study_name)}",
        f"trial.storage={quote(settings.storage_url)}",
        f"trial.number={trial.number}",
    ]
