"""What can go wrong around a trial, sorted by who must act.

The sweep engine records every trial by the class of what stopped it (see
:class:`anyq.sweeping.engine.JobObjective`), so launchers and the sweeper raise these:

- :class:`SpaceError`: the search space does not fit the config or the stored study; found
  before the study hands out its first trial, so nothing is recorded. One line, exit 2.
- :class:`TrialConfigError`: one trial's overrides cannot make a valid job (they fail to
  compose, or ask for resources no machine has). That trial is FAIL with the reason, never
  retried (it would fail again), and the sweep goes on.
- :class:`WorkerLost`: the process running a trial died (a killed Ray worker, a node gone).
  The trial is FAIL and retried with the same parameters; the retry does not count again toward the total.
- :class:`StudyFailed`: trials or cells were run and none of them finished; the study's
  parent run is closed FAILED with the reason. One line, exit 1.
"""

from __future__ import annotations

from anyq.training.schema import ConfigError


class SpaceError(ConfigError):
    """The search space cannot be searched as given; raised before any trial exists."""


class TrialConfigError(Exception):
    """This trial's configuration cannot run anywhere; the reason is one line."""


class WorkerLost(Exception):
    """The worker process or machine running the trial died before it reported."""


class SweepRefused(BaseException):
    """A sweep stopped before its first trial by a :class:`ConfigError` (``error``).

    A ``BaseException`` so that it passes Hydra's error printer (which catches ``Exception``
    and exits 1) and reaches ``anyq-train``, which reports config errors in one line, exit 2.
    """

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.error = error


class StudyFailed(BaseException):
    """Trials or cells of a study were run and none finished; ``reason`` is one line.

    A ``BaseException`` for the reason :class:`SweepRefused` is: ``anyq-train`` reports it in
    one line with exit status 1, after the parent run is closed FAILED.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
