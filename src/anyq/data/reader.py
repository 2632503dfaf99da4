"""Read long-format load data (``unique_id``, ``ds``, ``y``) from CSV or Parquet.

The MHLV file (``mhlv/M/df_y.csv``) is read as shipped: dates like ``01-Jan-2006 00:00:00``,
ids ``Var1``..``Var35``, NaN gaps and series that start years after the others. ISO 8601
dates are accepted too, with or without a UTC offset (``2021-03-28 03:00:00+02:00``): stamps
with offsets are converted to UTC, so a file whose offset changes at a daylight-saving switch
is one continuous hourly series. Extra columns (an index column, exogenous variables) are
ignored.

Every problem is a one-line :class:`DataError` naming the file, the column and an example
row (rows count from 1, the header not counted). What is refused and what is a gap:

- ``unique_id``: an empty id is refused (it would silently become the series ``"nan"``);
- ``ds``: empty, unparseable or out-of-range dates (pandas holds 1677..2262) are refused, and
  so is a column that mixes stamps with and without a UTC offset (ambiguous);
- ``y``: an empty cell, ``NA`` or ``NaN`` is a gap (missing hour); text, booleans, infinite
  values and values beyond float32 range (about 3.4e38, the model's precision) are refused;
- a file with a header but no rows, or no bytes at all, is refused ("no rows").
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from anyq.errors import DataError
from anyq.errors import first_line

REQUIRED_COLUMNS = ("unique_id", "ds", "y")
# The format that parses most of the first 1000 dates is used for the whole column.
DATE_FORMATS = ("%d-%b-%Y %H:%M:%S", "ISO8601")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_UTC_OFFSET = r"(?:Z|[+-]\d\d:?\d\d)$"  # '...+02:00', '...-0500', '...Z'
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def read_long_frame(path: str | Path) -> pd.DataFrame:
    """Read ``path`` into a frame with ``unique_id`` (str), ``ds`` (datetime64), ``y`` (float64).

    Rows are sorted by (``unique_id``, ``ds``). Missing ``y`` stays NaN (a gap); the rest of
    the checks (hourly grid) belong to :meth:`anyq.data.panel.Panel.from_long`.

    Raises:
        DataError: one line naming the file, the column and an example row, for anything the
            module docstring lists as refused and for any other failure of parsing.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    where = str(path)
    raw = _read_raw(path)
    if raw.empty:
        raise DataError(f"{where}: no rows (the file has a header but no data)")
    frame = pd.DataFrame(
        {
            "unique_id": _column(raw, "unique_id", where, _parse_ids),
            "ds": _column(raw, "ds", where, parse_dates),
            "y": _column(raw, "y", where, _parse_values),
        }
    )
    check_unique(frame, where=where)
    return frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)


def _row(values: pd.Series, mask: np.ndarray | pd.Series) -> str:
    """``row N ('value')`` for the first True of ``mask`` (N counts data rows from 1)."""
    position = int(np.argmax(np.asarray(mask, dtype=bool)))
    return f"row {position + 1} ({_shown(values.iloc[position])})"


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _column(raw: pd.DataFrame, name: str, where: str, parse: Callable[[pd.Series, str], pd.Series]) -> pd.Series:
    """Parse one column; a failure the parser did not foresee still names file, column and row."""
    values = raw[name].reset_index(drop=True)
    try:
        return parse(values, where)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever pandas raises becomes one line
        raise DataError(
            f"{where}: column {name!r} cannot be parsed ({first_line(exc)}), e.g. {_first_failing(values, name)}"
        ) from None


def _first_failing(values: pd.Series, name: str) -> str:
    """The first row that fails on its own (only on the error path: a Python loop is fine)."""
    def one(value: object) -> object:
        return pd.Timestamp(value).as_unit("ns") if name == "ds" else float(value)  # type: ignore[arg-type]

    for position, value in enumerate(values):
        try:
            one(value)
        except Exception:  # noqa: BLE001
            return f"row {position + 1} ({_shown(value)})"
    return f"row 1 ({_shown(values.iloc[0])})"


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
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no rows (the file is empty)") from None
    except Exception as exc:  # noqa: BLE001 - tokenizer, encoding, compression, parquet engine, ...
        raise DataError(f"{path}: cannot be read: {first_line(exc)}") from None
    raise DataError(f"{path}: unsupported file type (expected .csv or .parquet)")


def _check_columns(columns: pd.Index, path: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        found = ", ".join(map(str, columns))
        hint = " (columns must be separated by commas)" if any(s in found for s in ";\t|") else ""
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {found}{hint}")


def _parse_ids(values: pd.Series, where: str) -> pd.Series:
    empty = values.isna() | (values.astype("string").str.strip() == "")
    if empty.any():
        raise DataError(
            f"{where}: column 'unique_id' has {int(empty.sum())} empty id(s), e.g. {_row(values, empty)}"
        )
    return values.astype(str)


def parse_dates(values: pd.Series, where: str = "data", column: str = "ds") -> pd.Series:
    """Parse the ``ds`` column; tz-aware stamps are converted to naive UTC.

    The one rule for time stamps, in training data and at serving alike (a request's
    forecast origins, ``anyq-predict --origin``): ``column`` names them in errors.

    Raises:
        DataError: empty, unparseable or out-of-range dates, or stamps that mix UTC offsets
            with none, with an example row.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
        if parsed.isna().any():  # NaT in a typed column (Parquet)
            raise DataError(
                f"{where}: column {column!r} has {int(parsed.isna().sum())} empty date(s), e.g. {_row(values, parsed.isna())}"
            )
    else:
        text = values.astype("string").str.strip().reset_index(drop=True)
        empty = text.isna() | (text == "")
        if empty.any():
            raise DataError(
                f"{where}: column {column!r} has {int(empty.sum())} empty date(s), e.g. {_row(values, empty)}"
            )
        has_offset = text.str.contains(_UTC_OFFSET, regex=True).to_numpy(dtype=bool)
        if has_offset.any() and not has_offset.all():
            other = has_offset != has_offset[0]
            raise DataError(
                f"{where}: column {column!r} mixes stamps with and without a UTC offset, e.g. row 1 "
                f"({text.iloc[0]!r}) and {_row(text, other)}; give every stamp an offset or none"
            )
        parsed = _parse_with_known_format(text, where, utc=bool(has_offset.all()), column=column)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def _parse_with_known_format(text: pd.Series, where: str, utc: bool, column: str = "ds") -> pd.Series:
    sample = text.iloc[:1000]
    parsed_counts = [
        int(pd.to_datetime(sample, format=fmt, errors="coerce", utc=utc).notna().sum())
        for fmt in DATE_FORMATS
    ]
    if max(parsed_counts) == 0:
        raise DataError(
            f"{where}: column {column!r} has unparseable dates, e.g. row 1 ({sample.iloc[0]!r}) "
            f"(expected ISO 8601 or '%d-%b-%Y %H:%M:%S' like '01-Jan-2006 00:00:00')"
        )
    fmt = DATE_FORMATS[int(np.argmax(parsed_counts))]  # the format that fits the first rows best
    parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=utc)
    bad = parsed.isna()
    if bad.any():
        raise DataError(
            f"{where}: column {column!r} has {int(bad.sum())} unparseable date(s), e.g. {_row(text, bad)} "
            f"(format {fmt!r} inferred from the first rows; years 1677..2262 only)"
        )
    return parsed


def _parse_values(values: pd.Series, where: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        raise DataError(f"{where}: column 'y' holds booleans, expected numbers (load values)")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = numbers.isna() & values.notna()
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        bad &= values.astype("string").str.strip().fillna("") != ""
    if bad.any():
        raise DataError(
            f"{where}: column 'y' has {int(bad.sum())} non-numeric value(s), e.g. {_row(values, bad)}"
        )
    unusable = numbers.abs() > _FLOAT32_MAX  # inf, and finite values float32 turns into inf
    if unusable.any():
        raise DataError(
            f"{where}: column 'y' has {int(unusable.sum())} infinite or too large value(s) "
            f"(|y| > {_FLOAT32_MAX:.3g}), e.g. {_row(values, unusable)}; leave a gap empty instead"
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
            f"{where}: expected hourly data but detected a step of {pd.Timedelta(int(steps.min()))} "
            f"(resample it to hourly means first, e.g. pandas' frame.set_index('ds').groupby('unique_id')"
            f".resample('h').y.mean())"
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
