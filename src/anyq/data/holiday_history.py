"""Holidays taken out of the history a model reads: each holiday hour by the same hour a week before.

A holiday's load is unlike the days around it (Christmas Day at some 57 % of a normal day on
regional load), and a network that reads a 168 h history carries that dip into every forecast
issued while the holiday is inside the window: a week of forecasts that stay low. With
``data.calendar.holiday_history=week_before`` every hour whose local date is a holiday of the
series' calendar (:meth:`anyq.data.calendar.CalendarSpec.holiday_flags`, the same holidays
whether or not the holiday flag is one of the model's inputs) is replaced, in the history input
only, by the value ``WEEK`` = 168 hours earlier, recursively: when that hour is a holiday too
(two holidays a week apart), the one two weeks earlier, and so on. An hour with no usable
value a week before it (the first week of the data, or a missing hour there) keeps its own value.

Only the model's input changes. Training, validation and test targets, every score, seasonal
naive and the oracle read the real values: the forecast is still judged on the holiday itself,
and the references stay what they are measured against elsewhere. The rule is applied once to
a whole panel after gap filling (:class:`anyq.data.datamodule.ForecastDataModule`, with the flags
of :func:`anyq.training.builders.build_datamodule`) and, in the same way, to a served
request's history (:func:`request_history`); both call :func:`replace_holidays`, so a served
forecast equals the in-process one when the request holds the hours the rule reaches back to
(for a holiday in the first week of a 168 h window: the week before the window).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from anyq.data.calendar import HOLIDAY_HISTORY, CalendarSpec

__all__ = ["HOLIDAY_HISTORY", "WEEK", "replace_holidays", "request_history"]

#: hours between a holiday hour and the hour that replaces it
WEEK = 168


def replace_holidays(values: np.ndarray, holiday: np.ndarray, period: int = WEEK) -> np.ndarray:
    """``values [n, T]`` with every ``holiday [n, T]`` (bool) position ``t`` replaced by the
    replaced value at ``t - period``; positions ``t < period`` and those whose source is NaN keep
    their own value. A new array of ``values``' dtype.

    Vectorised over series and over each block of ``period`` hours (one numpy step per week:
    the block before is already replaced, which makes the rule recursive).
    """
    values = np.asarray(values)
    holiday = np.asarray(holiday, dtype=bool)
    if values.shape != holiday.shape or values.ndim != 2:
        raise ValueError(f"values {values.shape} and holiday flags {holiday.shape} must both be [n, T]")
    out = values.copy()
    t = values.shape[1]
    for start in range(period, t, period):
        stop = min(start + period, t)
        source = out[:, start - period:stop - period]
        take = holiday[:, start:stop] & ~np.isnan(source)
        out[:, start:stop] = np.where(take, source, out[:, start:stop])
    return out


def request_history(
    spec: CalendarSpec, ids: Sequence[str], origins: pd.DatetimeIndex, history: np.ndarray
) -> np.ndarray:
    """The history input of served windows: ``history [N, T]`` holds the ``T`` hours before
    ``origins[i]`` (series ``ids[i]``; NaN where a row has no value); the same shape back."""
    n, t = history.shape
    offsets = pd.to_timedelta(np.arange(-t, 0), unit="h").to_numpy()
    flags = np.zeros((n, t), dtype=bool)
    names = np.asarray(ids, dtype=object)
    for sid in dict.fromkeys(ids):  # one calendar look-up per distinct series
        rows = np.flatnonzero(names == sid)
        origin = pd.DatetimeIndex(origins)[rows].to_numpy()[:, None]
        stamps = pd.DatetimeIndex((origin + offsets[None, :]).reshape(-1))
        flags[rows] = spec.holiday_flags([sid], stamps)[0].reshape(len(rows), t) > 0
    return replace_holidays(history, flags)
