"""The sweep engine: Optuna's own loop over a persistent study, one Hydra job per trial.

``Study.optimize(objective, n_jobs=…)`` runs the trials (optuna 5.0): each of ``n_jobs``
threads asks for a trial as soon as its last one is told (no batch barrier), beats that
trial's heartbeat while its job runs, and fails the trials of dead workers (stale
heartbeats) before each ask; the storage's ``heartbeat_stale_trial_callback`` enqueues them
again with the same parameters. :class:`JobObjective` launches the trial's job through the
Hydra launcher and turns its ``JobReturn`` into the trial's value, ``TrialPruned``, or a FAIL
with a one-line ``fail_reason``.

What anyq adds, each for a guarantee Optuna's loop does not give (docs/design.md §5):

- ``n_trials`` is the study's total, for every worker sharing it and on a rerun:
  :class:`SharedStudy` counts and asks as one step under a per-study lock
  (:mod:`anyq.sweeping.locks`); a callback stops the loop when nothing is left to ask.
  Without the lock, workers that count at the same moment overshoot the total.
- A lost trial (dead worker, ``WorkerLost``, an interrupt) is retried with the same
  parameters by Optuna's ``RetryHeartbeatStaleTrialCallback``; the lost trial counted, its
  retry does not count again (:func:`counts_toward_total`).
- A worker whose share is done waits while other workers' trials run, so that a trial of a
  worker that dies meanwhile is still failed, retried and run (:func:`run_study`).
- Every worker seeds its sampler alike (``hydra.sweeper.sampler.seed``); a worker that
  joins a study with trials reseeds it once, or it would propose the parameters already drawn.
"""

from __future__ import annotations

import collections
import logging
import math
import time
import warnings
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional, Sequence

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.plugins.launcher import Launcher
from optuna.distributions import BaseDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from anyq.errors import ConfigError, SettingError, SpaceError, TrialConfigError, WorkerLost, first_line
from anyq.interrupts import requested
from anyq.settings import check_settings, ranged
from anyq.sweeping.hydra_private import job_error
from anyq.sweeping.locks import study_lock
from anyq.sweeping.space import as_override, quote
from anyq.sweeping.storage import make_storage

log = logging.getLogger(__name__)
# the heartbeat and retry API the engine stands on is experimental in Optuna 5: its warnings
# (once per call) tell a user nothing
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module=r"anyq\.sweeping\.")
warnings.filterwarnings("ignore", message="Argument ``heartbeat_interval`` is an experimental",
                        category=optuna.exceptions.ExperimentalWarning)
STALE_REASON = "worker stopped (no heartbeat)"
INTERRUPTED_REASON = "sweep interrupted"
OPEN_LOCK = "anyq:open-study"  # one lock name for every study: the tables are shared
# the trial's own overrides cannot make a job: FAIL, never retried (it would fail the same way)
TRIAL_CONFIG_ERRORS = (TrialConfigError, ConfigError, ConfigCompositionException, OverrideParseException)
OnLost = Callable[[int, str], None]  # (trial number, reason): close the runs a lost job left open


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


class TrialFailed(Exception):
    """The trial failed with its ``fail_reason`` recorded; Optuna records it FAIL and goes on."""


class StudyComplete(Exception):
    """Nothing is left to ask: the study holds its total and no trial waits for a retry."""


class SweepInterrupted(Exception):
    """A job was interrupted outside a signal handler (its cause: the KeyboardInterrupt or
    SystemExit it raised); the trial is FAIL and retried, the sweep stops."""


def counts_toward_total(trial: FrozenTrial) -> bool:
    """Every trial counts except a retry of a lost one (the lost trial counted already)."""
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) is None


def trials_left(study: optuna.Study, n_trials: int) -> int:
    """The trials still to run: the WAITING ones (retries), and new ones up to ``n_trials``
    counted trials."""
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return waiting + max(0, n_trials - sum(counts_toward_total(t) for t in trials))


def superseded(trials: Sequence[FrozenTrial]) -> set[int]:
    """The numbers of the lost trials whose retry was enqueued: the retry stands for them."""
    return {number for t in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def running_elsewhere(study: optuna.Study) -> bool:
    return any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


class SharedStudy(optuna.Study):
    """An Optuna study whose :meth:`ask` hands out trials only while the study's total is not
    reached, counting and asking as one step for every worker that shares the study."""

    def __init__(self, settings: SweepSettings, storage: optuna.storages.BaseStorage) -> None:
        super().__init__(study_name=settings.study_name, storage=storage, sampler=settings.sampler)
        self.settings = settings
        self.joined = False  # this worker has asked before

    def ask(self, fixed_distributions: Optional[dict[str, BaseDistribution]] = None) -> optuna.Trial:
        """The next trial, a WAITING retry first. Raises :class:`StudyComplete` when nothing is
        left to ask (Optuna's loop then ends this thread's share)."""
        with study_lock(self.settings.storage_url, self.study_name):
            if not trials_left(self, self.settings.n_trials):
                raise StudyComplete(self.study_name)
            if not self.joined and self.get_trials(deepcopy=False):
                self.sampler.reseed_rng()  # the seeded sequence was drawn already, by another worker or run
            self.joined = True
            return super().ask(fixed_distributions)


def open_study(settings: SweepSettings, on_lost: Optional[OnLost] = None) -> SharedStudy:
    """Create or join the study, with heartbeats whose stale trials are retried once per
    ``max_retry`` and reported to ``on_lost`` (the tracking side closes their runs).

    Under a lock: workers started together on a fresh database would otherwise race to
    create Optuna's tables (PostgreSQL fails the loser on ``CREATE TYPE``).
    """
    retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        log.warning("trial %d: %s; retried with the same parameters", trial.number, STALE_REASON)
        retry(study, trial)
        report_lost(on_lost, trial.number, STALE_REASON)

    with study_lock(settings.storage_url, OPEN_LOCK):
        storage = make_storage(settings.storage_url, heartbeat_interval=settings.heartbeat_interval,
                               grace_period=settings.grace_period, on_stale=on_stale)
        optuna.create_study(study_name=settings.study_name, storage=storage, directions=settings.directions,
                            load_if_exists=True)
    return SharedStudy(settings, storage)


def report_lost(on_lost: Optional[OnLost], number: int, reason: str) -> None:
    """Tell the tracking side; its failure must not stop the study (the trial is settled)."""
    if on_lost is None:
        return
    try:
        on_lost(number, reason)
    except Exception as exc:  # noqa: BLE001 - e.g. the tracking server briefly unreachable
        log.warning("could not close the run of lost trial %d: %s", number, exc)


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


class JobObjective:
    """Optuna's objective: one job per trial through a Hydra launcher.

    The job's overrides are ``fixed``, the trial's parameters (from ``space``) and
    ``links(trial)`` (how the job finds its trial and its parent run). How the trial ends:

    - the job's result: the objectives' values (a missing or non-finite one is FAIL);
    - the job pruned (``TrialPruned``): PRUNED;
    - the trial's own config cannot make a job (:data:`TRIAL_CONFIG_ERRORS`): FAIL, not retried;
    - its worker lost (:class:`WorkerLost`) or a signal stopped it: FAIL and retried with the
      same parameters, its runs closed through ``on_lost``; a signal also stops the sweep;
    - any other error of the job: FAIL with its first line, the sweep goes on;
    - an error of the launcher itself (a cluster gone): FAIL and retried, and the sweep stops
      with that error once the other running trials are told.
    """

    def __init__(self, launcher: Launcher, settings: SweepSettings, space: dict[str, BaseDistribution],
                 fixed: Sequence[str], links: Callable[[optuna.Trial], list[str]],
                 on_lost: Optional[OnLost]) -> None:
        self.launcher = launcher
        self.settings = settings
        self.space = space
        self.fixed = list(fixed)
        self.links = links
        self.on_lost = on_lost
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)
        self.broken: Optional[Exception] = None  # the launcher's own error, once it failed

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        params = {name: suggest(trial, name, dist) for name, dist in self.space.items()}
        overrides = [*self.fixed, *(as_override(k, v) for k, v in params.items()), *self.links(trial)]
        try:
            result = self.launcher.launch([overrides], trial.number)[0]
        except TRIAL_CONFIG_ERRORS as exc:
            raise self.fail(trial, f"invalid trial config: {first_line(exc)}") from exc
        except Exception as exc:  # noqa: BLE001 - the launcher's own error stops the sweep
            if requested() is not None:
                raise self.lose(trial, INTERRUPTED_REASON) from exc
            self.broken = exc
            trial.study.stop()  # no other thread asks for a trial now; run_study raises it
            self.lose(trial, f"launcher failed: {first_line(exc)}")
            raise
        except BaseException as exc:  # a job in this process interrupted: KeyboardInterrupt, SystemExit
            self.lose(trial, INTERRUPTED_REASON)
            if requested() is not None:
                raise TrialFailed(INTERRUPTED_REASON) from exc
            raise SweepInterrupted(INTERRUPTED_REASON) from exc
        if result.status == JobStatus.COMPLETED:
            return self.values(trial, result)
        error = job_error(result)
        if isinstance(error, optuna.TrialPruned):
            trial.set_user_attr("prune_reason", str(error))
            raise error
        if requested() is not None:
            raise self.lose(trial, INTERRUPTED_REASON)
        if isinstance(error, WorkerLost):
            raise self.lose(trial, f"worker lost: {first_line(error)}")
        if isinstance(error, TRIAL_CONFIG_ERRORS):
            raise self.fail(trial, f"invalid trial config: {first_line(error)}")
        raise self.fail(trial, first_line(error, with_type=True))

    def values(self, trial: optuna.Trial, result: JobReturn) -> float | list[float]:
        try:
            values = [float(result.return_value[key]) for key in self.settings.objectives]
        except (KeyError, TypeError, ValueError) as exc:
            raise self.fail(trial, f"objective missing from the job's result: {exc}") from None
        if not all(math.isfinite(v) for v in values):
            raise self.fail(trial, f"objective is not finite: {values}")
        return values if len(values) > 1 else values[0]

    def fail(self, trial: optuna.Trial, reason: str) -> TrialFailed:
        """Record why ``trial`` failed; the error to raise (Optuna then records it FAIL)."""
        log.warning("trial %d failed: %s", trial.number, reason)
        trial.set_user_attr("fail_reason", reason[:1000])
        return TrialFailed(reason)

    def lose(self, trial: optuna.Trial, reason: str) -> TrialFailed:
        """A lost trial: enqueue its retry (same parameters, up to ``max_retry``), record why,
        close the runs its job could not close; the error to raise."""
        self.retry(trial.study, trial.study.get_trials(deepcopy=False)[trial.number])
        error = self.fail(trial, reason)
        report_lost(self.on_lost, trial.number, reason)
        return error


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """One parameter through Optuna's public API (a retry's fixed value wins)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"{name}: no way to suggest {dist!r}")


def stop_when_done(n_trials: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """An ``optimize`` callback: stop asking on a signal, or when nothing is left to ask."""
    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if requested() is not None or not trials_left(study, n_trials):
            study.stop()
    return callback


def run_study(study: SharedStudy, objective: JobObjective,
              callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> None:
    """Run this worker's share of the study in ``n_jobs`` threads (see the module doc).

    Returns when nothing is left to ask or run, or after a signal (:func:`anyq.interrupts.requested`)
    once every trial this worker ran is told. Raises :class:`SpaceError` before any trial
    when the space contradicts the stored study; a launcher's own error after the other
    running trials are told; the interrupt a job of this process raised outside a signal.
    """
    settings = study.settings
    check_space_matches(study, objective.space)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's line is anyq's, its reason a user attr
    while requested() is None and objective.broken is None:
        if trials_left(study, settings.n_trials):
            try:
                study.optimize(objective, n_jobs=settings.n_jobs, catch=(TrialFailed,),
                               callbacks=[stop_when_done(settings.n_trials), *callbacks])
            except StudyComplete:
                pass  # another thread or worker asked for the last trial
            except SweepInterrupted as exc:
                raise exc.__cause__ from None
        elif running_elsewhere(study):  # another worker's trial may yet turn stale and be retried
            time.sleep(settings.poll_seconds)
            fail_stale_trials(study)
        else:
            return
    if objective.broken is not None:  # Optuna's loop may have stopped before it saw the error
        raise objective.broken


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
