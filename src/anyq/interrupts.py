"""SIGTERM and SIGINT set a flag; the work stops at its next safe point.

A handler never raises: it records the first signal, calls the hooks registered with
:func:`on_request` (which only set events or send signals, never touch a database) and
returns, so no transaction is ever cut half-way. Loops that can stop early ask
:func:`requested` at their boundaries; :func:`stop_on_signals` turns a signal received
within its block into :class:`Terminated` (exit status 128 + the signal number: 143, 130)
once the block is left. A second signal takes the default action (ends at once).
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from types import FrameType
from typing import Callable, Iterator, Optional

HANDLED = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []
_hooks: list[Callable[[], None]] = []


class Terminated(SystemExit):
    """This process was asked to stop by a signal; exit status 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def requested() -> Optional[int]:
    """The first signal received within :func:`stop_on_signals`, or None."""
    return _received[0] if _received else None


def _handle(signum: int, frame: Optional[FrameType]) -> None:
    if _received:
        return
    _received.append(signum)
    for handled in HANDLED:  # a second signal ends the process without waiting
        signal.signal(handled, signal.SIG_DFL)
    for hook in list(_hooks):
        hook()


@contextmanager
def on_request(hook: Callable[[], None]) -> Iterator[None]:
    """Within the block, a signal calls ``hook`` once, from the handler (at once if one came)."""
    _hooks.append(hook)
    try:
        if _received:
            hook()
        yield
    finally:
        _hooks.remove(hook)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Install the handlers; after a signal, leaving the block raises :class:`Terminated`."""
    previous = {s: signal.getsignal(s) for s in HANDLED}
    _received.clear()
    for handled in HANDLED:
        signal.signal(handled, _handle)
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
