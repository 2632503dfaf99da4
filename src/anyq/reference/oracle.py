"""The oracle: the true conditional quantiles of the synthetic data, the floor for CRPS."""

from __future__ import annotations

import numpy as np

from anyq.data.synthetic import SyntheticData


class OracleForecaster:
    """Forecasts with the generator's own conditional distribution (synthetic data only)."""

    def __init__(self, synthetic: SyntheticData, history_length: int, horizon_length: int = 48) -> None:
        self.synthetic = synthetic
        self.history_length = history_length
        self.horizon_length = horizon_length

    def predict(self, series_idx: np.ndarray, origin: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """Quantiles float32 [B, H, Q] for windows (series_idx[b], origin[b])."""
        return self.synthetic.quantiles(
            series_idx, origin, levels, self.history_length, horizon_length=self.horizon_length
        )
