"""A signal asks the process to stop; the work stops at its next safe point.

SIGTERM (a scheduler, ``kill``, ``timeout``) and SIGINT (Ctrl-C) only record that a stop
was asked (:func:`requested`) and call the hooks registered with :func:`on_request`; the
handler raises nothing, so no database transaction, file write or data loading is cut
half-way. The work polls :func:`requested` where stopping is safe: a Lightning fit between
two steps (:class:`anyq.training.stopping.StopOnRequest`, and Lightning's own SIGTERM
handling, which composes its handler with this one), a job after its fit (no test, run
closed KILLED), a study between cells or trials. A second signal takes the default action:
the process ends at once.

Leaving :func:`stop_on_signals` after a signal raises :class:`Terminated`, a ``SystemExit``
with the conventional status 128 + signal number (143 for SIGTERM, 130 for SIGINT).

A launcher's worker process (joblib's loky workers) runs jobs with no ``anyq-train`` around
them: :func:`watch_worker_process` keeps its handlers for the process's life, and the parent
passes its stop on (:func:`forward_to_children`, registered with :func:`on_request`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Callable, Iterator, Optional

from anyq.errors import Terminated

HANDLED = (signal.SIGTERM, signal.SIGINT)

_received: list[int] = []  # the first signal received, once one is
_hooks: list[Callable[[], None]] = []  # called once, from the handler, on the first signal
_depth = [0]  # nesting of stop_on_signals blocks: the outermost installs and forgets
_worker = [False]  # a launcher's worker process (watch_worker_process): a second signal is ignored


def requested() -> Optional[int]:
    """The first signal received (``signal.SIGTERM`` or ``signal.SIGINT``), or None."""
    return _received[0] if _received else None


def stop_if_requested() -> None:
    """A safe point: raise :class:`Terminated` if a stop was asked, else return.

    Raises:
        Terminated: a signal was received (:func:`requested`).
    """
    signum = requested()
    if signum is not None:
        raise Terminated(signum)


@contextmanager
def on_request(hook: Callable[[], None]) -> Iterator[None]:
    """Within the block, ``hook()`` is called once when the first signal arrives (at once if
    one already has). It runs inside the signal handler: it may only set events or flags or
    send signals, never wait or write to a store."""
    if requested() is not None:
        hook()
        yield
        return
    _hooks.append(hook)
    try:
        yield
    finally:
        if hook in _hooks:
            _hooks.remove(hook)


def watching() -> bool:
    """Whether this process watches for signals (a :func:`stop_on_signals` block is open,
    or :func:`watch_worker_process` ran)."""
    return _depth[0] > 0


def _handle(signum: int, frame: Optional[FrameType]) -> None:
    if _received:  # a second signal: the default action, the process ends now
        if _worker[0]:
            return  # a worker: the parent forwards what a terminal's Ctrl-C sent the group already
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _received.append(signum)
    hooks = list(_hooks)
    _hooks.clear()
    for hook in hooks:
        hook()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT set the stop flag (:func:`requested`); the
    previous handlers are restored after. Outside the main thread (where Python cannot
    install handlers) the block only watches the flag.

    Raises:
        Terminated: on leaving the block, however it ends, once a signal was received
            (the exception it ended with, if any, is chained).
    """
    installed = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in HANDLED} if installed else {}
    if _depth[0] == 0:
        _received.clear()
    _depth[0] += 1
    for handled in previous:
        signal.signal(handled, _handle)
    try:
        yield
    except BaseException as exc:
        signum = requested()
        if signum is None or (isinstance(exc, Terminated) and exc.signum == signum):
            raise
        raise Terminated(signum) from exc
    else:
        stop_if_requested()
    finally:
        _depth[0] -= 1
        for handled, handler in previous.items():
            if handler is not None:  # None: installed from outside Python, cannot be put back
                signal.signal(handled, handler)
        if _depth[0] == 0:
            _received.clear()
            _hooks.clear()


def watch_worker_process() -> None:
    """In a launcher's worker process (a ``multiprocessing`` child such as joblib's loky
    workers, which run job after job): SIGTERM and SIGINT set the stop flag from now on, for
    the process's life, and a stop once asked stays asked, so that a job the worker starts
    afterwards stops at its first safe point. A repeated signal is ignored: a terminal's
    Ctrl-C reaches the whole process group and the parent forwards its own as well. Outside
    the main thread it does nothing. Idempotent."""
    if watching() or threading.current_thread() is not threading.main_thread():
        return
    _depth[0] += 1  # never left: the handlers stay
    _worker[0] = True
    for handled in HANDLED:
        signal.signal(handled, _handle)


def in_worker_process() -> bool:
    """Whether :func:`watch_worker_process` ran in this process."""
    return _worker[0]


def forward_to_children() -> None:
    """Send the signal received (:func:`requested`) on to this process's ``multiprocessing``
    children: joblib's loky workers, which run a launcher's jobs (:func:`watch_worker_process`).
    Safe in a signal handler: it only sends signals. Register it with :func:`on_request`
    only where the children are such workers (an in-process job's data-loader workers must
    not be signalled: they end with an error instead of stopping)."""
    signum = requested()
    if signum is None:
        return
    try:
        children = multiprocessing.active_children()
    except RuntimeError:  # the main thread was starting a child just now: its set changed size
        return
    for child in children:
        if child.pid is not None:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:  # ended meanwhile
                pass
