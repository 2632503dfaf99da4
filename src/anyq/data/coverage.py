"""Which calendar inputs the training range can teach: the rule, in one place.

A known-future input whose values in validation, test or at serving were never seen in
training makes the network extrapolate: with nine months of training data, the day-of-year
features of the other three months are values it never saw, and the forecast there can be
worse than last week's load. So, before training, every calendar input
(:mod:`anyq.data.calendar`) is checked against the hours the training windows show with an
observed value (history and target hours of every training window, gaps left out):

============  ==================================================================================
input         kept when the training hours show
============  ==================================================================================
``hour``      every hour of the day, 0..23 (local time)
``dow``       every day of the week
``doy``       every day of the year (366 counted as 365) but for runs of at most
              ``DOY_UNSEEN_RUN`` = 7 days in a row: a missing week sits between seen
              neighbours, a missing season does not
``holiday``   at least one holiday of the series' calendars (a flag that is 0 on every
              training hour carries nothing the network could learn)
============  ==================================================================================

The whole cycle is asked for, not only the validation and test hours: a served model is asked
for any date. An input that fails is left out (not re-encoded: no encoding of an unseen season
is known to the network either) and the model's input width follows; the decision travels
with the checkpoint and the served model (``data.calendar.inputs``), so both apply the same
inputs. The model takes no other known-future input (no series id), so nothing else is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from anyq.data.calendar import INPUTS, CalendarSpec
from anyq.data.panel import Panel
from anyq.data.windows import WindowSet
from anyq.errors import counted

#: the longest run of unseen days of year that still keeps the day-of-year input
DOY_UNSEEN_RUN = 7
_CYCLES = {"hour": (24, "hours of the day", 0), "dow": (7, "days of the week", 0),
           "doy": (365, "days of the year", DOY_UNSEEN_RUN)}


@dataclass(frozen=True)
class InputCoverage:
    """One input's verdict: kept or not, and why in words (for the log line and run tags)."""

    name: str
    covered: bool
    reason: str


def shown_hours(panel: Panel, windows: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    """``(any_series [T], per_series [n_series, T])`` bool: hours a training window shows with
    an observed value, over all series and per series. Memory ``O(n_series * T)`` bool."""
    n, t = panel.values.shape
    width = windows.history_length + windows.horizon_length
    observed = ~np.isnan(panel.values)
    per_series = np.zeros((n, t), dtype=bool)
    order = np.argsort(windows.series_idx, kind="stable")
    series, starts = windows.series_idx[order], windows.origin[order] - windows.history_length
    bounds = np.searchsorted(series, np.arange(n + 1))
    for s in range(n):
        first = starts[bounds[s]:bounds[s + 1]]
        if not first.size:
            continue
        change = np.bincount(first, minlength=t + 1)[: t + 1] - np.bincount(first + width, minlength=t + 1)[: t + 1]
        per_series[s] = (np.cumsum(change)[:t] > 0) & observed[s]
    return per_series.any(axis=0), per_series


def _longest_unseen_run(seen: np.ndarray) -> int:
    """Longest run of False in a cyclic bool array (its length when nothing is seen)."""
    if not seen.any():
        return int(seen.size)
    rolled = np.roll(seen, -int(np.argmax(seen)))  # start on a seen value: no run wraps around
    edges = np.flatnonzero(np.diff(np.concatenate([rolled, [True]]).astype(np.int8)))
    runs = edges[1::2] - edges[0::2]  # unseen runs: from a True->False edge to the next False->True
    return int(runs.max()) if runs.size else 0


def _cycle_values(name: str, local: pd.DatetimeIndex) -> np.ndarray:
    if name == "hour":
        return local.hour.to_numpy()
    if name == "dow":
        return local.weekday.to_numpy()
    return np.minimum(local.dayofyear.to_numpy(), 365) - 1  # 31 Dec of a leap year sits on 30 Dec's angle


def calendar_coverage(spec: CalendarSpec, panel: Panel, windows: WindowSet) -> dict[str, InputCoverage]:
    """The verdict for every input of ``INPUTS`` (kept or not by ``spec``) from the training
    ``windows`` of ``panel``: keyed by input name, in ``INPUTS`` order."""
    any_series, per_series = shown_hours(panel, windows)
    stamps = panel.index[any_series]
    local = spec.local(stamps)
    out: dict[str, InputCoverage] = {}
    span = f"{stamps[0]:%Y-%m-%d} to {stamps[-1]:%Y-%m-%d}" if len(stamps) else "no hour"
    for name, (size, unit, allowed) in _CYCLES.items():
        seen = np.zeros(size, dtype=bool)
        seen[_cycle_values(name, local)] = True
        run = _longest_unseen_run(seen)
        reason = f"training covers {int(seen.sum())} of {size} {unit}"
        if allowed and 0 < run < size:
            reason += f", the longest gap {run} in a row"
        out[name] = InputCoverage(name, run <= allowed, reason)
    out["holiday"] = _holiday_coverage(spec, panel, per_series, span)
    return {name: out[name] for name in INPUTS}


def _holiday_coverage(spec: CalendarSpec, panel: Panel, per_series: np.ndarray, span: str) -> InputCoverage:
    if spec.holidays == "none":
        return InputCoverage("holiday", False,
                             "no holiday calendar (data.calendar.holidays=none, or a file without data.calendar.country)")
    flags = spec.holiday_flags(panel.ids, panel.index).astype(bool) & per_series
    days = len(set(panel.index[flags.any(axis=0)].normalize()))
    source = "the generator's calendar" if spec.holidays == "synthetic" else "the calendar of " + ", ".join(
        sorted({spec.countries.get(sid, spec.country) for sid in panel.ids} - {None}))
    if not days:
        return InputCoverage("holiday", False, f"no holiday of {source} in the training range ({span})")
    return InputCoverage("holiday", True, f"training covers {counted(days, 'holiday date')} of {source}")


def covered_inputs(coverage: dict[str, InputCoverage]) -> tuple[str, ...]:
    """The inputs the rule keeps, in ``INPUTS`` order."""
    return tuple(name for name in INPUTS if coverage[name].covered)
