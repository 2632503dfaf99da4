"""Every typed error anyq raises, and how an error reads in one line.

Declared once, below every package, so that a layer raises or catches another's error
without importing it; grouped below by the layer that raises them. Library code raises these
with a first line that says what is wrong; only ``anyq.app`` (and the Hydra plugins at its
level) turns them into exit statuses and one ``error:`` line (docs/design.md §6).
:func:`first_line` is the one place that cuts a message to that line: on a run's ``error``
tag, a trial's fail reason, a log line or a command's ``error:`` line; :func:`closest` is the
one place that picks the name a misspelt one meant (``did you mean …?``).
"""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterable
from typing import Optional

LIMIT = 500  # characters: MLflow tags and Optuna attributes stay readable


def closest(word: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate ``word`` most likely misspells (difflib's ratio >= 0.6), or None; never
    ``word`` itself (a name that exists but is the wrong kind is no misspelling)."""
    found = difflib.get_close_matches(word, [str(c) for c in candidates if str(c) != word], n=1, cutoff=0.6)
    return found[0] if found else None


def counted(n: int, word: str) -> str:
    """``1 seed``, ``3 seeds``: a count and its noun, as messages and tables write them."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def first_line(exc: BaseException | str, *, with_type: bool = False, limit: int = LIMIT) -> str:
    """The first non-empty line of ``exc``'s message, at most ``limit`` characters.

    An empty message gives the class name; ``with_type`` prefixes it (``"ValueError: ..."``),
    for a reason read away from the code that raised it. A string is taken as the message.
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if isinstance(exc, BaseException) and (with_type or not line):
        name = type(exc).__name__
        line = f"{name}: {line}" if line else name
    return line[:limit]


def first_sentence(exc: BaseException) -> str:
    """The first sentence of :func:`first_line` (a library's long explanation cut to its point)."""
    return first_line(str(exc).split(". ")[0]) or type(exc).__name__


# --- settings and configs: one line, exit 2, before anything is trained


class SettingError(ValueError):
    """A setting that cannot work, in one line; ``keys`` are the dotted settings it names."""

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = tuple(keys)


class ConfigError(SettingError):
    """An impossible configuration, reported in one line before any training; ``keys`` are
    the settings it names (empty when it names none)."""


class OverrideError(ConfigError):
    """A command-line override that cannot compose, in one line."""


# --- input data
# The one exception type of the data layer.
#
# Every problem with input data (a file, a column, a date, a split) raises ``DataError``
# with a single-line message that names what is wrong and where, so that a failed run
# can be diagnosed from its last log line.


class DataError(ValueError):
    """Input data that cannot be used as given; the message says which file/column/series."""


# --- training


class CheckpointError(ConfigError):
    """A checkpoint named by ``resume=`` that cannot be used for this run (one line)."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run cannot continue meaningfully."""


# --- signals: the process was asked to stop


class Terminated(SystemExit):
    """The process was asked to stop by signal ``signum``; exit status 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"

    def __reduce__(self) -> tuple[type, tuple[int]]:  # pickled (a job's result) as it was built
        return Terminated, (self.signum,)


class JobStopped(Exception):
    """A job in a launcher's worker process was stopped by a signal, its run closed KILLED.

    An ``Exception``, unlike :class:`Terminated`: Hydra records it as the job's failure and
    the launcher goes on collecting the other jobs, where a ``SystemExit`` would make joblib
    kill the other workers while they close their runs."""


# --- the tracking store


class StoreUnwritable(BaseException):
    """Runs cannot be recorded: the store (or the disk under it) is full or read-only.

    Waiting does not help, unlike a busy store. A ``BaseException`` like an interrupt, so that
    nothing on the way treats it as the job's own failure (a baseline's, a trial's): it ends
    the command (one line, exit 1 in ``anyq-train``) after the open run is closed FAILED, or,
    when even that write fails, left for :func:`anyq.tracking.orphans.close_orphaned_runs`.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.run_state = ""  # what became of the open run, said by the layer that opened it

    def __str__(self) -> str:
        state = f"; {self.run_state}" if self.run_state else ""
        return f"cannot write the tracking store or outputs: {self.reason}{state}"


class StoreNotFoundError(FileNotFoundError):
    """A command that only reads was pointed at a place where no store exists (one line)."""


# --- studies and their trials
# What can go wrong around a trial, sorted by who must act.
#
# The sweep engine records every trial by the class of what stopped it (see
# :class:`anyq.sweeping.engine.JobObjective`), so launchers and the sweeper raise these:
#
# - :class:`SpaceError`: the search space does not fit the config or the stored study; found
#   before the study hands out its first trial, so nothing is recorded. One line, exit 2.
# - :class:`TrialConfigError`: one trial's overrides cannot make a valid job (they fail to
#   compose, or ask for resources no machine has). That trial is FAIL with the reason, never
#   retried (it would fail again), and the sweep goes on.
# - :class:`WorkerLost`: the process running a trial died (a killed Ray worker, a node gone).
#   The trial is FAIL and retried with the same parameters; the retry does not count again toward the total.
# - :class:`StudyFailed`: trials or cells were run and none of them finished; the study's
#   parent run is closed FAILED with the reason. One line, exit 1.


class SpaceError(ConfigError):
    """The search space cannot be searched as given; raised before any trial exists."""


class TrialConfigError(Exception):
    """This trial's configuration cannot run anywhere; the reason is one line."""


class WorkerLost(Exception):
    """The worker process or machine running the trial died before it reported."""


class SweepRefused(BaseException):
    """A sweep stopped before its first trial by a :class:`ConfigError` or, its data unreadable,
    a :class:`DataError` (``error``).

    A ``BaseException`` so that it passes Hydra's error printer (which catches ``Exception``
    and exits 1) and reaches ``anyq-train``, which reports config errors in one line, exit 2.
    """

    def __init__(self, error: ConfigError | DataError) -> None:
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


# --- reports
# What the report layer raises: one line each, turned into an exit code by ``anyq.app``.


class ReportError(RuntimeError):
    """The report cannot be made from what the store holds (one line, for the command line)."""


class WindowMismatchError(ValueError):
    """Two forecasts that a paired test or an ensemble needs on the same windows are not."""


class BrowserError(RuntimeError):
    """No browser, or the UI did not come up (one line)."""


# --- serving
# The one exception type of a forecast request.


class RequestError(ValueError):
    """A request the model cannot answer as asked (levels, history length, missing values).

    The message is one line naming what is wrong; the served model turns it into an HTTP 400.
    """


class ModelFileError(ValueError):
    """A checkpoint, spec or weights file that does not hold a forecaster this config builds, or
    a run that logged no model."""
