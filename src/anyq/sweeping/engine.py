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
- Whoever fails a trial for a lost worker calls :attr:`StudyRunner.on_lost` with it, so
  the tracking side can close the run that the dead job could not (the engine itself
  knows nothing of MLflow). A job that outlives a false alarm (its worker was only slow)
  finds its trial finished already: its result is logged and dropped, the retry stands.
- Every worker seeds its sampler alike (``hydra.sweeper.sampler.seed``), so a worker that
  finds trials it did not make (another worker's, or an earlier run's) reseeds its sampler
  once from fresh entropy; otherwise it would propose the very parameters the others
  drew. A lone worker on a fresh study keeps the seeded, reproducible sequence.
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
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from anyq.sweeping.locks import study_lock
from anyq.sweeping.space import as_override, quote
from anyq.sweeping.storage import make_storage

log = logging.getLogger(__name__)
INTERRUPTED = "anyq:interrupted"
STALE_REASON = "worker stopped (no heartbeat)"
OPEN_LOCK = "anyq:open-study"  # one lock name for every study: the tables are shared
Launch = Callable[[Sequence[Sequence[str]], int], Sequence[JobReturn]]
OnLost = Callable[[int, str], None]  # (trial number, reason)
OnTold = Callable[[optuna.Study, int, TrialState], None]  # (study, trial number, state) after each tell


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
    grace_period: int = 120
    poll_seconds: float = 2.0
    max_retry: int = 2


def _report_lost(on_lost: Optional[OnLost], number: int, reason: str) -> None:
    """Tell the tracking side; its failure must not stop the study (the trial is settled)."""
    if on_lost is None:
        return
    try:
        on_lost(number, reason)
    except Exception as exc:  # noqa: BLE001 - e.g. the tracking server briefly unreachable
        log.warning("could not close the run of lost trial %d: %s", number, exc)


def fail_and_retry(study: optuna.Study, trial_id: int, reason: str,
                   retry: RetryHeartbeatStaleTrialCallback, on_lost: Optional[OnLost]) -> Optional[int]:
    """A lost trial (dead or interrupted worker): flag it out of the total, fail it, enqueue
    its parameters again and close its run; its number, or None if it had finished after all."""
    storage = study._storage
    try:
        storage.set_trial_system_attr(trial_id, INTERRUPTED, True)
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return None  # its worker told it after all
    trial = storage.get_trial(trial_id)
    retry(study, trial)
    _report_lost(on_lost, trial.number, reason)
    return trial.number


def fail_stale(study: optuna.Study, retry: RetryHeartbeatStaleTrialCallback,
               on_lost: Optional[OnLost] = None) -> list[int]:
    """Fail the trials whose worker stopped beating, flag them, retry them; their numbers.

    Not Optuna's ``fail_stale_trials``: it fails a trial first and calls back after, when
    a finished trial no longer takes attributes, so the flag that keeps a lost trial out
    of the total could not be set. Here the flag comes first. Callers hold the study lock.
    """
    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return []
    lost: list[int] = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):  # type: ignore[attr-defined]
        number = fail_and_retry(study, trial_id, STALE_REASON, retry, on_lost)
        if number is not None:
            log.warning("trial %d: its worker stopped (no heartbeat); failed, retried with the same "
                        "parameters", number)
            lost.append(number)
    return lost


def open_study(settings: SweepSettings) -> optuna.Study:
    """Create or join the study.

    Under a lock: workers started together on a fresh database would otherwise race to
    create Optuna's tables (PostgreSQL fails the loser on ``CREATE TYPE``).
    """
    with study_lock(settings.storage_url, OPEN_LOCK):
        storage = make_storage(
            settings.storage_url,
            heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.grace_period,
        )
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
                 trial_overrides: Callable[[optuna.Trial], list[str]] = lambda t: [],
                 on_lost: Optional[OnLost] = None) -> None:
        self.settings = settings
        self.launch = launch
        self.trial_overrides = trial_overrides
        self.on_lost = on_lost  # may be set after construction, once the parent run exists
        self.on_told: Optional[OnTold] = None  # e.g. a progress line per finished trial
        self.study = open_study(settings)
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)
        self.job_idx = 0
        self._known = 0  # trials in the study after this worker's last ask
        self._reseeded = False

    # ------------------------------------------------------------------ asking
    def _next_batch(self, space: dict[str, BaseDistribution]) -> Optional[list[optuna.Trial]]:
        """Trials for this worker's next batch; [] to wait for others; None when done."""
        with study_lock(self.settings.storage_url, self.settings.study_name):
            fail_stale(self.study, self.retry, self.on_lost)
            trials = self.study.get_trials(deepcopy=False)
            counted = [t for t in trials if counts_toward_total(t)]
            waiting = sum(t.state == TrialState.WAITING for t in counted)
            running = sum(t.state == TrialState.RUNNING for t in counted)
            fresh = max(0, self.settings.n_trials - len(counted))
            take = min(self.settings.n_jobs, waiting + fresh)
            if take == 0:
                return None if running == 0 else []
            if len(trials) > self._known and not self._reseeded:
                # trials this worker did not make: another worker (or an earlier run) drew
                # from the same seeded sampler, and would be proposed the same parameters again
                self.study.sampler.reseed_rng()
                self._reseeded = True
            self._known = len(trials) + take - min(take, waiting)  # asks pop WAITING trials first
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
        for trial in trials:  # a job in a launcher's child may not have closed its run
            if self.study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                fail_and_retry(self.study, trial._trial_id, "sweep interrupted", self.retry, self.on_lost)

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
                try:
                    state = self._tell(trial, result)
                except optuna.exceptions.UpdateFinishedTrialError:
                    # failed as stale by another worker meanwhile (this one was only slow):
                    # the retry it enqueued stands, this result is dropped
                    state = self.study._storage.get_trial(trial._trial_id).state
                    log.warning("trial %d was already %s when its job returned; result dropped",
                                trial.number, state.name)
                log.info("trial %d: %s", trial.number, state.name)
                if self.on_told is not None:
                    self.on_told(self.study, trial.number, state)


def trial_link_overrides(settings: SweepSettings, trial: optuna.Trial) -> list[str]:
    """What a job needs to find its own trial in the storage."""
    return [
        f"trial.study_name={quote(settings.study_name)}",
        f"trial.storage={quote(settings.storage_url)}",
        f"trial.number={trial.number}",
    ]
