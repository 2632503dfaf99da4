"""Sampler signals: raw loss, loss relative to a calibrated forecast's, calibration error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from anyq.model.checks import SIGNALS
from anyq.model.sampler import QuantileSampler, calibrated_gaussian_loss


def _constructed(signal: str, losses: list[float], below: list[float], **kwargs) -> QuantileSampler:
    sampler = QuantileSampler(num_bins=len(losses), signal=signal, min_prob=0.0, **kwargs)
    sampler.bin_loss.copy_(torch.tensor(losses))
    sampler.bin_below.copy_(torch.tensor(below))
    sampler.bin_seen.fill_(True)
    return sampler


LOSSES = [0.02, 0.30, 0.40, 0.10]
BELOW = [0.30, 0.40, 0.625, 0.875]  # 4 bins: centres 0.125, 0.375, 0.625, 0.875


def test_raw_signal_is_the_bin_loss() -> None:
    sampler = _constructed("raw", LOSSES, BELOW)
    torch.testing.assert_close(sampler.signal_values(), torch.tensor(LOSSES))
    expected = torch.tensor(LOSSES) / sum(LOSSES)
    torch.testing.assert_close(sampler.probabilities(), expected)


def test_relative_signal_divides_by_the_calibrated_gaussian_loss_of_each_bin() -> None:
    sampler = _constructed("relative", LOSSES, BELOW)
    # bin average of phi(Phi^-1(q)) over [a, b]: integral by quadrature, independently
    edges = np.linspace(0, 1, 5)
    reference = []
    for a, b in zip(edges[:-1], edges[1:]):
        grid = np.linspace(a, b, 200_001)[1:-1]
        reference.append(stats.norm.pdf(stats.norm.ppf(grid)).mean())
    signal = np.array(LOSSES) / np.array(reference)
    torch.testing.assert_close(sampler.signal_values(), torch.tensor(signal, dtype=torch.float32), rtol=1e-3, atol=0)
    torch.testing.assert_close(sampler.probabilities(), torch.tensor(signal / signal.sum(), dtype=torch.float32),
                               rtol=1e-3, atol=0)


def test_calibration_signal_is_relative_error_of_the_tail_probability() -> None:
    sampler = _constructed("calibration", LOSSES, BELOW)
    centres = np.array([0.125, 0.375, 0.625, 0.875])
    signal = 1 + np.abs(np.array(BELOW) - centres) / np.minimum(centres, 1 - centres)
    # by hand: 1 + 0.175/0.125, 1 + 0.025/0.375, 1 + 0, 1 + 0
    np.testing.assert_allclose(signal, [2.4, 1 + 1 / 15, 1.0, 1.0])
    torch.testing.assert_close(sampler.signal_values(), torch.tensor(signal, dtype=torch.float32))
    torch.testing.assert_close(sampler.probabilities(), torch.tensor(signal / signal.sum(), dtype=torch.float32))


@pytest.mark.parametrize("signal", SIGNALS)
def test_temperature_and_unseen_bins_apply_to_every_signal(signal: str) -> None:
    sampler = _constructed(signal, LOSSES, BELOW, temperature=0.5)
    s = sampler.signal_values().double()
    torch.testing.assert_close(sampler.probabilities().double(), s**2 / (s**2).sum(), rtol=1e-5, atol=1e-7)
    sampler.bin_seen[1] = False  # an unseen bin counts as the mean of the seen ones
    seen = s[[0, 2, 3]]
    assert float(sampler.signal_values()[1]) == pytest.approx(float(seen.mean()), rel=1e-5)


def test_calibrated_gaussian_loss_matches_closed_form_at_the_median_and_tails() -> None:
    edges = torch.linspace(0, 1, 101, dtype=torch.float64)
    ref = calibrated_gaussian_loss(edges)
    # the expected pinball loss of a calibrated N(0, 1) forecast at q is phi(Phi^-1(q))
    assert float(ref[49]) == pytest.approx(stats.norm.pdf(0.0), rel=1e-3)
    assert float(ref[0]) == pytest.approx(stats.norm.pdf(stats.norm.ppf(np.linspace(0, 0.01, 100_001)[1:-1])).mean(),
                                          rel=1e-4)
    torch.testing.assert_close(ref, ref.flip(0))  # symmetric
    assert math.isfinite(float(ref.sum()))


def _train_on_calibrated_forecasts(sampler: QuantileSampler, steps: int, seed: int, width: float = 1.0) -> None:
    """Feed the sampler what a calibrated Gaussian forecaster would produce: per-window scale
    sigma (log-normal, so the signal must be scale-free), 48 target hours per window.
    ``width`` != 1 makes the forecast too narrow (< 1) or too wide (> 1)."""
    gen = torch.Generator().manual_seed(seed)
    horizon = 48
    for _ in range(steps):
        q = sampler.sample(256, generator=gen)
        sigma = torch.exp(torch.randn(256, 1, generator=gen) * 0.5)
        y = sigma * torch.randn(256, horizon, generator=gen)
        forecast = (width * sigma * torch.special.ndtri(q)).unsqueeze(1).expand(-1, horizon, -1)
        diff = y.unsqueeze(-1) - forecast
        loss = torch.maximum(q.unsqueeze(1) * diff, (q.unsqueeze(1) - 1) * diff).mean(dim=1)
        below = (y.unsqueeze(-1) < forecast).float().mean(dim=1)
        sampler.update(q, loss, below)


def _chi_square_p(sampler: QuantileSampler, draws: int = 10_000, coarse: int = 10, seed: int = 123) -> float:
    q = sampler.sample(draws, generator=torch.Generator().manual_seed(seed))[:, 0]
    counts = np.histogram(q.numpy(), bins=coarse, range=(0, 1))[0]
    return float(stats.chisquare(counts).pvalue)


@pytest.mark.parametrize("signal", ["relative", "calibration"])
def test_scale_free_signals_draw_uniformly_under_a_calibrated_forecast(signal: str) -> None:
    sampler = QuantileSampler(num_adaptive_quantiles=1, signal=signal, momentum=0.995, min_prob=0.0)
    _train_on_calibrated_forecasts(sampler, steps=1200, seed=0)
    assert _chi_square_p(sampler) > 0.01
    # and in the tails: the share below 0.05 or above 0.95 is the nominal 10 %
    q = sampler.sample(20_000, generator=torch.Generator().manual_seed(7))[:, 0]
    tails = float(((q < 0.05) | (q > 0.95)).float().mean())
    assert tails == pytest.approx(0.10, abs=0.015)


def test_raw_signal_starves_the_tails_under_a_calibrated_forecast() -> None:
    """The same test has power: the raw loss signal fails it (the issue's 2 % tails)."""
    sampler = QuantileSampler(num_adaptive_quantiles=1, signal="raw", momentum=0.995, min_prob=0.0)
    _train_on_calibrated_forecasts(sampler, steps=1200, seed=0)
    assert _chi_square_p(sampler) < 1e-6
    q = sampler.sample(20_000, generator=torch.Generator().manual_seed(7))[:, 0]
    assert float(((q < 0.05) | (q > 0.95)).float().mean()) < 0.05


@pytest.mark.parametrize("signal", ["relative", "calibration"])
def test_a_too_narrow_forecast_gets_its_tails_drawn_more(signal: str) -> None:
    sampler = QuantileSampler(num_adaptive_quantiles=1, signal=signal, momentum=0.99, min_prob=0.0)
    _train_on_calibrated_forecasts(sampler, steps=600, seed=1, width=0.6)
    q = sampler.sample(20_000, generator=torch.Generator().manual_seed(7))[:, 0]
    tails = float(((q < 0.05) | (q > 0.95)).float().mean())
    assert tails > 0.13


def test_update_with_coverage_equals_loop_update() -> None:
    gen = torch.Generator().manual_seed(0)
    fast = QuantileSampler(num_bins=20, momentum=0.8, signal="calibration")
    slow = QuantileSampler(num_bins=20, momentum=0.8, signal="calibration")
    for _ in range(10):
        q = fast.sample(16, generator=gen)
        loss = torch.rand(q.shape, generator=gen)
        below = torch.rand(q.shape, generator=gen)
        fast.update(q, loss, below)
        slow.update_loop(q, loss, below)
    torch.testing.assert_close(fast.bin_loss, slow.bin_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast.bin_below, slow.bin_below, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast.probabilities(), slow.probabilities())


def test_state_dict_without_coverage_statistics_still_loads() -> None:
    """Checkpoints and served models written before ``bin_below`` existed."""
    old = QuantileSampler(num_bins=10, signal="raw")
    old.update(torch.tensor([[0.05, 0.55]]), torch.tensor([[1.0, 2.0]]))
    state = {k: v for k, v in old.state_dict().items() if k != "bin_below"}
    new = QuantileSampler(num_bins=10, signal="calibration")
    new.load_state_dict(state)
    torch.testing.assert_close(new.bin_loss, old.bin_loss)
    assert torch.isfinite(new.probabilities()).all()


def test_signal_is_validated() -> None:
    with pytest.raises(ValueError, match="model.sampler.signal='loss'"):
        QuantileSampler(signal="loss")


def test_update_stays_on_device_without_host_sync() -> None:
    """No .item()/.tolist() on the per-step path: the update works under a sync guard."""
    sampler = QuantileSampler(num_bins=10, signal="relative")
    q = sampler.sample(8)
    if hasattr(torch.cuda, "set_sync_debug_mode") and torch.cuda.is_available():  # pragma: no cover - GPU only
        torch.cuda.set_sync_debug_mode("error")
    sampler.update(q, torch.rand(q.shape), torch.rand(q.shape))
    sampler.sample(8)
