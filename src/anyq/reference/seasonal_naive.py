"""Seasonal naive with empirical error quantiles: the simplest honest probabilistic baseline.

Point forecast: the value one season (default one week) before each target hour. Quantiles:
the point times ``1 + r_q``, where ``r_q`` is the q-quantile of the series' RELATIVE
seasonal-naive errors ``y_t / y_{t-season} - 1`` over the training range. Relative rather
than absolute errors because load noise scales with the load level (seasons, trends,
series sizes): an error distribution learned in a high-load winter then transfers to a
low-load summer instead of being too wide there. Any level can be asked for, since the
errors are kept and ``np.nanquantile`` is evaluated for the requested levels.
"""

from __future__ import annotations

import numpy as np

from anyq.data.panel import Panel


class SeasonalNaiveForecaster:
    """``predict`` -> float32 [B, H, Q]; requires ``horizon_length <= season``."""

    def __init__(self, season: int = 168, horizon_length: int = 48) -> None:
        if horizon_length > season:
            raise ValueError(
                f"seasonal naive needs horizon_length <= season, got {horizon_length} > {season}"
            )
        self.season = season
        self.horizon_length = horizon_length
        self.errors: np.ndarray | None = None  # relative errors [n_series, n_hours], NaN where unknown

    def fit(self, panel: Panel, train_range: tuple[int, int]) -> SeasonalNaiveForecaster:
        """Collect relative errors at target hours in ``train_range`` (observed values only)."""
        start, stop = max(int(train_range[0]), self.season), min(int(train_range[1]), panel.n_steps)
        if stop <= start:
            raise ValueError(f"train range {train_range} holds no hour with a value one season earlier")
        y = panel.values[:, start:stop].astype(np.float64)
        lagged = panel.values[:, start - self.season : stop - self.season].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            errors = np.where(np.abs(lagged) > 0, y / lagged - 1.0, np.nan)
        self.errors = errors
        return self

    def error_quantiles(self, levels: np.ndarray) -> np.ndarray:
        """Relative error quantiles, float64 [n_series, Q]."""
        if self.errors is None:
            raise RuntimeError("SeasonalNaiveForecaster.fit must be called before predict")
        return np.nanquantile(self.errors, np.asarray(levels, dtype=np.float64), axis=1).T

    def predict(
        self, panel_filled_values: np.ndarray, series_idx: np.ndarray, origin: np.ndarray, levels: np.ndarray
    ) -> np.ndarray:
        """Quantiles for windows whose first target hour is ``origin`` (gap-filled values)."""
        s = np.asarray(series_idx, dtype=np.int64).reshape(-1)
        o = np.asarray(origin, dtype=np.int64).reshape(-1)
        if o.size and o.min() < self.season:
            raise ValueError(f"origins must be >= season ({self.season}) for seasonal naive")
        t = o[:, None] + np.arange(self.horizon_length) - self.season
        point = np.asarray(panel_filled_values, dtype=np.float64)[s[:, None], t]  # [B, H]
        ratio = 1.0 + self.error_quantiles(levels)[s]  # [B, Q]
        return (point[..., None] * ratio[:, None, :]).astype(np.float32)
