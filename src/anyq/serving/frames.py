"""The served frame layout: one history window per row in, long-format forecasts out.

Request frame, one row per forecast window:

============  ==============  ===============================================================
column        type            meaning
============  ==============  ===============================================================
unique_id     string          a label, copied to the output rows of this window
history       array<double>   the hours before the forecast, oldest first, in data units;
                              at least ``history_length`` values (the model's input is the
                              last of them; a model with ``conformal=online`` calibrates
                              from the earlier ones, and one trained with
                              ``data.calendar.holiday_history=week_before`` reads holiday
                              hours from a week before: :mod:`anyq.serving.bundle`)
levels        array<double>   the quantile levels wanted for this window, each in (0, 1)
origin        string          optional: the first forecast hour (ISO 8601); required by a
                              model with calendar inputs or holiday_history, whose holidays
                              follow unique_id
============  ==============  ===============================================================

Response frame (long format), rows ordered by request row, then ``step``, then level order:

============  ==============  ===============================================================
unique_id     string          the window's label
step          long            1..horizon_length: hours after the last history hour
level         double          the quantile level
value         double          the forecast quantile, in data units
============  ==============  ===============================================================

Dates stay out of the served contract (a window is a vector) except for a model with
calendar inputs, which needs each window's ``origin``; ``anyq-predict`` adds dates to the output.
Rows may ask for different levels and different numbers of levels; each (window, level) is
forecast independently, which the any-quantile model guarantees.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from anyq.errors import RequestError
from anyq.serving.bundle import ServedForecaster, check_levels

INPUT_COLUMNS = ("unique_id", "history", "levels")


def _ragged(column: pd.Series, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A column of per-row sequences as (concatenated float64 values, per-row lengths)."""
    rows = column.to_list()
    try:
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat = np.concatenate(rows).astype(np.float64) if lengths.sum() else np.zeros(0)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"column {what!r} must hold one list of numbers per row ({exc})") from None
    if flat.ndim != 1:
        raise RequestError(f"column {what!r} must hold one flat list of numbers per row")
    return flat, lengths


def predict_frame(forecaster: ServedForecaster, frame: pd.DataFrame) -> pd.DataFrame:
    """Answer a request frame with a response frame (layouts in the module docstring)."""
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise RequestError(f"request is missing column(s) {', '.join(missing)}; expected {', '.join(INPUT_COLUMNS)}")
    if frame.empty:
        raise RequestError("request has no rows")
    hist_flat, hist_len = _ragged(frame["history"], "history")
    level_flat, level_len = _ragged(frame["levels"], "levels")
    ids = frame["unique_id"].astype(str).to_numpy()
    need = forecaster.spec.history_length
    short = hist_len < need
    if short.any():
        row = int(np.argmax(short))
        raise RequestError(
            f"history of {ids[row]!r} has {int(hist_len[row])} hours but the model needs {need}"
        )
    empty = level_len == 0
    if empty.any():
        raise RequestError(f"row {ids[int(np.argmax(empty))]!r} asks for no levels")
    check_levels(level_flat)
    # the last `need` hours of each row (all of them, NaN-padded on the left, for a model that
    # calibrates online from the history or replaces holiday hours from it), gathered in one indexing call
    ends = np.cumsum(hist_len)
    width = int(hist_len.max()) if forecaster.reads_earlier_hours else need
    back = np.arange(width) - width  # -width .. -1 hours before each row's end
    history = np.where(back[None, :] >= -hist_len[:, None],
                       hist_flat[np.clip(ends[:, None] + back[None, :], 0, None)], np.nan)
    window = np.repeat(np.arange(len(frame)), level_len)  # one (window, level) pair per level
    origins = frame["origin"].to_numpy() if "origin" in frame.columns else None
    if (level_len == level_len[0]).all():  # the common case: one [N, Q] call
        forecast = forecaster.forecast(history, level_flat.reshape(len(frame), -1), names=ids, origins=origins)
        values = forecast.transpose(0, 2, 1).reshape(window.size, -1)  # [pairs, H]
    else:
        forecast = forecaster.forecast(history[window], level_flat[:, None], names=ids[window],
                                       origins=origins[window] if origins is not None else None)
        values = forecast[:, :, 0]
    return pairs_to_long(ids[window], window, level_flat, values)


def pairs_to_long(ids: np.ndarray, window: np.ndarray, levels: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """Rows (id, step, level, value) from per-pair forecasts ``values [pairs, H]``.

    ``window [pairs]`` is each pair's request row; the result is ordered by window, step,
    then the pair's position (the requested level order).
    """
    n_pairs, horizon = values.shape
    steps = np.tile(np.arange(1, horizon + 1), n_pairs)
    order = np.lexsort((np.repeat(np.arange(n_pairs), horizon), steps, np.repeat(window, horizon)))
    return pd.DataFrame(
        {
            "unique_id": np.repeat(ids, horizon)[order],
            "step": steps[order].astype(np.int64),
            "level": np.repeat(levels, horizon)[order].astype(np.float64),
            "value": values.reshape(-1)[order].astype(np.float64),
        }
    )


def example_request(history_length: int, levels: Any = (0.1, 0.5, 0.9)) -> pd.DataFrame:
    """A one-row request (a daily-cycle load around 1000) for signatures and docs."""
    hours = np.arange(history_length)
    history = 1000.0 + 200.0 * np.sin(2 * np.pi * hours / 24.0)
    return pd.DataFrame({"unique_id": ["example"], "history": [history.round(3).tolist()],
                         "levels": [list(map(float, levels))], "origin": ["2020-01-06 00:00:00"]})
