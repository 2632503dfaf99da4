"""Signals end the process with the conventional status, after every record is closed.

SIGTERM (a scheduler, ``kill``, ``timeout``) and SIGINT (Ctrl-C) raise :class:`Terminated`
in the main thread: a ``SystemExit`` whose code is 128 + the signal number (143, 130).
On its way out it closes what is open, as any interrupt does: the MLflow run is KILLED
(``anyq.tracking.runs.open_run``), a sweep fails and re-enqueues its running trials and
kills its parent run (``anyq.sweeping.engine``). Nothing in between may swallow it:
Lightning re-raises a ``SystemExit`` it did not raise itself, Hydra catches only
``Exception``. A second signal while closing takes the default action (ends at once).

A signal that lands inside a database call (MLflow's or Optuna's store, SQLAlchemy,
sqlite3) is not raised there: an exception between a statement and its commit leaves
SQLite's write lock with a connection that nobody closes, and every later write, the
closing of this very run included, waits on it. The signal is sent again
:data:`REDELIVER_S` later, until it lands outside such a call. During a Lightning run a
deferred SIGTERM is not sent again: Lightning's own handler (which runs before this one) makes
its loops raise ``SIGTERMException`` at the next boundary, which counts as the same signal
(:func:`as_terminated`).

Lightning registers its own SIGTERM handler during ``fit`` and calls the one found here
after it, so the trainer stops as well.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator, Optional

from pytorch_lightning.utilities.exceptions import SIGTERMException

HANDLED = (signal.SIGTERM, signal.SIGINT)
REDELIVER_S = 0.05  # seconds until a signal deferred out of a database call is sent again
# modules whose calls hold a database transaction or lock: never interrupted mid-way
DATABASE_MODULES = ("sqlalchemy", "sqlite3", "mlflow.store", "optuna.storages")
LIGHTNING_SIGNALS = "pytorch_lightning.trainer.connectors.signal_connector"  # its SIGTERM handler's module


class Terminated(SystemExit):
    """This process was asked to stop by a signal; exit status 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def inside_database_call(frame: Optional[FrameType]) -> bool:
    """Whether ``frame`` or a caller of it runs code of :data:`DATABASE_MODULES`."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if any(module == name or module.startswith(name + ".") for name in DATABASE_MODULES):
            return True
        frame = frame.f_back
    return False


_received: list[int] = []  # the signals this process was asked to stop by, first first


def as_terminated(exc: BaseException) -> Optional[Terminated]:
    """The :class:`Terminated` an interrupt stands for: ``exc`` itself, or Lightning's
    ``SIGTERMException`` (raised at a loop boundary after its own SIGTERM handler ran, which
    happens when this module deferred the signal out of a database call). None otherwise."""
    if isinstance(exc, Terminated):
        return exc
    if isinstance(exc, SIGTERMException):
        return Terminated(signal.SIGTERM)
    return None


def _called_by_lightning() -> bool:
    """Whether this handler runs from Lightning's composed SIGTERM handler (its module is
    :data:`LIGHTNING_SIGNALS`), i.e. during a ``Trainer`` run, whose loops raise
    ``SIGTERMException`` at their next boundary. Pinned by ``tests/test_signals.py``."""
    caller = sys._getframe(2)  # this function <- _raise_terminated <- its caller
    return caller.f_globals.get("__name__") == LIGHTNING_SIGNALS


def _raise_terminated(signum: int, frame: Optional[FrameType]) -> None:
    if not _received:
        _received.append(signum)
    if inside_database_call(frame):
        if signum == signal.SIGTERM and _called_by_lightning():
            return  # Lightning stops at its next loop boundary, outside this call
        timer = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    for handled in HANDLED:  # a second signal ends the process without waiting for cleanup
        signal.signal(handled, signal.SIG_DFL)
    raise Terminated(signum)


@contextmanager
def exit_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Terminated`; handlers restored after.

    Whatever way the block ends after a signal (Lightning's own ``SIGTERMException``, or a
    deferred signal that found the work done), it ends with :class:`Terminated`: exit status
    128 + the first signal's number.
    """
    previous = {s: signal.getsignal(s) for s in HANDLED}
    _received.clear()
    for handled in HANDLED:
        signal.signal(handled, _raise_terminated)
    try:
        yield
    except SystemExit as exc:
        if isinstance(exc, Terminated) or not _received:
            raise
        raise Terminated(_received[0]) from exc
    else:
        if _received:
            raise Terminated(_received[0])
    finally:
        for handled, handler in previous.items():
            signal.signal(handled, handler)
