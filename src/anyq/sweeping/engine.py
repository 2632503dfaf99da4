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
- No batch barrier: ``n_jobs`` slots each ask for one trial, launch it alone and ask again
  as soon as it returns, so a slow trial never idles the other slots (``barrier=True``
  restores hydra-optuna-sweeper's batches, for comparison). Slots are threads of this
  process; the launcher (joblib, Ray, Submitit) runs their jobs elsewhere.
- How a trial ended decides what happens to it, in one place (:meth:`StudyRunner.settle`):
  a trial whose own config cannot run is FAIL and the sweep goes on; a lost worker's trial
  is FAIL and retried; an interrupt or a broken launcher fails and retries the running
  trials, then stops the sweep with its error.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional, Sequence, Union

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException, OverrideParseException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from anyq.errors import first_line
from anyq.interrupts import stop_if_requested
from anyq.settings import SettingError, check_settings, ranged
from anyq.sweeping.errors import SpaceError, TrialConfigError, WorkerLost
from anyq.sweeping.hydra_private import job_error
from anyq.sweeping.locks import study_lock
from anyq.sweeping.optuna_private import heartbeat_enabled, stale_trial_ids, study_storage
from anyq.sweeping.space import as_override, quote
from anyq.sweeping.storage import make_storage
from anyq.training.schema import ConfigError

log = logging.getLogger(__name__)
INTERRUPTED = "anyq:interrupted"
STALE_REASON = "worker stopped (no heartbeat)"
SETTLE_S = 60.0  # interrupted: how long the slots get to settle the trials of the stopped jobs
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
    n_trials: int = ranged(ge=1)  # the study's total: 0 would open a study that runs nothing
    n_jobs: int = ranged(1, ge=1)
    sampler: Optional[optuna.samplers.BaseSampler] = None
    heartbeat_interval: int = ranged(10, ge=1)
    grace_period: int = ranged(120, gt=0)
    poll_seconds: float = ranged(2.0, gt=0)
    max_retry: int = ranged(2, ge=0)
    barrier: bool = False  # True: hydra-optuna-sweeper's batches of n_jobs (benchmarks only)

    def __post_init__(self) -> None:
        check_sweep_settings(vars(self))


def check_sweep_settings(values: dict[str, Any]) -> None:
    """The declared range of each ``hydra.sweeper.*`` number in ``values`` (a SweepSettings'
    fields, or the sweeper's own before it has one). Raises ConfigError naming the key."""
    names = {f.name for f in fields(SweepSettings)} & set(values)
    try:
        check_settings(SweepSettings, values, "hydra.sweeper.", only=names)
    except SettingError as exc:
        raise ConfigError(str(exc), exc.keys) from None


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
    storage = study_storage(study)
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
    storage = study_storage(study)
    lost: list[int] = []
    for trial_id in stale_trial_ids(storage, storage.get_study_id_from_name(study.study_name)):
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
    """One thread keeps every trial this process runs alive in the storage."""

    def __init__(self, study: optuna.Study, interval: int) -> None:
        self.storage: BaseStorage = study_storage(study)
        self.interval = interval
        self.trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def add(self, trial_id: int) -> None:
        """Beat now (so a trial orphaned from here on turns stale) and from now on."""
        self._record(trial_id)
        with self._lock:
            self.trial_ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def _record(self, trial_id: int) -> None:
        if heartbeat_enabled(self.storage):
            self.storage.record_heartbeat(trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                self._record(trial_id)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """Draw one parameter through Optuna's public API (a retry's fixed value wins)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"{name}: no way to suggest {dist!r}")


def check_space_matches(study: optuna.Study, space: dict[str, BaseDistribution]) -> None:
    """A resumed study must be searched over the space it was started with.

    Raises :class:`SpaceError` naming the first parameter whose distribution differs from the
    one its earlier trials were drawn from (Optuna refuses a changed categorical mid-ask,
    after it has created the trial; a changed numeric range would silently mix two studies).
    """
    for trial in study.get_trials(deepcopy=False):
        for name, stored in trial.distributions.items():
            if name in space and space[name] != stored:
                raise SpaceError(
                    f"study {study.study_name!r} has a different space for {name}: it was searched "
                    f"over {stored}, now {space[name]}; use a new hydra.sweeper.study_name")


def is_trial_config_error(exc: BaseException) -> bool:
    """The trial's own overrides cannot make a job: retrying them would fail the same way."""
    return isinstance(exc, (TrialConfigError, ConfigCompositionException, OverrideParseException))


WAIT = "wait"  # _next_trial: nothing to ask now, but trials are still running


class StudyRunner:
    """Runs one worker's share of a study; call :meth:`run` from every worker alike.

    ``launch`` is a Hydra launcher's ``launch``; ``check`` raises :class:`TrialConfigError`
    when a trial's overrides cannot make a valid job (it runs before the launch, in this
    process, so every launcher reports such trials alike); ``stop_jobs`` ends the jobs the
    launcher still runs elsewhere when this worker is interrupted.
    """

    def __init__(self, settings: SweepSettings, launch: Launch,
                 trial_overrides: Callable[[optuna.Trial], list[str]] = lambda t: [],
                 on_lost: Optional[OnLost] = None,
                 check: Callable[[list[str]], None] = lambda overrides: None,
                 stop_jobs: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.launch = launch
        self.trial_overrides = trial_overrides
        self.on_lost = on_lost  # may be set after construction, once the parent run exists
        self.check = check
        self.stop_jobs = stop_jobs  # ends the launcher's running jobs on an interrupt
        self.on_told: Optional[OnTold] = None  # e.g. a progress line per finished trial
        self.study = open_study(settings)
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)
        self.storage = study_storage(self.study)
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self.heartbeat = Heartbeat(self.study, settings.heartbeat_interval)
        self.job_idx = 0
        self._known = 0  # trials in the study after this worker's last ask
        self._reseeded = False
        self._lock = threading.Lock()  # job_idx and _running, shared by the slots
        self._running: dict[int, optuna.Trial] = {}  # by trial id
        self._ids: dict[int, int] = {}  # trial number -> trial id, for the trials held
        self._stop = threading.Event()
        self._interrupted = threading.Event()  # set first thing on an interrupt, for the slots
        self._error: Optional[BaseException] = None

    # ------------------------------------------------------------------ asking
    def _next_trial(self, space: dict[str, BaseDistribution]) -> Union[optuna.Trial, str, None]:
        """This slot's next trial; :data:`WAIT` while others still run; None when done."""
        with study_lock(self.settings.storage_url, self.settings.study_name):
            fail_stale(self.study, self.retry, self.on_lost)
            trials = self.study.get_trials(deepcopy=False)
            counted = [t for t in trials if counts_toward_total(t)]
            waiting = sum(t.state == TrialState.WAITING for t in counted)
            running = sum(t.state == TrialState.RUNNING for t in counted)
            fresh = max(0, self.settings.n_trials - len(counted))
            if waiting + fresh == 0:
                return None if running == 0 else WAIT
            if len(trials) > self._known and not self._reseeded:
                # trials this worker did not make: another worker (or an earlier run) drew
                # from the same seeded sampler, and would be proposed the same parameters again
                self.study.sampler.reseed_rng()
                self._reseeded = True
            self._known = len(trials) + (0 if waiting else 1)  # an ask pops a WAITING trial first
            trial = self.study.ask()
            self._hold(trial)
            try:
                for name, dist in space.items():
                    suggest(trial, name, dist)
            except Exception as exc:  # noqa: BLE001 - e.g. a space the stored trials contradict
                self._release(trial)
                self._fail(trial, first_line(exc, with_type=True))
                raise SpaceError(f"study {self.settings.study_name!r}: {first_line(exc)}") from exc
            return trial

    def _hold(self, trial: optuna.Trial) -> None:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        with self._lock:
            self._running[trial_id] = trial
            self._ids[trial.number] = trial_id
        self.heartbeat.add(trial_id)

    def _release(self, trial: optuna.Trial) -> None:
        trial_id = self._trial_id(trial)
        self.heartbeat.discard(trial_id)
        with self._lock:
            self._running.pop(trial_id, None)
            self._ids.pop(trial.number, None)

    def _trial_id(self, trial: optuna.Trial) -> int:
        """The storage's id of ``trial`` (kept while this worker holds it, else looked up)."""
        with self._lock:
            held = self._ids.get(trial.number)
        if held is not None:
            return held
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    # ---------------------------------------------------------------- settling
    def settle(self, trial: optuna.Trial, outcome: Union[JobReturn, BaseException],
               raised: bool = False) -> TrialState:
        """Record how a trial ended: the one place that tells a trial's fault from the sweep's.

        - a job result: COMPLETE with its objectives, PRUNED, or FAIL with the job's error;
        - the trial's own config cannot run (:func:`is_trial_config_error`): FAIL, not retried;
        - :class:`WorkerLost`: FAIL, flagged out of the total, retried with the same parameters;
        - anything else the job returned: FAIL with its first line (NaN loss, a data error);
        - anything else ``raised`` by the launcher itself (an interrupt, a signal, a cluster
          gone): the trial is failed and retried like a lost one; the caller then stops the
          sweep with that error.
        """
        if isinstance(outcome, JobReturn):
            if outcome.status == JobStatus.COMPLETED:
                return self._tell_values(trial, outcome.return_value)
            outcome = job_error(outcome)
        if isinstance(outcome, optuna.TrialPruned):
            trial.set_user_attr("prune_reason", str(outcome))
            self.study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED
        if is_trial_config_error(outcome):
            return self._fail(trial, f"invalid trial config: {first_line(outcome)}")
        if isinstance(outcome, WorkerLost):
            return self._lose(trial, f"worker lost: {first_line(outcome)}")
        if not stops_sweep(outcome, raised):
            return self._fail(trial, first_line(outcome, with_type=True))
        interrupted = not isinstance(outcome, Exception) or self._interrupted.is_set()
        reason = "sweep interrupted" if interrupted else f"launcher failed: {first_line(outcome)}"
        return self._lose(trial, reason)

    def _tell_values(self, trial: optuna.Trial, summary: Any) -> TrialState:
        try:
            values = [float(summary[key]) for key in self.settings.objectives]
        except (KeyError, TypeError, ValueError) as exc:
            return self._fail(trial, f"objective missing from the job's result: {exc}")
        if not all(math.isfinite(v) for v in values):
            return self._fail(trial, f"objective is not finite: {values}")
        self.study.tell(trial, values=values if len(values) > 1 else values[0])
        return TrialState.COMPLETE

    def _fail(self, trial: optuna.Trial, reason: str) -> TrialState:
        log.warning("trial %d failed: %s", trial.number, reason)
        trial.set_user_attr("fail_reason", reason[:1000])
        self.study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL

    def _lose(self, trial: optuna.Trial, reason: str) -> TrialState:
        trial_id = self._trial_id(trial)
        number = fail_and_retry(self.study, trial_id, reason, self.retry, self.on_lost)
        if number is not None:
            log.warning("trial %d: %s; failed, retried with the same parameters", number, reason)
        return self.storage.get_trial(trial_id).state

    def _abandon_running(self) -> None:
        """This worker is being interrupted: fail its running trials now, retry them later."""
        with self._lock:
            running = list(self._running)
        for trial_id in running:  # a job in a launcher's child may not have closed its run
            if self.storage.get_trial(trial_id).state == TrialState.RUNNING:
                number = fail_and_retry(self.study, trial_id, "sweep interrupted", self.retry, self.on_lost)
                if number is not None:  # None: its job told it meanwhile
                    log.warning("trial %d: sweep interrupted; failed, retried with the same parameters", number)

    # ------------------------------------------------------------------- loop
    def _run_trial(self, trial: optuna.Trial, fixed: Sequence[str]) -> None:
        overrides = [*fixed, *(as_override(k, v) for k, v in trial.params.items()),
                     *self.trial_overrides(trial)]
        outcome: Union[JobReturn, BaseException]
        raised = False
        try:
            self.check(overrides)
            with self._lock:
                job_idx, self.job_idx = self.job_idx, self.job_idx + 1
            outcome = self.launch([overrides], job_idx)[0]
        except BaseException as exc:  # settled below; re-raised if it stops the sweep
            outcome, raised = exc, True
        try:
            try:
                state = self.settle(trial, outcome, raised)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
                # failed as stale by another worker meanwhile (this one was only slow): the
                # retry it enqueued stands, this result is dropped (``tell`` says "Cannot tell
                # a FAIL trial" with a ValueError, attribute writes with UpdateFinishedTrialError)
                frozen = self.storage.get_trial(self._trial_id(trial))
                if not frozen.state.is_finished():
                    raise
                state = frozen.state
                log.warning("trial %d was already %s when its job returned; result dropped",
                            trial.number, state.name)
                if state == TrialState.FAIL:  # the job closed its run since: the run says FAIL again
                    reason = str(frozen.user_attrs.get("fail_reason", STALE_REASON))
                    _report_lost(self.on_lost, trial.number, reason)
        finally:
            self._release(trial)
        log.info("trial %d: %s", trial.number, state.name)
        if self.on_told is not None:
            with self._lock:  # slots finish trials from several threads
                self.on_told(self.study, trial.number, state)
        if isinstance(outcome, BaseException) and stops_sweep(outcome, raised):
            raise outcome

    def _slot(self, space: dict[str, BaseDistribution], fixed: Sequence[str],
              barrier: Optional[threading.Barrier]) -> None:
        """One worker slot: ask, launch alone, settle, ask again, until the study is done."""
        try:
            while not self._stop.is_set():
                if barrier is not None:
                    try:
                        barrier.wait()
                    except threading.BrokenBarrierError:
                        barrier = None  # a slot left: the study is ending
                trial = self._next_trial(space)
                if trial is None:
                    return
                if trial is WAIT:  # other trials still running: wait for them or their death
                    self._stop.wait(self.settings.poll_seconds)
                    continue
                self._run_trial(trial, fixed)
        finally:
            if barrier is not None:
                barrier.abort()

    def _slot_in_thread(self, done: threading.Event, *args: Any) -> None:
        try:
            self._slot(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            with self._lock:
                self._error = self._error or exc
            self._stop.set()
        finally:
            done.set()

    def run(self, space: dict[str, BaseDistribution], fixed: Sequence[str]) -> optuna.Study:
        """Run trials in ``n_jobs`` slots until the study holds ``n_trials`` (see module doc).

        Raises :class:`SpaceError` before any trial when the space contradicts the stored
        study; re-raises an interrupt or a launcher's error after failing (and re-enqueuing)
        every trial this worker was running.

        The main thread waits on one event per slot thread, not on ``Thread.join``: a signal
        raised inside ``join`` marks the joined thread stopped while it still runs (CPython
        before 3.13, bpo-45274's fix), and the interrupted sweep would then end while a slot
        is half-way through closing its trial's run.
        """
        check_space_matches(self.study, space)
        slots = max(1, self.settings.n_jobs)
        done = [threading.Event() for _ in range(slots)]
        with self.heartbeat:
            try:
                if slots == 1:  # in this thread: an in-process job keeps the main thread's signals
                    self._slot(space, fixed, None)
                else:
                    barrier = threading.Barrier(slots) if self.settings.barrier else None
                    for i in range(slots):
                        threading.Thread(target=self._slot_in_thread, args=(done[i], space, fixed, barrier),
                                         name=f"anyq-slot-{i}", daemon=True).start()
                    for event in done:
                        while not event.wait(timeout=0.2):  # short waits: a stop asked is seen soon
                            stop_if_requested()
            except BaseException:
                self._interrupted.set()  # the slots' launches now fail because of it, not on their own
                self._stop.set()
                try:  # first, so that no job can close its run after it was marked lost
                    self.stop_jobs()
                except Exception as exc:  # noqa: BLE001 - the trials must be settled regardless
                    log.warning("could not stop the launcher's jobs: %s", exc)
                # the slots settle the trials whose jobs were just stopped and close their runs:
                # let them finish, or the process could end half-way through
                deadline = time.monotonic() + SETTLE_S
                if slots > 1 and not all(event.wait(max(0.0, deadline - time.monotonic())) for event in done):
                    log.warning("interrupted: slots still busy after %.0f s; failing their trials", SETTLE_S)
                self._abandon_running()
                raise
        if self._error is not None:
            raise self._error
        return self.study


def stops_sweep(exc: BaseException, raised: bool) -> bool:
    """An interrupt, or an error of the launcher itself (not of the trial, not of its job)."""
    if not isinstance(exc, Exception):
        return True  # KeyboardInterrupt, SystemExit, a signal
    return raised and not is_trial_config_error(exc) and not isinstance(exc, WorkerLost)


def trial_link_overrides(settings: SweepSettings, trial: optuna.Trial) -> list[str]:
    """What a job needs to find its own trial in the storage."""
    return [
        f"trial.study_name={quote(settings.study_name)}",
        f"trial.storage={quote(settings.storage_url)}",
        f"trial.number={trial.number}",
    ]


def nothing_finished(study: optuna.Study) -> Optional[str]:
    """Why the study has trials and none of them finished (one line), or None when one did
    (or none was run). Finished: COMPLETE, or PRUNED (it ran, and the pruner stopped it). A
    study of FAIL trials only has nothing to show: its command must fail."""
    trials = study.get_trials(deepcopy=False)
    if not trials or any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials):
        return None
    states = ", ".join(f"{n} {state}" for state, n in sorted(
        collections.Counter(t.state.name for t in trials).items()))
    failed = next((t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("fail_reason")), None)
    example = f"; trial {failed.number}: {failed.user_attrs['fail_reason']}" if failed else ""
    return first_line(f"study {study.study_name!r}: none of its {len(trials)} trials finished ({states}){example}")
