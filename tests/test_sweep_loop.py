"""The sweep engine on Optuna's loop, with a stand-in launcher (no training): no batch
barrier, the exact total (one worker and two sharing a study), and how each way a trial can
end is recorded. Driven through the engine's public functions and Optuna's public API."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException
from optuna.distributions import FloatDistribution
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from anyq.errors import ConfigError, TrialConfigError, WorkerLost
from anyq.sweeping.engine import (
    INTERRUPTED_REASON,
    STALE_REASON,
    JobObjective,
    SweepSettings,
    open_study,
    run_study,
)

SPACE = {"x": FloatDistribution(0.0, 1.0)}
Outcome = Callable[[int, int], Optional[BaseException]]  # (trial number, attempt) -> what the job does


class FakeLauncher:
    """Trial n returns val/crps=n at once, unless ``outcome(n, attempt)`` gives an error (a
    ``WorkerLost`` or a job error comes back in a FAILED JobReturn, anything else is raised
    by ``launch`` itself); trial n in ``waits_for`` first waits until trial m has ended, in
    ``waits_for_start`` until trial m has started."""

    def __init__(self, outcome: Outcome = lambda n, attempt: None, waits_for: Optional[dict[int, int]] = None,
                 waits_for_start: Optional[dict[int, int]] = None, returned: tuple[type, ...] = ()) -> None:
        self.outcome = outcome
        self.waits_for = waits_for or {}
        self.waits_for_start = waits_for_start or {}
        self.returned = (WorkerLost, *returned)
        self.started: dict[int, threading.Event] = {}
        self.ended: dict[int, threading.Event] = {}
        self.order: list[tuple[str, int]] = []  # ("start" | "end", trial number), in time order
        self.attempts: dict[int, int] = {}
        self.lock = threading.Lock()

    def event(self, number: int, events: Optional[dict[int, threading.Event]] = None) -> threading.Event:
        with self.lock:
            return (self.ended if events is None else events).setdefault(number, threading.Event())

    def launch(self, job_overrides, initial_job_idx):
        (overrides,) = job_overrides  # one job per objective call
        number = int(dict(o.split("=", 1) for o in overrides)["trial.number"])
        with self.lock:
            attempt = self.attempts[number] = self.attempts.get(number, 0) + 1
            self.order.append(("start", number))
        self.event(number, self.started).set()
        if number in self.waits_for_start:
            assert self.event(self.waits_for_start[number], self.started).wait(20), "the other trial never started"
        if number in self.waits_for:
            assert self.event(self.waits_for[number]).wait(20), "the other trial never ended"
        with self.lock:
            self.order.append(("end", number))
        self.event(number).set()
        result = self.outcome(number, attempt)
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
        ret.return_value = {"val/crps": float(number)}
        if isinstance(result, self.returned):
            ret.status, ret.return_value = JobStatus.FAILED, result
        elif result is not None:
            raise result
        return [ret]


def settings(tmp_path: Path, *, n_trials: int, n_jobs: int = 1, **extra) -> SweepSettings:
    return SweepSettings(study_name="s", storage_url=f"sqlite:///{tmp_path}/optuna.db", directions=["minimize"],
                         objectives=["val/crps"], n_trials=n_trials, n_jobs=n_jobs, poll_seconds=0.05,
                         sampler=optuna.samplers.RandomSampler(seed=0), **extra)


def sweep(tmp_path: Path, launcher: FakeLauncher, *, n_trials: int, n_jobs: int = 1,
          on_lost=None, **extra) -> list[optuna.trial.FrozenTrial]:
    """One worker's run of the study; the study's trials afterwards, read through Optuna."""
    chosen = settings(tmp_path, n_trials=n_trials, n_jobs=n_jobs, **extra)
    study = open_study(chosen, on_lost)
    objective = JobObjective(launcher, chosen, SPACE, [], links=lambda t: [f"trial.number={t.number}"],
                             on_lost=on_lost)
    run_study(study, objective)
    return stored(tmp_path)


def stored(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db").get_trials()


def retries_of(trials, number: int) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == number]


def test_a_free_slot_starts_the_next_trial_while_a_slow_one_runs(tmp_path):
    # trial 0 holds its slot until trial 3 has ended: only a loop without a batch barrier
    # runs trials 1, 2 and 3 on the other slot meanwhile (with batches of two it would hang)
    fake = FakeLauncher(waits_for={0: 3})
    trials = sweep(tmp_path, fake, n_trials=4, n_jobs=2)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert fake.order.index(("end", 3)) < fake.order.index(("end", 0))


def test_the_total_is_the_studys_and_a_rerun_resumes_to_it(tmp_path):
    fake = FakeLauncher()
    assert len(sweep(tmp_path, fake, n_trials=3, n_jobs=2)) == 3
    assert len(sweep(tmp_path, fake, n_trials=5, n_jobs=2)) == 5  # two more, not five
    assert len(sweep(tmp_path, fake, n_trials=5)) == 5  # done: nothing asked
    assert sorted(fake.attempts) == [0, 1, 2, 3, 4]


def test_two_workers_sharing_a_study_ask_exactly_its_total(tmp_path):
    fake = FakeLauncher()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            sweep(tmp_path, fake, n_trials=12, n_jobs=2)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert errors == []
    trials = stored(tmp_path)
    assert sorted(t.number for t in trials) == list(range(12))
    assert {t.state for t in trials} == {TrialState.COMPLETE}


def test_a_lost_worker_is_retried_once_with_the_same_parameters(tmp_path):
    lost: list[tuple[int, str]] = []
    fake = FakeLauncher(lambda n, attempt: WorkerLost("WorkerCrashedError: killed") if n == 1 else None)
    trials = sweep(tmp_path, fake, n_trials=3, n_jobs=2, on_lost=lambda n, reason: lost.append((n, reason)))
    assert trials[1].state == TrialState.FAIL
    assert trials[1].user_attrs["fail_reason"] == "worker lost: WorkerCrashedError: killed"
    (retry,) = retries_of(trials, 1)
    assert retry.params == trials[1].params and retry.state == TrialState.COMPLETE
    assert len(trials) == 4 and sum(t.state == TrialState.COMPLETE for t in trials) == 3  # the retry counts, once
    assert lost == [(1, "worker lost: WorkerCrashedError: killed")]


def test_a_retry_is_lost_again_at_most_max_retry_times(tmp_path):
    fake = FakeLauncher(lambda n, attempt: WorkerLost("node gone"))
    trials = sweep(tmp_path, fake, n_trials=1, max_retry=1)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]  # the trial and one retry
    assert retries_of(trials, 0) == [trials[1]]


@pytest.mark.parametrize("error, returned", [
    (TrialConfigError("no Ray node can run a trial asking for 4 CPU"), False),  # the launcher refuses it
    (ConfigCompositionException("Error merging override model.attention.num_blocks=2.5"), False),
    (ConfigError("model.attention.n_heads=3 must divide model.d_model=16"), True),  # the job's validation
])
def test_a_trial_config_error_fails_that_trial_only_and_is_not_retried(tmp_path, error, returned):
    fake = FakeLauncher(lambda n, attempt: error if n == 1 else None, returned=(ConfigError,) if returned else ())
    trials = sweep(tmp_path, fake, n_trials=3)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["fail_reason"] == f"invalid trial config: {error}"
    assert retries_of(trials, 1) == []


def test_a_job_error_or_a_non_finite_objective_fails_the_trial_and_the_sweep_goes_on(tmp_path):
    class NaN(FakeLauncher):
        def launch(self, job_overrides, initial_job_idx):
            (ret,) = super().launch(job_overrides, initial_job_idx)
            if "trial.number=2" in job_overrides[0]:
                ret.return_value = {"val/crps": float("nan")}
            return [ret]

    fake = NaN(lambda n, attempt: ValueError("loss is NaN at step 3") if n == 0 else None, returned=(ValueError,))
    trials = sweep(tmp_path, fake, n_trials=4, n_jobs=2)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == "ValueError: loss is NaN at step 3"
    assert trials[2].user_attrs["fail_reason"] == "objective is not finite: [nan]"
    assert all(retries_of(trials, n) == [] for n in range(4))


def test_a_pruned_job_is_a_pruned_trial_with_its_reason(tmp_path):
    fake = FakeLauncher(lambda n, attempt: optuna.TrialPruned("pruned at validation 1") if n == 0 else None,
                        returned=(optuna.TrialPruned,))
    trials = sweep(tmp_path, fake, n_trials=2)
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE]
    assert trials[0].user_attrs["prune_reason"] == "pruned at validation 1"


def test_a_broken_launcher_stops_the_sweep_once_the_other_slot_has_told_its_trial(tmp_path):
    # trial 0's launch fails while trial 1 runs (each waits for the other): trial 1 is still
    # told, and the sweep stops
    fake = FakeLauncher(lambda n, attempt: RuntimeError("Ray cluster unreachable") if n == 0 else None,
                        waits_for_start={0: 1}, waits_for={1: 0})
    with pytest.raises(RuntimeError, match="Ray cluster unreachable"):
        sweep(tmp_path, fake, n_trials=6, n_jobs=2)
    trials = stored(tmp_path)
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == "launcher failed: Ray cluster unreachable"
    assert trials[1].state == TrialState.COMPLETE
    # the other slot may have asked once more while trial 0 was being recorded, never again
    assert sorted(fake.attempts) in ([0, 1], [0, 1, 2])
    assert [t.state for t in retries_of(trials, 0)] in ([TrialState.WAITING], [TrialState.COMPLETE])
    assert TrialState.RUNNING not in {t.state for t in trials}


def test_an_interrupted_job_fails_its_trial_re_enqueues_it_and_stops_the_sweep(tmp_path):
    fake = FakeLauncher(lambda n, attempt: KeyboardInterrupt() if n == 1 else None)
    with pytest.raises(KeyboardInterrupt):
        sweep(tmp_path, fake, n_trials=3)
    trials = stored(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["fail_reason"] == INTERRUPTED_REASON
    assert trials[2].params == trials[1].params
    rerun = sweep(tmp_path, fake, n_trials=3)  # runs the retry, then the third trial: the lost one is not counted
    assert [t.state for t in rerun] == [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 2


def test_a_dead_workers_trial_turns_stale_is_retried_and_reported(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    lost: list[tuple[int, str]] = []
    chosen = settings(tmp_path, n_trials=1, heartbeat_interval=1, grace_period=1)
    open_study(chosen)  # the study exists
    dead = RDBStorage(url, heartbeat_interval=1, grace_period=1)  # a worker that asked, beat once, and died
    trial = optuna.load_study(study_name="s", storage=dead).ask(SPACE)
    dead.record_heartbeat(dead.get_trial_id_from_study_id_trial_number(dead.get_study_id_from_name("s"), trial.number))
    # a live worker finds the total reached, waits on the dead worker's trial until it turns stale,
    # then fails it, reports it and runs its retry
    trials = sweep(tmp_path, FakeLauncher(), n_trials=1, heartbeat_interval=1, grace_period=1,
                   on_lost=lambda n, reason: lost.append((n, reason)))
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert retries_of(trials, 0) == [trials[1]] and trials[1].params == trials[0].params
    assert lost == [(0, STALE_REASON)]


def test_workers_with_one_seed_do_not_propose_the_same_parameters(tmp_path):
    a, b = (open_study(settings(tmp_path, n_trials=4)) for _ in range(2))  # configured alike: same seed
    drawn = [a.ask(SPACE).params["x"], b.ask(SPACE).params["x"], a.ask(SPACE).params["x"]]
    assert len(set(drawn)) == 3
    alone = open_study(settings(tmp_path / "alone", n_trials=4))  # a lone worker keeps the seeded sequence
    reference = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    expected = [reference.ask(SPACE).params["x"] for _ in range(2)]
    assert [alone.ask(SPACE).params["x"] for _ in range(2)] == expected
    assert expected[0] == drawn[0]


