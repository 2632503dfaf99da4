"""Scores of quantile forecasts on a fixed level grid (docs/design.md §3).

Pure torch, no model or training code: ``functional`` holds the scores as functions,
``scorer`` streams them over batches, ``levels`` builds the evaluation grid and
``ensemble`` averages seed ensembles.
"""

from anyq.metrics.ensemble import ensemble_mean
from anyq.metrics.functional import (
    coverage,
    crossing_rate,
    crps,
    crps_by_horizon,
    crps_normalised,
    interval_width,
    mape,
    marfe,
    per_window_crps,
    pinball_by_level,
    pinball_loss,
    reliability,
    smape,
    valid_windows,
)
from anyq.metrics.levels import evaluation_grid, level_index
from anyq.metrics.scorer import ForecastScorer, score

__all__ = [
    "ForecastScorer",
    "coverage",
    "crossing_rate",
    "crps",
    "crps_by_horizon",
    "crps_normalised",
    "ensemble_mean",
    "evaluation_grid",
    "interval_width",
    "level_index",
    "mape",
    "marfe",
    "per_window_crps",
    "pinball_by_level",
    "pinball_loss",
    "reliability",
    "score",
    "smape",
    "valid_windows",
]
