"""The one exception type of the data layer.

Every problem with input data (a file, a column, a date, a split) raises ``DataError``
with a single-line message that names what is wrong and where, so that a failed run
can be diagnosed from its last log line.
"""

from __future__ import annotations


class DataError(ValueError):
    """Input data that cannot be used as given; the message says which file/column/series."""
