"""How an error reads in one line: on a run's ``error`` tag, a trial's fail reason, a log line
or a command's ``error:`` line. Every module below ``anyq.app`` raises typed errors whose
first line says what went wrong; this is the one place that cuts a message to that line."""

from __future__ import annotations

LIMIT = 500  # characters: MLflow tags and Optuna attributes stay readable


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
