"""The sweep engine's slots, with a stand-in launcher (no training): no batch barrier, the
exact total, and how each way a trial can end is recorded. Seconds, not minutes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Optional

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from anyq.sweeping.engine import INTERRUPTED, StudyRunner, SweepSettings
from anyq.sweeping.errors import TrialConfigError, WorkerLost

SPACE = {"x": FloatDistribution(0.0, 1.0)}


class FakeLauncher:
    """Runs trial n for ``seconds[n]``; ``outcome(n, attempt)`` may replace its result."""

    def __init__(self, seconds: dict[int, float],
                 outcome: Optional[Callable[[int, int], Optional[object]]] = None,
                 waits_for: Optional[dict[int, int]] = None) -> None:
        self.seconds = seconds
        self.waits_for = waits_for or {}  # trial n runs until trial m has ended (at most seconds[n])
        self.ended: dict[int, threading.Event] = {}
        self.outcome = outcome or (lambda n, attempt: None)
        self.spans: dict[int, tuple[float, float]] = {}
        self.attempts: dict[int, int] = {}
        self.lock = threading.Lock()

    def launch(self, job_overrides, initial_job_idx):
        (overrides,) = job_overrides  # the engine launches one trial at a time
        number = int(dict(o.split("=", 1) for o in overrides)["trial.number"])
        with self.lock:
            attempt = self.attempts[number] = self.attempts.get(number, 0) + 1
            ended = self.ended.setdefault(number, threading.Event())
        start = time.monotonic()
        if number in self.waits_for:
            with self.lock:
                other = self.ended.setdefault(self.waits_for[number], threading.Event())
            other.wait(self.seconds[number])
        else:
            time.sleep(self.seconds.get(number, 0.05))
        self.spans[number] = (start, time.monotonic())
        ended.set()
        result = self.outcome(number, attempt)
        if isinstance(result, BaseException) and not isinstance(result, WorkerLost):
            raise result
        ret = JobReturn(overrides=list(overrides))
        if result is None:
            ret.status, ret.return_value = JobStatus.COMPLETED, {"val/crps": float(number)}
        else:
            ret.status, ret.return_value = JobStatus.FAILED, result
        return [ret]


def runner(tmp_path: Path, launcher: FakeLauncher, *, n_trials: int, n_jobs: int, barrier: bool = False,
           check: Callable[[list[str]], None] = lambda overrides: None) -> StudyRunner:
    settings = SweepSettings(study_name="s", storage_url=f"sqlite:///{tmp_path}/optuna.db", directions=["minimize"],
                             objectives=["val/crps"], n_trials=n_trials, n_jobs=n_jobs, barrier=barrier,
                             poll_seconds=0.05, sampler=optuna.samplers.RandomSampler(seed=0))
    return StudyRunner(settings, launcher.launch, trial_overrides=lambda t: [f"trial.number={t.number}"],
                       check=check)


@pytest.mark.parametrize("barrier", [False, True])
def test_a_free_slot_starts_the_next_trial_at_once_unless_batched(tmp_path, barrier):
    # trial 0 runs until trial 3 has ended: at once without a barrier; with one, trial 3
    # cannot start before trial 0 ends, so trial 0 runs its full 3 s
    fake = FakeLauncher({0: 60.0 if not barrier else 3.0}, waits_for={0: 3})
    study = runner(tmp_path, fake, n_trials=4, n_jobs=2, barrier=barrier).run(SPACE, [])
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 4
    end_of_slow = fake.spans[0][1]
    started_while_slow_ran = [n for n in (1, 2, 3) if fake.spans[n][0] < end_of_slow]
    if barrier:  # batch {0, 1}, then {2, 3}: the fast slot waited for the slow trial
        assert started_while_slow_ran == [1]
    else:  # trials 2 and 3 ran on the free slot while trial 0 still ran
        assert started_while_slow_ran == [1, 2, 3]


def test_lost_worker_is_retried_once_with_the_same_parameters(tmp_path):
    fake = FakeLauncher({}, lambda n, attempt: WorkerLost("WorkerCrashedError: killed") if n == 1 else None)
    study = runner(tmp_path, fake, n_trials=3, n_jobs=2).run(SPACE, [])
    trials = study.get_trials()
    lost = trials[1]
    assert lost.state == TrialState.FAIL and lost.system_attrs[INTERRUPTED]
    assert lost.user_attrs["fail_reason"] == "worker lost: WorkerCrashedError: killed"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retries) == 1 and retries[0].params == lost.params and retries[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3  # the total excludes the lost trial


@pytest.mark.parametrize("error", [
    TrialConfigError("no Ray node can run a trial asking for 4 CPU"),
    ConfigCompositionException("Error merging override model.attention.num_blocks=2.5"),
])
def test_trial_config_error_fails_that_trial_only_and_is_not_retried(tmp_path, error):
    def check(overrides: list[str]) -> None:
        if "trial.number=1" in overrides:
            raise error

    fake = FakeLauncher({})
    study = runner(tmp_path, fake, n_trials=3, n_jobs=1, check=check).run(SPACE, [])
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["fail_reason"] == f"invalid trial config: {error}"
    assert 1 not in fake.attempts  # never launched
    launched = runner(tmp_path / "b", FakeLauncher({}, lambda n, a: error if n == 0 else None), n_trials=2,
                      n_jobs=1)  # the same error raised by the launcher itself
    trials = launched.run(SPACE, []).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert not any(t.system_attrs.get("failed_trial") is not None for t in trials)


def test_job_error_fails_the_trial_and_the_sweep_goes_on(tmp_path):
    class Returned(FakeLauncher):  # Hydra's run_job caught the job's error and returned it
        def launch(self, job_overrides, initial_job_idx):
            if "trial.number=0" not in job_overrides[0]:
                return super().launch(job_overrides, initial_job_idx)
            ret = JobReturn(overrides=list(job_overrides[0]))
            ret.status, ret.return_value = JobStatus.FAILED, ValueError("loss is NaN at step 3")
            return [ret]

    study = runner(tmp_path, Returned({}), n_trials=3, n_jobs=2).run(SPACE, [])
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == "ValueError: loss is NaN at step 3"
    assert not any(t.system_attrs.get("failed_trial") is not None for t in trials)


def test_a_broken_launcher_stops_the_sweep_after_the_other_slot_finishes(tmp_path):
    fake = FakeLauncher({0: 0.05, 1: 1.0, 2: 1.0}, lambda n, a: RuntimeError("Ray cluster unreachable") if n == 0 else None)
    run = runner(tmp_path, fake, n_trials=4, n_jobs=2)
    with pytest.raises(RuntimeError, match="Ray cluster unreachable"):
        run.run(SPACE, [])
    trials = run.study.get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["fail_reason"] == \
        "launcher failed: Ray cluster unreachable"
    others = [n for n in fake.spans if n != 0]  # what the other slot had launched meanwhile
    assert all(trials[n].state == TrialState.COMPLETE for n in others)  # finished and recorded
    assert len(fake.spans) < 4  # no trial was started after the error
    assert TrialState.RUNNING not in {t.state for t in trials}
    assert [t.system_attrs.get("failed_trial") for t in trials if t.state == TrialState.WAITING] == [0]


def test_interrupt_fails_and_re_enqueues_the_running_trial(tmp_path):
    fake = FakeLauncher({}, lambda n, a: KeyboardInterrupt() if n == 1 else None)
    run = runner(tmp_path, fake, n_trials=3, n_jobs=1)
    with pytest.raises(KeyboardInterrupt):
        run.run(SPACE, [])
    states = [t.state for t in run.study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert run.study.get_trials()[1].user_attrs["fail_reason"] == "sweep interrupted"
