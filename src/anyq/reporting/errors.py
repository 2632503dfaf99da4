"""What the report layer raises: one line each, turned into an exit code by ``anyq.app``."""

from __future__ import annotations


class ReportError(RuntimeError):
    """The report cannot be made from what the store holds (one line, for the command line)."""
