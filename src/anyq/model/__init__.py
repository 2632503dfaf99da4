"""Any-quantile forecasting models: NBEATS-AQ backbone, quantile sampler, adaptive attention.

The classes load on first use (PEP 562), so ``anyq.model.config`` (the settings the schema
types) and ``anyq.model.checks`` (their checks) import without torch: a command line and a
config are checked before torch is loaded.
"""

from __future__ import annotations

from anyq.lazy import lazy_attributes

_WHERE = {
    "AdaptiveAttention": "anyq.model.attention",
    "AnyQuantileForecaster": "anyq.model.forecaster",
    "NBeatsAQ": "anyq.model.backbone",
    "QuantileEmbedding": "anyq.model.backbone",
    "QuantileSampler": "anyq.model.sampler",
    "build_forecaster": "anyq.model.forecaster",
    "forecaster_from_config": "anyq.model.forecaster",
}

__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
