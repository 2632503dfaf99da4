"""Any-quantile forecasting models: NBEATS-AQ backbone, quantile sampler, adaptive attention."""

from anyq.model.attention import AdaptiveAttention
from anyq.model.backbone import NBeatsAQ, QuantileEmbedding
from anyq.model.forecaster import AnyQuantileForecaster, build_forecaster, forecaster_from_config
from anyq.model.sampler import QuantileSampler

__all__ = [
    "AdaptiveAttention",
    "AnyQuantileForecaster",
    "NBeatsAQ",
    "QuantileEmbedding",
    "QuantileSampler",
    "build_forecaster",
    "forecaster_from_config",
]
