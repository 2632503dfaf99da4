"""The one exception type of a forecast request."""

from __future__ import annotations


class RequestError(ValueError):
    """A request the model cannot answer as asked (levels, history length, missing values).

    The message is one line naming what is wrong; the served model turns it into an HTTP 400.
    """


class ModelFileError(ValueError):
    """A checkpoint, spec or weights file that does not hold a forecaster this config builds."""
