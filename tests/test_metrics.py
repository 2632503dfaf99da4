"""Functional scores, the level grid and seed ensembles against hand-computed values and
reference libraries (properscoring, scoringrules)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from anyq.metrics import (
    coverage,
    crossing_rate,
    crps,
    crps_by_horizon,
    crps_normalised,
    ensemble_mean,
    evaluation_grid,
    interval_width,
    level_index,
    mape,
    marfe,
    per_window_crps,
    pinball_by_level,
    pinball_loss,
    reliability,
    smape,
    valid_windows,
)
from anyq.metrics.levels import level_bracket

NAN = float("nan")


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def linear_forecast(n: int, h: int, levels: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """Forecast whose quantile at level q is scale * q, in every window and step."""
    return (scale * levels).expand(n, h, -1).clone()


# --- level grid ----------------------------------------------------------------------------


def test_evaluation_grid_is_percentiles():
    g = evaluation_grid()
    assert g.shape == (99,)
    assert torch.allclose(g, torch.arange(1, 100, dtype=torch.float32) / 100)
    assert g[0].item() == pytest.approx(0.01) and g[-1].item() == pytest.approx(0.99)
    assert evaluation_grid(3, torch.float64).tolist() == [0.25, 0.5, 0.75]
    with pytest.raises(ValueError, match="at least one level"):
        evaluation_grid(0)


def test_level_index_finds_level_or_names_it():
    g = evaluation_grid()
    assert level_index(g, 0.05) == 4
    assert level_index(g, 0.95) == 94
    assert level_index(g, 0.5) == 49
    with pytest.raises(ValueError, match="0.025"):
        level_index(g, 0.025)


def test_level_bracket_exact_between_and_outside():
    g = evaluation_grid()
    assert level_bracket(g, 0.05) == (4, 4, 0.0)
    lo, hi, w = level_bracket(g, 0.025)
    assert (lo, hi) == (1, 2) and w == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="0.005"):
        level_bracket(g, 0.005)


# --- CRPS ----------------------------------------------------------------------------------


def test_pinball_loss_hand_values():
    # y=0.3: level 0.1 forecast 0.1 is below (0.1*0.2); 0.5 at 0.5 above (0.5*0.2); 0.9 at 0.9 above (0.1*0.6)
    loss = pinball_loss(t([[[0.1, 0.5, 0.9]]]), t([[0.3]]), t([0.1, 0.5, 0.9]))
    assert torch.allclose(loss, t([[[0.02, 0.1, 0.06]]]))


def test_crps_tiny_hand_computed():
    levels = t([0.1, 0.5, 0.9])
    forecast = t([[[0.1, 0.5, 0.9], [0.0, 1.0, 2.0]]])
    target = t([[0.3, 3.0]])
    # step 1: pinball (0.02, 0.1, 0.06); step 2, y=3 above all: (0.1*3, 0.5*2, 0.9*1)
    expected = 2 * (0.02 + 0.1 + 0.06 + 0.3 + 1.0 + 0.9) / 6
    assert crps(forecast, target, levels).item() == pytest.approx(expected)
    assert crps_by_horizon(forecast, target, levels).tolist() == pytest.approx([2 * 0.18 / 3, 2 * 2.2 / 3])
    assert pinball_by_level(forecast, target, levels).tolist() == pytest.approx([0.16, 0.55, 0.48])


def test_crps_matches_scoringrules_crps_quantile_on_99_grid():
    sr = pytest.importorskip("scoringrules")
    # scoringrules.crps_quantile = 2/|Q| sum_q pinball_q per observation, the same convention
    # as ours, so the mean over observations must agree exactly.
    gen = torch.Generator().manual_seed(1)
    levels = evaluation_grid(99, torch.float64)
    forecast = torch.randn(6, 5, 99, generator=gen, dtype=torch.float64).sort(dim=-1).values * 3 + 10
    target = torch.randn(6, 5, generator=gen, dtype=torch.float64) * 3 + 10
    ref = sr.crps_quantile(target.numpy(), forecast.numpy(), levels.numpy(), backend="numpy")
    assert crps(forecast, target, levels).item() == pytest.approx(float(np.mean(ref)), rel=1e-12)
    assert per_window_crps(forecast, target, levels).numpy() == pytest.approx(ref.mean(axis=1), rel=1e-12)


def test_quantile_crps_approaches_gaussian_crps_on_fine_grid():
    ps = pytest.importorskip("properscoring")
    rng = np.random.default_rng(0)
    mu, sigma = 3.0, 2.0
    y = rng.normal(mu, sigma, size=(50, 4))
    ref = float(ps.crps_gaussian(y, mu, sigma).mean())
    errors = {}
    for num in (99, 999):
        levels = evaluation_grid(num, torch.float64)
        forecast = torch.tensor(norm.ppf(levels.numpy(), mu, sigma)).expand(50, 4, num)
        errors[num] = abs(crps(forecast, torch.tensor(y), levels).item() - ref) / ref
    assert errors[999] < 2e-3
    assert errors[999] < errors[99] / 5  # the approximation converges as the grid refines


def test_nan_windows_are_skipped_not_scored():
    levels = t([0.1, 0.5, 0.9])
    forecast = t([[[0.1, 0.5, 0.9], [0.0, 1.0, 2.0]], [[5.0, 6.0, 7.0], [5.0, 6.0, 7.0]]])
    target = t([[0.3, 3.0], [NAN, 6.0]])
    assert valid_windows(target).tolist() == [True, False]
    assert crps(forecast, target, levels).item() == pytest.approx(crps(forecast[:1], target[:1], levels).item())
    pw = per_window_crps(forecast, target, levels)
    assert math.isnan(pw[1].item()) and pw[0].item() == pytest.approx(crps(forecast[:1], target[:1], levels).item())
    assert math.isnan(crps(forecast[1:], target[1:], levels).item())  # nothing scorable: NaN, not 0 or inf


def test_crps_normalised_weighs_series_equally():
    levels = t([0.5])
    # series 0 (scale 10): pinball 0.5*|f-y| = 1 and 0.5 -> mean 0.75; mean |y| 10 -> ratio 0.075
    # series 1 (scale 1000), two windows: pinball 0, 50, 0, 0 -> mean 12.5; mean |y| 1000 -> 0.0125
    # a NaN window of series 0 is skipped
    forecast = t([[[12.0], [9.0]], [[1000.0], [1100.0]], [[1000.0], [1000.0]], [[0.0], [0.0]]])
    target = t([[10.0, 10.0], [1000.0, 1000.0], [1000.0, 1000.0], [NAN, 3.0]])
    series = torch.tensor([0, 1, 1, 0])
    expected = 100 * 2 * (0.075 + 0.0125) / 2
    assert crps_normalised(forecast, target, levels, series).item() == pytest.approx(expected)
    # the plain CRPS is dominated by the large series
    assert crps(forecast, target, levels).item() == pytest.approx(2 * (1 + 0.5 + 50) / 6)


def test_crps_normalised_leaves_out_series_with_zero_scale():
    levels = t([0.5])
    forecast = t([[[12.0]], [[1.0]]])
    target = t([[10.0], [0.0]])
    assert crps_normalised(forecast, target, levels, torch.tensor([0, 1])).item() == pytest.approx(200 * 1 / 10)


# --- intervals, calibration, point scores ------------------------------------------------


def test_coverage_and_width_hand_computed():
    levels = t([0.05, 0.5, 0.95])
    # five windows, one step; interval [0, 10] except the last window [2, 4]
    forecast = t([[[0.0, 5.0, 10.0]]] * 4 + [[[2.0, 3.0, 4.0]]])
    target = t([[-1.0], [0.0], [10.0], [11.0], [3.0]])
    assert coverage(forecast, target, levels, 0.9).item() == pytest.approx(3 / 5)  # bounds are inside
    assert interval_width(forecast, levels, 0.9).item() == pytest.approx((4 * 10 + 2) / 5)


def test_width_with_target_uses_scored_windows_only():
    levels = t([0.05, 0.5, 0.95])
    forecast = t([[[0.0, 5.0, 10.0]], [[0.0, 1.0, 2.0]]])
    target = t([[1.0], [NAN]])
    assert interval_width(forecast, levels, 0.9, target=target).item() == pytest.approx(10.0)
    assert interval_width(forecast, levels, 0.9).item() == pytest.approx(6.0)


def test_coverage_95_on_99_grid_interpolates_bounds():
    levels = evaluation_grid(99, torch.float64)
    forecast = linear_forecast(4, 1, levels)  # q-quantile = 100 q, so the 95 % interval is [2.5, 97.5]
    target = t([[2.4], [2.6], [50.0], [97.6]])
    assert coverage(forecast, target, levels, 0.95).item() == pytest.approx(0.5)
    assert interval_width(forecast, levels, 0.95).item() == pytest.approx(95.0)
    assert coverage(forecast, target, levels, 0.9).item() == pytest.approx(0.25)  # exact levels [5, 95]


def test_coverage_raises_for_grid_without_needed_levels():
    levels = t([0.1, 0.3, 0.5, 0.7, 0.9])
    forecast = linear_forecast(2, 3, levels)
    target = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="0.05"):
        coverage(forecast, target, levels, 0.9)
    with pytest.raises(ValueError, match="0.025"):
        interval_width(forecast, levels, 0.95)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        coverage(forecast, target, levels, 1.2)


def test_reliability_and_marfe_hand_computed():
    levels = t([0.25, 0.5, 0.75])
    forecast = t([[[1.0, 2.0, 3.0]]] * 4)
    target = t([[0.0], [0.5], [2.5], [4.0]])
    # below 1: {0, 0.5} -> 0.5; below 2: {0, 0.5} -> 0.5; below 3: {0, 0.5, 2.5} -> 0.75
    assert reliability(forecast, target, levels).tolist() == pytest.approx([0.5, 0.5, 0.75])
    assert marfe(forecast, target, levels).item() == pytest.approx((0.25 + 0 + 0) / 3)
    # a target equal to the forecast is not below it
    ties = t([[1.0], [2.0], [3.0], [3.0]])
    assert reliability(forecast, ties, levels).tolist() == pytest.approx([0.0, 0.25, 0.5])


def test_mape_smape_hand_computed():
    levels = t([0.1, 0.5, 0.9])
    median = [110.0, 90.0, 50.0, 0.0]
    forecast = torch.stack([t([[m - 1, m, m + 1]]) for m in median])
    target = t([[100.0], [100.0], [0.0], [0.0]])
    # MAPE leaves out y == 0: (10/100 + 10/100) / 2
    assert mape(forecast, target, levels).item() == pytest.approx(10.0)
    # sMAPE: 200 * mean(10/210, 10/190, 50/50, 0/0 := 0)
    assert smape(forecast, target, levels).item() == pytest.approx(200 * (10 / 210 + 10 / 190 + 1 + 0) / 4)


def test_crossing_rate_hand_computed():
    forecast = t([[[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], [[1.0, 1.0, 0.5], [0.0, 1.0, 2.0]]])
    # decreasing pairs: 0 + 2 + 1 + 0 of 8; a tie is not a crossing
    assert crossing_rate(forecast).item() == pytest.approx(3 / 8)
    target = t([[0.0, 0.0], [NAN, 0.0]])
    assert crossing_rate(forecast, target).item() == pytest.approx(2 / 4)


def test_numpy_inputs_and_shape_errors():
    levels = np.array([0.1, 0.5, 0.9])
    forecast = np.array([[[0.1, 0.5, 0.9]]])
    assert crps(forecast, np.array([[0.3]]), levels).item() == pytest.approx(0.12)
    with pytest.raises(ValueError, match="target shape"):
        crps(forecast, np.array([[0.3, 0.4]]), levels)
    with pytest.raises(ValueError, match="levels shape"):
        crps(forecast, np.array([[0.3]]), levels[:2])
    with pytest.raises(ValueError, match=r"\[N, H, Q\]"):
        crps(forecast[0], np.array([0.3]), levels)


# --- seed ensembles ------------------------------------------------------------------------


def test_ensemble_of_identical_members_is_the_member():
    member = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ensemble_mean([member, member.clone(), member.clone()]), member)
    assert torch.allclose(ensemble_mean([member, member + 2.0]), member + 1.0)


def test_ensemble_crps_not_above_members_average():
    gen = torch.Generator().manual_seed(2)
    levels = evaluation_grid(99, torch.float64)
    target = torch.randn(20, 6, generator=gen, dtype=torch.float64)

    def member(spread: float) -> torch.Tensor:
        centre = torch.randn(20, 6, 1, generator=gen, dtype=torch.float64)
        return (centre + spread * torch.randn(99, generator=gen, dtype=torch.float64)).sort(-1).values

    a, b = member(0.8), member(1.5)
    ens = crps(ensemble_mean([a, b]), target, levels).item()
    avg = (crps(a, target, levels).item() + crps(b, target, levels).item()) / 2
    assert ens <= avg
    # convexity holds element by element, so in every window too
    pw = per_window_crps(ensemble_mean([a, b]), target, levels)
    pw_avg = (per_window_crps(a, target, levels) + per_window_crps(b, target, levels)) / 2
    assert bool((pw <= pw_avg + 1e-12).all())
    assert ens < avg - 1e-3  # different members: the gain is real, not a tie


def test_ensemble_shape_checks():
    with pytest.raises(ValueError, match="at least one"):
        ensemble_mean([])
    with pytest.raises(ValueError, match="member 1"):
        ensemble_mean([torch.zeros(2, 3, 4), torch.zeros(2, 3, 5)])
    with pytest.raises(ValueError, match=r"\[N, H, Q\]"):
        ensemble_mean([torch.zeros(3, 4)])
