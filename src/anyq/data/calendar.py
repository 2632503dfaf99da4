"""Calendar inputs: known-future features of every hour a window covers.

Per hour ``t`` the model may see ``NUM_FEATURES`` = 12 values (``FEATURE_NAMES``):

- hour of day as ``sin, cos(2 pi hour / 24)``;
- day of week, one-hot (Monday first);
- day of year as ``sin, cos(2 pi (doy - 1) / 365.25)``;
- a public-holiday flag (1 on every hour of a holiday's local date).

All of them are read in local time: with ``timezone`` set, the panel's timestamps are taken
as UTC and converted to that zone, so an hour-of-day feature follows daylight-saving changes
and a holiday starts at local midnight; without it the timestamps are the wall clock as
given. Holidays come from the synthetic generator's own calendar (``synthetic``: 1 Jan, Easter
Monday, 1 May, 25-26 Dec and each series' national day), from the ``holidays`` package
(``country``: one country for all series, or one per series id, optionally a subdivision), or
none. The ``holidays`` package is used because public-holiday rules (movable feasts,
substitute days, regional days) are data, maintained there for some 150 countries.

The four inputs (``INPUTS``: ``hour``, ``dow``, ``doy``, ``holiday``) are switched on one by one
(``CalendarSpec.inputs``): an input the training range cannot teach, like day of year from
nine months of data, is left out before training (the rule: :mod:`anyq.data.coverage`), and the
model's input width follows. A window's calendar is ``[L + H, F]`` with ``F`` = the kept
inputs' columns, in ``FEATURE_NAMES`` order (``F = NUM_FEATURES`` with all four), the hours of
its history then its target, gathered like the load values (:mod:`anyq.data.windows`); the same
features are computed from a request's origin when a model is served (:func:`window_calendar`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from anyq.errors import DataError

HOLIDAY_SOURCES = ("none", "synthetic", "country")
#: ``data.calendar.holiday_history``: the history input as it is (``keep``), or each holiday hour
#: by the same hour a week before (``week_before``, :mod:`anyq.data.holiday_history`); a spec holds
#: one of these two, the config may also say ``auto`` (:func:`spec_from_config` resolves it; the
#: schema's choices, which must not import this module's pandas, list all three)
HOLIDAY_HISTORY = ("keep", "week_before")
FEATURE_NAMES = (
    "hour_sin", "hour_cos", "dow_mon", "dow_tue", "dow_wed", "dow_thu", "dow_fri", "dow_sat", "dow_sun",
    "doy_sin", "doy_cos", "holiday",
)
NUM_FEATURES = len(FEATURE_NAMES)
#: features that are the same for every series (all but the holiday flag)
NUM_SHARED = NUM_FEATURES - 1
#: the inputs, each a group of FEATURE_NAMES columns; the holiday flag is always the last column
INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "hour": FEATURE_NAMES[0:2],
    "dow": FEATURE_NAMES[2:9],
    "doy": FEATURE_NAMES[9:11],
    "holiday": FEATURE_NAMES[11:12],
}
INPUTS = tuple(INPUT_COLUMNS)


@dataclass(frozen=True)
class CalendarSpec:
    """Where holidays come from and which clock the features read; travels with a served model."""

    holidays: str = "none"
    country: str | None = None
    countries: dict[str, str] = field(default_factory=dict)
    subdivision: str | None = None
    timezone: str | None = None
    national_days: dict[str, int] = field(default_factory=dict)  # synthetic: day of year per series id
    inputs: tuple[str, ...] = INPUTS  # the inputs the model takes (anyq.data.coverage decides)
    holiday_history: str = "keep"  # keep | week_before: holiday hours of the history input (anyq.data.holiday_history)

    def __post_init__(self) -> None:
        unknown = [name for name in self.inputs if name not in INPUTS]
        if unknown:
            raise DataError(f"data.calendar.inputs: unknown input {unknown[0]!r}; the inputs are {', '.join(INPUTS)}")
        object.__setattr__(self, "inputs", tuple(name for name in INPUTS if name in self.inputs))
        if self.holidays not in HOLIDAY_SOURCES:
            raise DataError(f"data.calendar.holidays={self.holidays!r} must be one of {', '.join(HOLIDAY_SOURCES)}")
        if self.holidays == "country" and not (self.country or self.countries):
            raise DataError("data.calendar.holidays=country needs data.calendar.country or data.calendar.countries")
        if self.holiday_history not in HOLIDAY_HISTORY:
            raise DataError(f"data.calendar.holiday_history={self.holiday_history!r} must be one of "
                            f"{', '.join(HOLIDAY_HISTORY)}")
        if self.holiday_history != "keep" and self.holidays == "none":
            raise DataError(f"data.calendar.holiday_history={self.holiday_history} needs a holiday calendar: set "
                            "data.calendar.country (or countries), or holidays=synthetic on synthetic data")
        if self.timezone is not None:
            try:
                pd.Timestamp("2020-01-01", tz=self.timezone)
            except Exception:  # noqa: BLE001 - pytz/zoneinfo raise different types
                raise DataError(f"data.calendar.timezone={self.timezone!r} is not a known time zone") from None
        for code in {self.country, *self.countries.values()} - {None}:
            _country_calendar(code, self.subdivision, [2020])  # fails early on an unknown code

    def to_dict(self) -> dict[str, Any]:
        return {"holidays": self.holidays, "country": self.country, "countries": dict(self.countries),
                "subdivision": self.subdivision, "timezone": self.timezone,
                "national_days": {k: int(v) for k, v in self.national_days.items()},
                "inputs": list(self.inputs), "holiday_history": self.holiday_history}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalendarSpec:
        return cls(holidays=str(data.get("holidays", "none")), country=data.get("country"),
                   countries=dict(data.get("countries") or {}), subdivision=data.get("subdivision"),
                   timezone=data.get("timezone"), national_days=dict(data.get("national_days") or {}),
                   # specs written before inputs could be left out took all of them
                   inputs=tuple(data.get("inputs", INPUTS)),
                   holiday_history=str(data.get("holiday_history", "keep")))

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The columns of the kept inputs, in ``FEATURE_NAMES`` order."""
        return tuple(column for name in self.inputs for column in INPUT_COLUMNS[name])

    @property
    def num_features(self) -> int:
        """``F``: per-hour features the model takes (0: no calendar input at all)."""
        return len(self.feature_names)

    @property
    def cleans_history(self) -> bool:
        """Whether holiday hours of the history input are replaced (:mod:`anyq.data.holiday_history`)."""
        return self.holiday_history != "keep"

    @property
    def has_holiday(self) -> bool:
        """Whether the last feature column is the holiday flag."""
        return "holiday" in self.inputs

    def network_inputs(self) -> dict[str, Any]:
        """The keywords :func:`anyq.model.forecaster.forecaster_from_config` takes for this calendar."""
        return {"calendar_features": self.num_features, "calendar_holiday": self.has_holiday}

    # ------------------------------------------------------------------ features
    def local(self, stamps: pd.DatetimeIndex) -> pd.DatetimeIndex:
        """The wall-clock time of each stamp: converted from UTC when ``timezone`` is set."""
        stamps = pd.DatetimeIndex(stamps)
        if self.timezone is None:
            return stamps.tz_localize(None) if stamps.tz is not None else stamps
        utc = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
        return utc.tz_convert(self.timezone).tz_localize(None)

    def shared_features(self, stamps: pd.DatetimeIndex) -> np.ndarray:
        """float32 ``[T, S]``: the kept ones of hour of day, day of week, day of year of each
        stamp (``S = NUM_SHARED`` with all of them)."""
        every = self._all_shared(stamps)
        keep = [FEATURE_NAMES.index(c) for c in self.feature_names if c != "holiday"]
        return every if len(keep) == NUM_SHARED else np.ascontiguousarray(every[:, keep])

    def _all_shared(self, stamps: pd.DatetimeIndex) -> np.ndarray:
        local = self.local(stamps)
        hour = local.hour.to_numpy() + local.minute.to_numpy() / 60.0
        dow = local.weekday.to_numpy()
        doy = local.dayofyear.to_numpy() - 1
        out = np.zeros((len(local), NUM_SHARED), dtype=np.float32)
        out[:, 0] = np.sin(2 * np.pi * hour / 24)
        out[:, 1] = np.cos(2 * np.pi * hour / 24)
        out[np.arange(len(local)), 2 + dow] = 1.0
        out[:, 9] = np.sin(2 * np.pi * doy / 365.25)
        out[:, 10] = np.cos(2 * np.pi * doy / 365.25)
        return out

    def holiday_flags(self, ids: Sequence[str], stamps: pd.DatetimeIndex) -> np.ndarray:
        """float32 ``[len(ids), T]``: 1 where the stamp's local date is a holiday of that series."""
        local = self.local(stamps)
        flags = np.zeros((len(ids), len(local)), dtype=np.float32)
        if self.holidays == "none" or not len(local):
            return flags
        if self.holidays == "synthetic":
            from anyq.data.synthetic import synthetic_holidays

            known = np.array([sid in self.national_days for sid in ids])
            days = np.array([self.national_days.get(sid, 0) for sid in ids], dtype=np.int64)
            flags[:] = synthetic_holidays(local, days)
            if not known.all():  # a series the generator never made: the common holidays only
                flags[~known] = synthetic_holidays(local, np.zeros(1, dtype=np.int64))[0]
            return flags
        dates = local.normalize()
        years = sorted(set(local.year))
        for code in sorted({self.countries.get(sid, self.country) for sid in ids} - {None}):
            calendar = _country_calendar(code, self.subdivision, years)
            on = np.isin(dates.to_numpy(), np.array(sorted(calendar), dtype="datetime64[ns]"))
            rows = [i for i, sid in enumerate(ids) if self.countries.get(sid, self.country) == code]
            flags[rows] = on
        return flags

    def panel_features(self, ids: Sequence[str], index: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray | None]:
        """``(shared [T, S], holiday [n_series, T] or None without the holiday input)`` for a
        whole panel, computed once."""
        return self.shared_features(index), (self.holiday_flags(ids, index) if self.has_holiday else None)


def spec_from_config(data: Mapping[str, Any]) -> CalendarSpec | None:
    """The calendar of a ``data`` config section (``data.calendar``); None when it is off and
    the history is kept as it is.

    ``holidays: auto`` takes the generator's calendar for synthetic data, the ``holidays``
    package for a file when a country is named, and no holidays otherwise; ``holiday_history:
    auto`` is then ``week_before`` with a holiday calendar and ``keep`` without one. With the calendar
    off (``enabled: false``) but ``holiday_history`` other than ``keep``, the spec takes no input
    (``inputs`` empty) and only says which hours are holidays.

    Raises:
        DataError: a setting no calendar can have, e.g. ``holiday_history=week_before`` with no
            holiday calendar.
    """
    cal = data.get("calendar") if hasattr(data, "get") else None
    if not cal:
        return None
    source = str(cal.get("holidays", "auto"))
    synthetic = data.get("source") == "synthetic"
    if source == "auto":
        source = "synthetic" if synthetic else ("country" if cal.get("country") or cal.get("countries") else "none")
    history = str(cal.get("holiday_history", "auto"))
    if history == "auto":
        history = "keep" if source == "none" else "week_before"
    if not (cal.get("enabled", False) or history != "keep"):
        return None
    national_days: dict[str, int] = {}
    if source == "synthetic":
        if not synthetic:
            raise DataError("data.calendar.holidays=synthetic needs data.source=synthetic")
        from anyq.data.synthetic import synthetic_national_days

        syn = data["synthetic"]
        national_days = synthetic_national_days(int(syn["seed"]), int(syn["n_series"]) * int(syn["size"]))
    inputs = cal.get("inputs") if cal.get("enabled", False) else ()
    return CalendarSpec(
        inputs=INPUTS if inputs is None else tuple(str(name) for name in inputs),
        holiday_history=history,
        holidays=source,
        country=cal.get("country"),
        countries={str(k): str(v) for k, v in dict(cal.get("countries") or {}).items()},
        subdivision=cal.get("subdivision"),
        timezone=cal.get("timezone"),
        national_days=national_days,
    )


def _country_calendar(code: str, subdivision: str | None, years: Sequence[int]) -> set:
    import holidays

    try:
        calendar = holidays.country_holidays(code, subdiv=subdivision, years=list(years))
    except NotImplementedError:
        raise DataError(f"data.calendar: no holiday calendar for country {code!r} in the holidays package") from None
    except Exception as exc:  # noqa: BLE001 - an unknown subdivision raises NotImplementedError or ValueError
        raise DataError(f"data.calendar: holidays for {code!r}, subdivision {subdivision!r}: {exc}") from None
    return {pd.Timestamp(day) for day in calendar}


def combine(shared: np.ndarray, holiday: np.ndarray | None) -> np.ndarray:
    """Per-hour features ``[..., T, F]`` from ``shared [..., T, S]`` and ``holiday [..., T]``
    (``F = S + 1``; ``F = S`` without the holiday input: ``holiday`` None)."""
    if holiday is None:
        return shared.astype(np.float32, copy=False)
    return np.concatenate([shared, holiday[..., None]], axis=-1).astype(np.float32, copy=False)


def window_calendar(
    spec: CalendarSpec, ids: Sequence[str], origins: pd.DatetimeIndex, history_length: int, horizon_length: int
) -> np.ndarray:
    """float32 ``[N, L + H, F]`` (``F = spec.num_features``) for windows whose first target hour
    is ``origins[i]`` (series ``ids[i]``): the hours ``origin - L .. origin + H - 1``."""
    origins = pd.DatetimeIndex(origins)
    offsets = pd.to_timedelta(np.arange(-history_length, horizon_length), unit="h")
    n, width, num_features = len(origins), history_length + horizon_length, spec.num_features
    out = np.zeros((n, width, num_features), dtype=np.float32)
    for sid in dict.fromkeys(ids):  # one pass per distinct series (usually one window each)
        rows = np.flatnonzero(np.asarray(ids, dtype=object) == sid)
        stamps = pd.DatetimeIndex((origins[rows].to_numpy()[:, None] + offsets.to_numpy()[None, :]).reshape(-1))
        holiday = spec.holiday_flags([sid], stamps)[0] if spec.has_holiday else None
        out[rows] = combine(spec.shared_features(stamps), holiday).reshape(len(rows), width, num_features)
    return out
