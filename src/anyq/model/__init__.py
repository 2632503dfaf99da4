"""Any-quantile forecasting models: NBEATS-AQ backbone, quantile sampler, adaptive attention.

The classes load on first use (PEP 562), so ``anyq.model.config`` (the settings the schema
types) imports without torch: a command line is checked before torch is loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'anyq.model' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
