"""Scores of quantile forecasts on a fixed level grid (docs/design.md §3).

Pure torch, no model or training code: ``functional`` holds the scores as functions,
``scorer`` streams them over batches, ``levels`` builds the evaluation grid and
``ensemble`` averages seed ensembles.
"""

from __future__ import annotations

from anyq.lazy import lazy_attributes

# Names load on first use (PEP 562), so ``anyq.metrics.families`` and the settings import
# without torch.
_WHERE = {
    "ForecastScorer": "anyq.metrics.scorer",
    "coverage": "anyq.metrics.functional",
    "crossing_rate": "anyq.metrics.functional",
    "crps": "anyq.metrics.functional",
    "crps_by_horizon": "anyq.metrics.functional",
    "crps_normalised": "anyq.metrics.functional",
    "ensemble_mean": "anyq.metrics.ensemble",
    "evaluation_grid": "anyq.metrics.levels",
    "interval_width": "anyq.metrics.functional",
    "level_index": "anyq.metrics.levels",
    "mape": "anyq.metrics.functional",
    "marfe": "anyq.metrics.functional",
    "per_window_crps": "anyq.metrics.functional",
    "pinball_by_level": "anyq.metrics.functional",
    "pinball_loss": "anyq.metrics.functional",
    "reliability": "anyq.metrics.functional",
    "score": "anyq.metrics.scorer",
    "smape": "anyq.metrics.functional",
    "valid_windows": "anyq.metrics.functional",
}

__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
