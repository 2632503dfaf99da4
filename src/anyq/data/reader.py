"""Read long-format load data (``unique_id``, ``ds``, ``y``) from CSV or Parquet.

The MHLV file (``mhlv/M/df_y.csv``) is read as shipped: dates like ``01-Jan-2006 00:00:00``,
ids ``Var1``..``Var35``, NaN gaps and series that start years after the others. ISO 8601
dates are accepted too. Extra columns (an index column, exogenous variables) are ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from anyq.data.errors import DataError

REQUIRED_COLUMNS = ("unique_id", "ds", "y")
# The format that parses most of the first 1000 dates is used for the whole column.
DATE_FORMATS = ("%d-%b-%Y %H:%M:%S", "ISO8601")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def read_long_frame(path: str | Path) -> pd.DataFrame:
    """Read ``path`` into a frame with ``unique_id`` (str), ``ds`` (datetime64), ``y`` (float64).

    Rows are sorted by (``unique_id``, ``ds``). Missing ``y`` stays NaN (a gap); the rest of
    the checks (hourly grid) belong to :meth:`anyq.data.panel.Panel.from_long`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    raw = _read_raw(path)
    frame = pd.DataFrame(
        {
            "unique_id": raw["unique_id"].astype(str),
            "ds": parse_dates(raw["ds"], where=str(path)),
            "y": _parse_values(raw["y"], where=str(path)),
        }
    )
    check_unique(frame, where=str(path))
    return frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)


def _read_raw(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    try:
        if name.endswith(_PARQUET_SUFFIXES):
            raw = pd.read_parquet(path)
            _check_columns(raw.columns, path)
            return raw
        if name.endswith(_CSV_SUFFIXES):
            _check_columns(pd.read_csv(path, nrows=0).columns, path)
            # Only the three columns are parsed: the MHLV file carries an unnamed index column.
            return pd.read_csv(
                path, usecols=list(REQUIRED_COLUMNS), dtype={"unique_id": str, "ds": str}
            )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read: {reason}") from exc
    raise DataError(f"{path}: unsupported file type (expected .csv or .parquet)")


def _check_columns(columns: pd.Index, path: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, columns))}"
        )


def parse_dates(values: pd.Series, where: str = "data") -> pd.Series:
    """Parse the ``ds`` column; tz-aware stamps are converted to naive UTC."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        text = values.astype("string")
        empty = text.isna() | (text.str.strip() == "")
        if empty.any():
            raise DataError(f"{where}: column 'ds' has {int(empty.sum())} empty date(s)")
        parsed = _parse_with_known_format(text, where)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def _parse_with_known_format(text: pd.Series, where: str) -> pd.Series:
    sample = text.iloc[:1000]
    parsed_counts = [
        int(pd.to_datetime(sample, format=fmt, errors="coerce").notna().sum()) for fmt in DATE_FORMATS
    ]
    if max(parsed_counts) == 0:
        raise DataError(
            f"{where}: column 'ds' has unparseable dates, e.g. {sample.iloc[0]!r} "
            f"(expected ISO 8601 or '%d-%b-%Y %H:%M:%S' like '01-Jan-2006 00:00:00')"
        )
    fmt = DATE_FORMATS[int(np.argmax(parsed_counts))]  # the format that fits the first rows best
    parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    bad = parsed.isna()
    if bad.any():
        raise DataError(
            f"{where}: column 'ds' has {int(bad.sum())} unparseable date(s), e.g. "
            f"{text[bad].iloc[0]!r} (format {fmt!r} inferred from the first rows)"
        )
    return parsed


def _parse_values(values: pd.Series, where: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = numbers.isna() & values.notna()
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        bad &= values.astype("string").str.strip().fillna("") != ""
    if bad.any():
        raise DataError(
            f"{where}: column 'y' has {int(bad.sum())} non-numeric value(s), "
            f"e.g. {values[bad].iloc[0]!r}"
        )
    return numbers


def check_unique(frame: pd.DataFrame, where: str = "data") -> None:
    """Raise if a (``unique_id``, ``ds``) pair occurs more than once."""
    dup = frame.duplicated(["unique_id", "ds"], keep="first")
    if dup.any():
        first = frame[dup].iloc[0]
        raise DataError(
            f"{where}: {int(dup.sum())} duplicate (unique_id, ds) row(s), "
            f"e.g. unique_id={first['unique_id']!r} ds={first['ds']}"
        )


def validate_hourly(frame: pd.DataFrame, where: str = "data") -> None:
    """Raise unless every series sits on one common hourly grid.

    The detected step is the smallest step between consecutive rows of any series: it must
    be one hour (longer steps are gaps), which refuses daily and sub-hourly data alike.
    Every timestamp must also lie a whole number of hours from the first one.
    """
    if frame.empty:
        raise DataError(f"{where}: no rows")
    ordered = frame.sort_values(["unique_id", "ds"], kind="stable")
    ds = ordered["ds"].to_numpy("datetime64[ns]").astype(np.int64)
    same = ordered["unique_id"].to_numpy()[1:] == ordered["unique_id"].to_numpy()[:-1]
    steps = np.diff(ds)[same]
    steps = steps[steps > 0]
    hour = np.int64(3_600_000_000_000)
    if steps.size and steps.min() != hour:
        raise DataError(
            f"{where}: expected hourly data but detected a step of {pd.Timedelta(int(steps.min()))}"
        )
    off_grid = (ds - ds.min()) % hour != 0
    if off_grid.any():
        first = int(np.argmax(off_grid))
        row = ordered.iloc[first]
        step = pd.Timedelta(int((ds[first] - ds.min()) % hour))
        raise DataError(
            f"{where}: expected hourly data but series {row['unique_id']!r} has ds={row['ds']} "
            f"off the hourly grid by {step}"
        )
