"""A dense hourly panel: all series on one shared hourly time axis.

Windows, splits, scoring and fingerprints all work on this one array, so the pivot
from long format is done once, vectorised, and missing hours are plain NaN.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from anyq.data.reader import REQUIRED_COLUMNS, check_unique, parse_dates, validate_hourly
from anyq.errors import DataError

HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True, eq=False)
class Panel:
    """``values[i, t]`` is series ``ids[i]`` at hour ``index[t]``; NaN where not observed.

    ``index`` spans the union of all series (first to last timestamp of any series), so a
    series that starts late is NaN before its start.
    """

    ids: tuple[str, ...]
    index: pd.DatetimeIndex
    values: np.ndarray

    def __post_init__(self) -> None:
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "ids", tuple(str(i) for i in self.ids))
        # One resolution everywhere (pandas may build microsecond indexes): stable fingerprints.
        object.__setattr__(self, "index", pd.DatetimeIndex(self.index).as_unit("ns"))
        if values.shape != (len(self.ids), len(self.index)):
            raise DataError(
                f"panel values have shape {values.shape}, expected "
                f"({len(self.ids)} series, {len(self.index)} hours)"
            )
        if len(self.index) > 1 and not (np.diff(self.index.asi8) == HOUR.value).all():
            raise DataError("panel index is not a regular hourly index")

    @classmethod
    def from_long(cls, frame: pd.DataFrame, where: str = "data") -> Panel:
        """Pivot a long frame (``unique_id``, ``ds``, ``y``) onto the hourly grid."""
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(f"{where}: missing column(s) {', '.join(missing)}")
        if frame.empty:
            raise DataError(f"{where}: no rows")
        ds = parse_dates(frame["ds"], where)
        long = pd.DataFrame(
            {"unique_id": frame["unique_id"].astype(str).to_numpy(), "ds": ds.to_numpy(),
             "y": frame["y"].astype("float64").to_numpy()}
        )
        check_unique(long, where)
        validate_hourly(long, where)
        codes, ids = pd.factorize(long["unique_id"], sort=True)
        start = long["ds"].min()
        index = pd.date_range(start, long["ds"].max(), freq="h")
        pos = (long["ds"] - start).to_numpy().astype(np.int64) // HOUR.value
        values = np.full((len(ids), len(index)), np.nan, dtype=np.float32)
        values[codes, pos] = long["y"].to_numpy(np.float32)
        empty = np.isnan(values).all(axis=1)
        if empty.any():
            raise DataError(f"{where}: series {ids[int(np.argmax(empty))]!r} has no observed values")
        return cls(ids=tuple(ids), index=index, values=values)

    def to_long(self, dropna: bool = True) -> pd.DataFrame:
        """Long frame sorted by (``unique_id``, ``ds``); ``dropna`` leaves out missing hours."""
        n, t = self.values.shape
        frame = pd.DataFrame(
            {
                "unique_id": np.repeat(np.asarray(self.ids, dtype=object), t),
                "ds": np.tile(self.index.to_numpy(), n),
                "y": self.values.reshape(-1).astype(np.float64),
            }
        )
        if dropna:
            frame = frame[frame["y"].notna()].reset_index(drop=True)
        return frame

    def fingerprint(self) -> str:
        """Short sha256 of ids, time index and values: equal data gives equal fingerprints."""
        digest = hashlib.sha256()
        digest.update("\x1f".join(self.ids).encode())
        digest.update(self.index.asi8.astype("<i8").tobytes())
        values = np.where(np.isnan(self.values), np.float32(np.nan), self.values)  # one NaN bit pattern
        digest.update(values.astype("<f4").tobytes())
        return digest.hexdigest()[:16]

    @property
    def n_series(self) -> int:
        return len(self.ids)

    @property
    def n_steps(self) -> int:
        return len(self.index)

    def scale(self) -> np.ndarray:
        """Per-series mean |y| over observed hours, float64 ``[n_series]`` (for normalised scores)."""
        return np.nanmean(np.abs(self.values.astype(np.float64)), axis=1)

    def position(self, stamp: str | pd.Timestamp) -> int:
        """Time index of ``stamp`` (must be on the panel's grid)."""
        ts = pd.Timestamp(stamp)
        offset = ts - self.index[0]
        if offset % HOUR != pd.Timedelta(0):
            raise DataError(f"{ts} is not on the panel's hourly grid starting {self.index[0]}")
        return int(offset // HOUR)
