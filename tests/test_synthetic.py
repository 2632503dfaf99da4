"""The synthetic default dataset: deterministic, MHLV-shaped, and its oracle is exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from anyq.data import generate_synthetic, make_windows


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(seed=0)


def test_deterministic_per_seed_and_different_across_seeds(data):
    again = generate_synthetic(seed=0)
    np.testing.assert_array_equal(again.panel.values, data.panel.values)
    assert again.panel.fingerprint() == data.panel.fingerprint()
    other = generate_synthetic(seed=1)
    assert other.panel.fingerprint() != data.panel.fingerprint()
    assert np.nanmean(np.abs(other.panel.values - data.panel.values)) > 0


def test_layout_and_size(data):
    panel = data.panel
    assert data.name == "synthetic"
    assert panel.n_series == 8 and panel.values.dtype == np.float32
    assert panel.index[0] == pd.Timestamp("2015-01-01") and panel.index[-1] == pd.Timestamp("2017-12-31 23:00")
    big = generate_synthetic(seed=0, size=2, gaps=False)
    assert big.panel.n_series == 16
    # series i does not depend on how many series are generated
    np.testing.assert_array_equal(big.panel.values[:8], generate_synthetic(seed=0, gaps=False).panel.values)
    assert not np.isnan(big.panel.values).any()


def test_gaps_and_late_start(data):
    missing = np.isnan(data.panel.values)
    late = np.argmax(~missing[7])
    assert missing[7, :late].all() and 0.25 * data.panel.n_steps < late < 0.35 * data.panel.n_steps
    interior = missing[:7].sum()
    assert 6 < interior < 200  # a few short gaps, one of them 48 hours
    runs = np.diff(np.concatenate([[0], missing[:7].ravel().astype(int), [0]]))
    assert (np.flatnonzero(runs == -1) - np.flatnonzero(runs == 1)).max() == 48


def test_mhlv_like_shape(data):
    scale = data.panel.scale()
    assert scale.min() < 1000 and scale.max() > 10000  # hundreds to tens of thousands of MW
    index = data.panel.index
    m = data.mean
    by_hour = np.stack([m[:, index.hour == h].mean(axis=1) for h in range(24)], axis=1)
    assert ((by_hour.max(axis=1) - by_hour.min(axis=1)) / by_hour.mean(axis=1) > 0.1).all()  # daily cycle
    sunday = m[:, (index.weekday == 6) & (index.hour == 12)].mean(axis=1)
    wednesday = m[:, (index.weekday == 2) & (index.hour == 12)].mean(axis=1)
    assert (sunday < 0.95 * wednesday).all()  # weekly cycle
    christmas = data.panel.position("2015-12-25 12:00")
    assert (m[:, christmas] < 0.96 * m[:, christmas - 7 * 24]).all()  # holiday drop vs a week before
    assert (m[:, christmas] > 0.85 * m[:, christmas - 7 * 24]).all()  # ... but a modest one
    noise = (data.panel.values - m) / m
    sd = np.nanstd(noise, axis=1)
    assert (sd > 0.012).all() and (sd < 0.045).all()  # noise 1.5-4 % of the load
    # heteroscedastic: the hourly innovations of the AR(1) noise are larger in some hours
    e = data.panel.values - m
    innovation = (e[:, 1:] - data.phi[:, None] * e[:, :-1]) / m[:, 1:]
    hours = index.hour[1:]
    sd_by_hour = np.stack([np.nanstd(innovation[:, hours == h], axis=1) for h in range(24)], axis=1)
    assert (sd_by_hour.max(axis=1) / sd_by_hour.min(axis=1) > 1.3).all()


def test_oracle_calibrated_over_many_windows(data):
    windows = make_windows(data.panel, (0, data.panel.n_steps), 168, 48, step=24, origin_hour=0)
    levels = np.array([0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95])
    fc = data.quantiles(windows.series_idx, windows.origin, levels, history_length=168)
    assert fc.shape == (len(windows), 48, levels.size)
    t = windows.origin[:, None] + np.arange(48)
    y = data.panel.values[windows.series_idx[:, None], t]
    ok = ~np.isnan(y)
    below = (y[..., None] <= fc)[ok]  # [n_targets, Q]
    np.testing.assert_allclose(below.mean(axis=0), levels, atol=0.015)
    coverage = ((y >= fc[..., 1]) & (y <= fc[..., 5]))[ok].mean()
    assert abs(coverage - 0.8) < 0.015
    assert (np.diff(fc, axis=-1) > 0).all()  # quantiles increase with the level
    # forecasts sharpen near the origin: the AR(1) memory of the last observation
    width = (fc[..., 5] - fc[..., 1]).mean(axis=0)
    assert width[0] < 0.6 * width[-1]


def test_oracle_conditions_on_last_observed_value(data):
    """Hand computation for a window whose hour before the origin is missing."""
    missing = np.isnan(data.panel.values)
    s, hole = next((i, np.flatnonzero(missing[i])[0]) for i in range(7) if missing[i].any())
    origin = hole + 1  # y[origin - 1] is NaN
    tau = max(t for t in range(origin) if not missing[s, t])
    level = np.array([0.3])
    fc = data.quantiles([s], [origin], level, history_length=168, horizon_length=5)[0, :, 0]
    phi = data.phi[s]
    e_tau = float(data.panel.values[s, tau]) - data.mean[s, tau]
    for h in range(5):
        t = origin + h
        var = 0.0
        for u in range(tau + 1, t + 1):
            var = phi**2 * var + data.innovation_sd[s, u] ** 2
        mean = data.mean[s, t] + phi ** (t - tau) * e_tau
        expected = mean + np.sqrt(var) * -0.5244005127080407  # norm.ppf(0.3)
        assert fc[h] == pytest.approx(expected, rel=1e-6)


def test_oracle_without_observation_uses_marginal_law(data):
    first = int(np.argmax(~np.isnan(data.panel.values[7])))
    fc = data.quantiles([7], [first], np.array([0.5, 0.8413447460685429]), history_length=168, horizon_length=3)
    np.testing.assert_allclose(fc[0, :, 0], data.mean[7, first : first + 3], rtol=1e-6)
    np.testing.assert_allclose(fc[0, :, 1] - fc[0, :, 0], np.sqrt(data.marginal_var[7, first : first + 3]), rtol=1e-4)
    with pytest.raises(ValueError, match="outside"):
        data.quantiles([0], [10], np.array([0.5]), history_length=168)


def test_default_split(data):
    splits = data.default_split()
    index = data.panel.index
    assert splits.describe("train", index) == "2015-01-01 00:00 to 2016-12-31 23:00"
    assert splits.describe("val", index) == "2017-01-01 00:00 to 2017-06-30 23:00"
    assert splits.describe("test", index) == "2017-07-01 00:00 to 2017-12-31 23:00"
