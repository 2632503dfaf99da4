"""Train/validation/test ranges on the panel's time axis.

A split is a half-open range ``[start, stop)`` of time indices in which the TARGET hours
of a window must lie. A window's history may reach back into earlier splits (the test
windows of 2018 look at December 2017), which is how a forecaster is used in practice and
how the MHLV paper evaluates.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from anyq.data.panel import Panel
from anyq.errors import DataError, first_line

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
DateLike = str | pd.Timestamp | dt.date | dt.datetime


@dataclass(frozen=True)
class SplitRanges:
    """Half-open ``(start, stop)`` time-index ranges for the target hours of each split."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    def __post_init__(self) -> None:
        for name in SPLIT_NAMES:
            start, stop = (int(v) for v in getattr(self, name))
            if not 0 <= start <= stop:
                raise DataError(f"split {name!r} has an invalid range [{start}, {stop})")
            object.__setattr__(self, name, (start, stop))

    def get(self, name: str) -> tuple[int, int]:
        if name not in SPLIT_NAMES:
            raise KeyError(f"unknown split {name!r}; expected one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)

    def describe(self, name: str, index: pd.DatetimeIndex) -> str:
        """``'2017-01-01 00:00 to 2017-12-31 23:00'``: the split's first and last target hour."""
        start, stop = self.get(name)
        if stop <= start or start >= len(index):
            return f"empty range [{start}, {stop})"
        last = min(stop, len(index)) - 1
        return f"{index[start]:%Y-%m-%d %H:%M} to {index[last]:%Y-%m-%d %H:%M}"


def inclusive_end(value: DateLike) -> pd.Timestamp:
    """The last hour included by an end date.

    Ends are inclusive. A bare date (``"2016-12-31"`` or a ``datetime.date``) includes that
    whole day, i.e. means ``2016-12-31 23:00``; a date with a time of day is that exact hour.
    """
    whole_day = (isinstance(value, str) and len(value.strip()) <= 10) or (
        isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    )
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:  # pandas' DateParseError is a ValueError
        raise DataError(f"{value!r} is not a date ({first_line(exc)})") from None
    if ts is pd.NaT:
        raise DataError(f"{value!r} is not a date")
    if ts.tzinfo is not None:  # the panel's axis is naive UTC, as the reader converts the data
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.normalize() + pd.Timedelta(hours=23) if whole_day else ts


def split_by_dates(
    panel: Panel, train_end: DateLike, val_end: DateLike, test_end: DateLike | None = None
) -> SplitRanges:
    """Consecutive splits ending at the given (inclusive) dates; ``test_end=None`` = end of data.

    The MHLV paper's splits are ``split_by_dates(panel, "2016-12-31", "2017-12-31",
    "2018-12-31")``: train up to 2016, validation 2017, test 2018.
    """
    ends = [inclusive_end(train_end), inclusive_end(val_end)]
    ends.append(panel.index[-1] if test_end is None else inclusive_end(test_end))
    for k in (1, 2):
        if not ends[k - 1] < ends[k]:
            raise DataError(
                f"split ends must increase: {SPLIT_NAMES[k - 1]} ends {ends[k - 1]} "
                f"but {SPLIT_NAMES[k]} ends {ends[k]}"
            )
    first, last = panel.index[0], panel.index[-1]
    stops = [int(np.clip((end - first) // pd.Timedelta(hours=1) + 1, 0, panel.n_steps)) for end in ends]
    starts = [0, stops[0], stops[1]]
    for name, start, stop, end in zip(SPLIT_NAMES, starts, stops, ends, strict=True):
        if stop <= start:
            raise DataError(
                f"split {name!r} (ending {end}) is empty: the data covers {first} to {last}"
            )
    if ends[2] > last:  # accepted (the data ends the test split), but never silently
        log.warning("data.split.test_end %s is after the data's last hour: the test split ends at %s", ends[2], last)
    return SplitRanges(*zip(starts, stops, strict=True))


def check_proportions(proportions: Sequence[float]) -> None:
    """Three positive, finite shares summing to at most 1; DataError otherwise."""
    shares = np.asarray(proportions, dtype=float)
    if shares.shape != (3,) or not np.isfinite(shares).all() or (shares <= 0).any() or shares.sum() > 1 + 1e-9:
        raise DataError(f"split proportions must be 3 positive shares summing to <= 1, got {list(proportions)}")


def split_by_proportions(
    panel: Panel, proportions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> SplitRanges:
    """Consecutive splits taking these shares of the time axis, cut at midnight.

    Cuts are moved to the nearest midnight so that every split holds whole days and daily
    evaluation origins are not split across two ranges. Shares summing to less than 1 leave
    the end of the data unused.
    """
    check_proportions(proportions)
    shares = np.asarray(proportions, dtype=float)
    cuts = np.round(np.cumsum(shares) * panel.n_steps).astype(np.int64)
    midnight = np.flatnonzero(panel.index.hour == 0)
    inner = cuts < panel.n_steps
    if midnight.size and inner.any():
        nearest = np.abs(midnight[None, :] - cuts[inner, None]).argmin(axis=1)
        cuts[inner] = midnight[nearest]
    cuts = np.minimum(cuts, panel.n_steps)
    starts = [0, int(cuts[0]), int(cuts[1])]
    for name, start, stop in zip(SPLIT_NAMES, starts, cuts, strict=True):
        if stop <= start:
            raise DataError(
                f"split {name!r} is empty with proportions {proportions} of {panel.n_steps} hours"
            )
    return SplitRanges(*((int(a), int(b)) for a, b in zip(starts, cuts, strict=True)))
