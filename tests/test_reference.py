"""Reference forecasters: seasonal naive by hand, and the oracle beating it in CRPS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from anyq.data import ForecastDataModule, Panel, generate_synthetic
from anyq.metrics.functional import pinball_loss
from anyq.reference import OracleForecaster, SeasonalNaiveForecaster
from anyq.training.schema import DataConfig

GRID = np.round(np.arange(1, 100) / 100, 2)


def _crps(forecast: np.ndarray, target: np.ndarray) -> float:
    loss = pinball_loss(torch.from_numpy(forecast).double(), torch.from_numpy(target).double(),
                        torch.from_numpy(GRID))
    return 2 * loss.mean().item()


def _panel(values: np.ndarray) -> Panel:
    return Panel(ids=tuple(map(str, range(len(values)))),
                 index=pd.date_range("2020-01-06", periods=values.shape[1], freq="h"), values=values)


def test_seasonal_naive_on_a_periodic_series_is_exact():
    week = 100 + np.arange(168.0)
    panel = _panel(np.tile(week, 4)[None, :])
    model = SeasonalNaiveForecaster(season=168, horizon_length=24).fit(panel, (0, 168 * 3))
    fc = model.predict(panel.values, [0, 0], [200, 500], GRID)
    assert fc.shape == (2, 24, GRID.size)
    np.testing.assert_allclose(fc[1], np.repeat(panel.values[0, 500:524, None], GRID.size, axis=1), rtol=1e-6)


def test_seasonal_naive_error_quantiles_by_hand():
    rng = np.random.default_rng(0)
    values = np.abs(rng.normal(100, 10, size=(2, 168 * 5))).astype(np.float32).astype(np.float64)
    values[1, 400] = np.nan  # a missing value drops the errors it takes part in
    panel = _panel(values)
    model = SeasonalNaiveForecaster().fit(panel, (100, 700))
    levels = np.array([0.1, 0.5, 0.9])
    errors = values[:, 168:700] / values[:, 0:532] - 1  # training targets t in [168, 700)
    expected = np.nanquantile(errors, levels, axis=1).T
    np.testing.assert_allclose(model.error_quantiles(levels), expected)
    assert np.isnan(errors[1]).sum() == 2
    filled = np.nan_to_num(values, nan=100.0)
    fc = model.predict(filled, [1], [720], levels)
    np.testing.assert_allclose(fc[0], filled[1, 720 - 168 : 768 - 168, None] * (1 + expected[1]), rtol=1e-6)


def test_seasonal_naive_argument_checks():
    with pytest.raises(ValueError, match="horizon_length <= season"):
        SeasonalNaiveForecaster(season=24, horizon_length=48)
    with pytest.raises(RuntimeError, match="fit"):
        SeasonalNaiveForecaster().predict(np.ones((1, 500)), [0], [300], GRID)


def test_oracle_beats_seasonal_naive_on_synthetic_test_split():
    data = generate_synthetic(seed=0)
    splits = data.default_split()
    dm = ForecastDataModule(data.panel, splits, DataConfig(history_length=168, horizon_length=48), seed=0)
    windows = dm.test_windows
    target = dm.dataset("test").target_array()
    oracle = OracleForecaster(data, history_length=168).predict(windows.series_idx, windows.origin, GRID)
    np.testing.assert_array_equal(oracle, data.quantiles(windows.series_idx, windows.origin, GRID, 168))
    naive = SeasonalNaiveForecaster().fit(data.panel, splits.train)
    baseline = naive.predict(dm.filled_values, windows.series_idx, windows.origin, GRID)
    oracle_crps, naive_crps = _crps(oracle, target), _crps(baseline, target)
    assert naive_crps > 1.3 * oracle_crps
    # the oracle's CRPS is a floor in expectation: perturbing it makes it worse
    assert _crps(oracle * 1.01, target) > oracle_crps
