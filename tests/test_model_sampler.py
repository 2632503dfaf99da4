"""Quantile sampler: bin probabilities, drawing, vectorised EMA update, checkpoint state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from anyq.model.sampler import Q_EPS
from anyq.model.sampler import QuantileSampler as _Sampler


def QuantileSampler(**kwargs) -> _Sampler:  # noqa: N802 - these tests read the raw bin-loss signal
    return _Sampler(**{"signal": "raw", **kwargs})


def _with_losses(losses: list[float], **kwargs) -> QuantileSampler:
    sampler = QuantileSampler(num_bins=len(losses), **kwargs)
    sampler.bin_loss.copy_(torch.tensor(losses))
    sampler.bin_seen.fill_(True)
    return sampler


def test_probabilities_hand_computed_with_temperature_and_floor() -> None:
    sampler = _with_losses([1.0, 2.0, 3.0, 0.2], temperature=0.5, min_prob=0.1)
    # (loss / mean) ** 2, normalised: the mean cancels -> [1, 4, 9, 0.04] / 14.04
    raw = [1 / 14.04, 4 / 14.04, 9 / 14.04, 0.04 / 14.04]  # 0.0712, 0.2849, 0.6410, 0.0028
    floored = [0.1, raw[1], raw[2], 0.1]
    expected = [p / sum(floored) for p in floored]
    torch.testing.assert_close(sampler.probabilities(), torch.tensor(expected))
    # the documented consequence of a single floor-then-renormalise pass
    assert sampler.probabilities()[0] < 0.1
    assert sampler.probabilities()[0] == pytest.approx(0.1 / (0.2 + 13 / 14.04))


def test_probabilities_temperature_one_is_proportional_to_loss() -> None:
    sampler = _with_losses([0.5, 1.0, 2.5, 1.0], temperature=1.0, min_prob=0.0)
    torch.testing.assert_close(sampler.probabilities(), torch.tensor([0.1, 0.2, 0.5, 0.2]))


def test_high_temperature_flattens_and_low_temperature_sharpens() -> None:
    losses = [1.0, 2.0, 4.0, 8.0]
    hot = _with_losses(losses, temperature=100.0, min_prob=0.0).probabilities()
    cold = _with_losses(losses, temperature=0.01, min_prob=0.0).probabilities()
    assert (hot - 0.25).abs().max() < 0.01
    assert cold[3] > 0.999 and torch.isfinite(cold).all()


def test_unseen_bins_count_as_average_and_empty_state_is_uniform() -> None:
    sampler = QuantileSampler(num_bins=4, min_prob=0.0)
    torch.testing.assert_close(sampler.probabilities(), torch.full((4,), 0.25))
    sampler.bin_loss[:2] = torch.tensor([1.0, 3.0])
    sampler.bin_seen[:2] = True
    torch.testing.assert_close(sampler.probabilities(), torch.tensor([1.0, 3.0, 2.0, 2.0]) / 8)


def test_update_hand_computed_ema_only_for_observed_bins() -> None:
    sampler = QuantileSampler(num_bins=10, momentum=0.9)
    sampler.update(torch.tensor([[0.05, 0.06, 0.55]]), torch.tensor([[1.0, 3.0, 5.0]]))
    expected = torch.zeros(10)
    expected[0], expected[5] = 2.0, 5.0  # first observation initialises with the batch mean
    torch.testing.assert_close(sampler.bin_loss, expected)
    sampler.update(torch.tensor([[0.01], [0.99]]), torch.tensor([[4.0], [7.0]]))
    expected[0], expected[9] = 0.9 * 2.0 + 0.1 * 4.0, 7.0  # bin 5 not observed: untouched
    torch.testing.assert_close(sampler.bin_loss, expected)
    assert sampler.bin_count.tolist() == [3, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert sampler.bin_seen.tolist() == [True, False, False, False, False, True, False, False, False, True]
    assert int(sampler.num_updates) == 2


@pytest.mark.parametrize("kind", ["adaptive", "uniform"])
def test_vectorised_update_equals_loop_update(kind: str) -> None:
    gen = torch.Generator().manual_seed(0)
    fast = QuantileSampler(kind=kind, num_bins=20, momentum=0.8)
    slow = QuantileSampler(kind=kind, num_bins=20, momentum=0.8)
    edges = torch.tensor([[0.0, 1.0, 0.05, 0.5, Q_EPS, 1.0 - Q_EPS]])  # bin edges and extremes
    for step in range(15):
        q = fast.sample(16, generator=gen)
        if step % 5 == 0:
            q = torch.cat([q.reshape(-1), edges.reshape(-1)]).reshape(-1, 3)
        loss = torch.rand(q.shape, generator=gen) * (1 + q)
        fast.update(q, loss)
        slow.update_loop(q, loss)
    torch.testing.assert_close(fast.bin_loss, slow.bin_loss, rtol=1e-5, atol=1e-7)
    assert torch.equal(fast.bin_seen, slow.bin_seen)
    assert torch.equal(fast.bin_count, slow.bin_count)
    assert int(fast.num_updates) == int(slow.num_updates) == 15
    assert fast.bin_seen.sum() > 10  # the comparison covered many bins


def test_uniform_kind_tracks_statistics_and_gives_importance() -> None:
    sampler = QuantileSampler(kind="uniform", num_bins=4, min_prob=0.0)
    sampler.update(torch.tensor([[0.1, 0.3, 0.6, 0.9]]), torch.tensor([[1.0, 2.0, 4.0, 1.0]]))
    w = sampler.importance(torch.tensor([0.1, 0.3, 0.6, 0.9]))
    torch.testing.assert_close(w, torch.tensor([0.25, 0.5, 1.0, 0.25]))


def test_importance_is_normalised_probability_of_the_bin_without_gradient() -> None:
    sampler = _with_losses([1.0, 2.0, 4.0, 8.0], min_prob=0.0)
    q = torch.tensor([[0.0, 0.26], [0.74, 0.999]], requires_grad=True)
    w = sampler.importance(q)
    torch.testing.assert_close(w, torch.tensor([[0.125, 0.25], [0.5, 1.0]]))
    assert w.shape == q.shape and not w.requires_grad


def test_sample_shape_bounds_and_uniform_distribution() -> None:
    gen = torch.Generator().manual_seed(1)
    q = QuantileSampler(kind="uniform", num_adaptive_quantiles=5).sample(4000, generator=gen)
    assert q.shape == (4000, 5) and q.dtype == torch.float32
    assert (q > 0).all() and (q < 1).all()
    assert stats.kstest(q.reshape(-1).numpy(), "uniform").pvalue > 1e-3


def test_adaptive_draws_follow_bin_probabilities_chi_square() -> None:
    losses = [0.2, 0.5, 1.0, 3.0, 0.1, 0.1, 2.0, 0.4]
    sampler = _with_losses(losses, temperature=0.7, min_prob=0.02, num_adaptive_quantiles=4)
    probs = sampler.probabilities().double().numpy()
    q = sampler.sample(5000, generator=torch.Generator().manual_seed(123))
    assert (q > 0).all() and (q < 1).all()
    bins = np.floor(q.reshape(-1).numpy() * 8).astype(int)
    observed = np.bincount(bins, minlength=8)
    expected = probs / probs.sum() * observed.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    assert stats.chisquare(observed).pvalue < 1e-12  # and they are far from uniform
    inside = q.reshape(-1).numpy() * 8 - bins  # position within the drawn bin
    assert stats.kstest(inside, "uniform").pvalue > 1e-3


def test_samples_on_buffer_device_and_reproducible_with_generator() -> None:
    sampler = _with_losses([1.0, 5.0, 2.0])
    a = sampler.sample(7, generator=torch.Generator().manual_seed(5))
    b = sampler.sample(7, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.device == sampler.bin_loss.device


def test_state_dict_round_trip_restores_state_and_draws(tmp_path) -> None:
    gen = torch.Generator().manual_seed(3)
    sampler = QuantileSampler(num_bins=50, momentum=0.9, temperature=0.5)
    for _ in range(5):
        q = sampler.sample(32, generator=gen)
        sampler.update(q, (q - 0.3).abs())
    path = tmp_path / "sampler.pt"
    torch.save(sampler.state_dict(), path)
    assert set(sampler.state_dict()) == {"bin_loss", "bin_below", "bin_seen", "bin_count", "num_updates"}
    restored = QuantileSampler(num_bins=50, momentum=0.9, temperature=0.5)
    assert not torch.equal(restored.probabilities(), sampler.probabilities())
    restored.load_state_dict(torch.load(path))
    for name, buf in sampler.state_dict().items():
        assert torch.equal(restored.state_dict()[name], buf), name
    assert torch.equal(restored.probabilities(), sampler.probabilities())
    draw = sampler.sample(64, generator=torch.Generator().manual_seed(9))
    assert torch.equal(restored.sample(64, generator=torch.Generator().manual_seed(9)), draw)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "beta"}, "model.sampler.kind='beta' must be one of ['adaptive', 'uniform']"),
        ({"temperature": 0.0}, "model.sampler.temperature=0.0 must be > 0"),
        ({"momentum": 1.0}, "model.sampler.momentum=1.0 must be in [0, 1)"),
        ({"num_bins": 0}, "model.sampler.num_bins=0 must be >= 1"),
        ({"num_adaptive_quantiles": 0}, "model.sampler.num_adaptive_quantiles=0 must be >= 1"),
        (
            {"num_bins": 100, "min_prob": 0.02},
            "model.sampler.min_prob=0.02 times model.sampler.num_bins=100 must lie in [0, 1]",
        ),
    ],
)
def test_invalid_configuration_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        QuantileSampler(**kwargs)
    assert str(err.value) == message
