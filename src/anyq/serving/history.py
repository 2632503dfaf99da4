"""Long-format series (``unique_id``, ``ds``, ``y``) to one history window per series, and back.

Each series gets one forecast origin (the first forecast hour): right after its last
observation, or one shared ``origin`` for all series (a backtest). The history is the
``history_length`` hours before the origin, and it must be complete: a forecast service has
no business guessing missing load, so a gap is an error naming the series, not a fill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from anyq.data.panel import Panel
from anyq.data.reader import parse_dates
from anyq.errors import DataError, RequestError


@dataclass(frozen=True)
class HistoryWindows:
    """``history[i]`` holds the ``L`` hours of series ``ids[i]`` before ``origin[i]``."""

    ids: np.ndarray
    history: np.ndarray
    origin: pd.DatetimeIndex


def history_windows(frame: pd.DataFrame, history_length: int, origin: str | None = None,
                     earlier: bool = False, where: str = "input") -> HistoryWindows:
    """Cut the last complete history of every series (or the one before ``origin``).

    ``origin`` is read as the data's stamps are (:func:`anyq.data.reader.parse_dates`): one
    with a UTC offset (``2021-03-01T00:00Z``, ``…+01:00``) is converted to UTC, the panel's
    time axis. RequestError (one line) for an origin that is no date or off the hourly grid.
    ``earlier``: each history also holds every hour of the frame before those
    ``history_length`` (NaN where a series has none, and gaps there are kept as NaN), for a
    model that calibrates online from them or replaces holiday hours from them (:mod:`anyq.serving.bundle`).
    ``where`` names the frame in a DataError (its file).
    """
    panel = Panel.from_long(frame, where=where)
    observed = ~np.isnan(panel.values)
    n, t = observed.shape
    first = observed.argmax(axis=1)
    if origin is None:
        start = t - observed[:, ::-1].argmax(axis=1)  # one past the last observation
    else:
        try:
            stamp = parse_dates(pd.Series([origin]), "--origin", column="origin").iloc[0]
        except DataError:
            raise RequestError(f"--origin {origin!r} is not a date (expected ISO 8601, e.g. "
                               f"'2021-03-01 00:00' or '2021-03-01T00:00Z')") from None
        try:
            position = panel.position(stamp)
        except (ValueError, DataError) as exc:
            raise RequestError(f"--origin {origin!r}: {exc}") from None
        start = np.full(n, position, dtype=np.int64)
    width = max(history_length, int(start.max())) if earlier else history_length
    hours = start[:, None] - width + np.arange(width)
    inside = (hours >= 0) & (hours < t)
    values = np.where(inside, panel.values[np.arange(n)[:, None], np.clip(hours, 0, t - 1)], np.nan)
    stamps = panel.index[0] + pd.to_timedelta(start, unit="h")
    short = start - history_length < first
    if short.any():
        i = int(np.argmax(short))
        have = max(0, int(start[i] - first[i]))
        raise RequestError(
            f"history of series {panel.ids[i]!r} is too short: {have} hour(s) before its forecast origin "
            f"{stamps[i]:%Y-%m-%d %H:%M}, the model needs {history_length}"
        )
    if origin is not None:  # an origin after a series' last actual: its hours up to the origin are missing
        after = t - observed[:, ::-1].argmax(axis=1)  # one past each series' last observation
        late = start > after
        if late.any():
            i = int(np.argmax(late))
            last = panel.index[0] + pd.Timedelta(hours=int(after[i]) - 1)
            raise RequestError(
                f"--origin {stamps[i]:%Y-%m-%d %H:%M} is after the last hour of series {panel.ids[i]!r}, "
                f"{last:%Y-%m-%d %H:%M}: give its actual load up to the origin, or forecast from "
                f"{last + pd.Timedelta(hours=1):%Y-%m-%d %H:%M} (no --origin)"
            )
    gaps = np.isnan(values[:, -history_length:]).sum(axis=1)
    if gaps.any():
        i = int(np.argmax(gaps > 0))
        raise RequestError(
            f"history of series {panel.ids[i]!r} has {int(gaps[i])} missing (NaN) hour(s) in the "
            f"{history_length} before its forecast origin {stamps[i]:%Y-%m-%d %H:%M}"
        )
    return HistoryWindows(ids=np.asarray(panel.ids, dtype=object), history=values, origin=stamps)


def forecasts_to_long(windows: HistoryWindows, forecast: np.ndarray, levels: np.ndarray) -> pd.DataFrame:
    """Long frame (``unique_id``, ``ds``, ``level``, ``value``) from ``forecast [N, H, Q]``."""
    n, horizon, num_q = forecast.shape
    ds = windows.origin.to_numpy()[:, None] + pd.to_timedelta(np.arange(horizon), unit="h").to_numpy()[None, :]
    return pd.DataFrame(
        {
            "unique_id": np.repeat(windows.ids, horizon * num_q),
            "ds": np.repeat(ds.reshape(-1), num_q),
            "level": np.tile(np.asarray(levels, dtype=np.float64), n * horizon),
            "value": forecast.reshape(-1),
        }
    )
