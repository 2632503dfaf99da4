"""Reference forecasters scored by the same code as the models: the oracle and seasonal naive."""

from anyq.reference.oracle import OracleForecaster
from anyq.reference.seasonal_naive import SeasonalNaiveForecaster

__all__ = ["OracleForecaster", "SeasonalNaiveForecaster"]
