"""What the real-data benchmark's peers share: the request, the series, the histories, the result.

Imported by the peers in their own environment (no anyq import). The request (JSON, written
by ``bench_real.py``) holds:

- ``csv``: long file with ``unique_id``, ``ds``, ``y`` (NaN: a missing hour) and ``y_filled``
  (anyq's gap filling, :func:`anyq.data.windows.fill_gaps`), each series from its first to
  its last observed hour on a complete hourly grid;
- ``train_end`` / ``val_end``: the last training / validation target hour;
- ``windows``: ``unique_id`` and ``origin`` (first target hour) of every test window, in the
  order the forecast rows must follow;
- ``history_length``, ``horizon_length``, ``levels`` (ascending), ``max_steps``, ``seed``,
  ``threads``.

The result is an ``.npz`` with ``forecast`` float32 [N, H, Q] and ``train_seconds`` /
``train_cpu_seconds`` (wall and process CPU time of training).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Series:
    """One series on its hourly grid: ``stamps`` [T], ``y`` [T] (NaN missing), ``filled`` [T]."""

    stamps: pd.DatetimeIndex
    y: np.ndarray
    filled: np.ndarray

    def position(self, stamp: pd.Timestamp) -> int:
        """Index of ``stamp`` on the grid; raises KeyError if it is not there."""
        return int(self.stamps.get_loc(stamp))


def load_request(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def load_series(csv: str) -> dict[str, Series]:
    """Every series of the request's CSV; raises ValueError when a series' grid is not hourly."""
    frame = pd.read_csv(csv, parse_dates=["ds"], dtype={"unique_id": str})
    out = {}
    for uid, part in frame.groupby("unique_id", sort=False):
        stamps = pd.DatetimeIndex(part["ds"])
        seconds = stamps.values.astype("datetime64[s]").astype(np.int64)
        if len(stamps) > 1 and not (np.diff(seconds) == 3600).all():
            raise ValueError(f"series {uid}: not a complete hourly grid")
        out[str(uid)] = Series(stamps, part["y"].to_numpy(np.float64), part["y_filled"].to_numpy(np.float64))
    return out


def histories(series: dict[str, Series], req: dict) -> np.ndarray:
    """The gap-filled ``history_length`` hours before each test origin, float64 [N, L].

    Raises ValueError when a history reaches before its series' first hour.
    """
    length = int(req["history_length"])
    out = np.empty((len(req["windows"]["origin"]), length))
    for k, (uid, origin) in enumerate(zip(req["windows"]["unique_id"], pd.to_datetime(req["windows"]["origin"]))):
        s = series[uid]
        stop = s.position(origin)
        if stop < length:
            raise ValueError(f"{uid} at {origin}: {stop} history hours, expected {length}")
        out[k] = s.filled[stop - length: stop]
    return out


def save_result(path: str, forecast: np.ndarray, train_seconds: float, train_cpu_seconds: float) -> None:
    np.savez(path, forecast=np.asarray(forecast, dtype=np.float32), train_seconds=np.float64(train_seconds),
             train_cpu_seconds=np.float64(train_cpu_seconds))
