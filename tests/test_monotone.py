"""Monotone quantiles by rearrangement, for every variant, in training, scoring and serving."""

from __future__ import annotations

import pytest
import torch

from anyq.metrics.functional import pinball_loss
from anyq.model import build_forecaster
from anyq.model.monotone import interpolate_sorted, rearrangement_grid
from anyq.training.config_tree import VARIANTS, variant_config

L, H = 48, 24


def _model(variant: str, monotone: str = "rearrange", seed: int = 0):
    torch.manual_seed(seed)
    sampler, attention = variant_config(
        variant, {"num_bins": 20}, {"patch_length": 24, "d_model": 16, "n_heads": 2, "num_blocks": 1, "d_ff": 16}
    )
    model = build_forecaster(L, H, backbone={"num_blocks": 2, "layer_width": 32}, sampler=sampler,
                             attention=attention, monotone=monotone, monotone_grid=49)
    # a trained-looking sampler: uneven importance so the modulation varies with q
    model.sampler.bin_loss.copy_(torch.linspace(0.1, 2.0, 20))
    model.sampler.bin_seen.fill_(True)
    # large random output weights make an untrained model cross often
    with torch.no_grad():
        for block in model.backbone.blocks:
            block.forecast.weight.mul_(30.0)
        if model.attention is not None:
            torch.nn.init.normal_(model.attention.head.weight, std=0.5)
    return model.eval()


def _history(n: int = 6) -> torch.Tensor:
    t = torch.arange(L, dtype=torch.float32)
    return 100 + 10 * torch.sin(2 * torch.pi * t / 24) + torch.randn(n, L, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forecasts_are_non_decreasing_in_q_for_every_variant(variant: str) -> None:
    model = _model(variant)
    x = _history()
    q = torch.sort(torch.rand(6, 40, generator=torch.Generator().manual_seed(2)) * 0.998 + 0.001).values
    q[:, 0], q[:, -1] = 1e-4, 1 - 1e-4  # beyond the grid too
    with torch.no_grad():
        raw = model(x, q, raw=True)
        forecast = model(x, q)
    assert (raw.diff(dim=-1) < 0).any(), "the raw model should cross for this test to mean anything"
    assert (forecast.diff(dim=-1) >= 0).all()


@pytest.mark.parametrize("variant", ["baseline_adaptive", "adaptive_attention"])
def test_any_quantile_property_holds_after_rearrangement(variant: str) -> None:
    model = _model(variant)
    x = _history()
    levels = torch.tensor([0.013, 0.1, 0.37, 0.5, 0.77, 0.9, 0.995])
    with torch.no_grad():
        together = model(x, levels.expand(6, -1))
        for i, level in enumerate(levels):
            alone = model(x, level.reshape(1, 1).expand(6, 1))
            torch.testing.assert_close(alone[..., 0], together[..., i], rtol=1e-5, atol=1e-4)


def test_on_the_grid_rearrangement_is_sorting_and_never_raises_the_pinball_loss() -> None:
    model = _model("adaptive_attention")
    x = _history()
    grid = model.monotone_levels.expand(6, -1)
    target = x[:, :H] + torch.randn(6, H, generator=torch.Generator().manual_seed(3)) * 5
    with torch.no_grad():
        forecast, raw = model.forward_with_raw(x, grid)
    torch.testing.assert_close(forecast, raw.sort(dim=-1).values)
    rearranged_loss = pinball_loss(forecast, target, grid).sum(dim=-1)
    raw_loss = pinball_loss(raw, target, grid).sum(dim=-1)
    assert (rearranged_loss <= raw_loss + 1e-3).all()
    assert (rearranged_loss < raw_loss - 1e-3).any()


def test_interpolation_is_exact_at_grid_levels_and_monotone_beyond() -> None:
    grid = rearrangement_grid(9)
    values = torch.sort(torch.randn(2, 3, 9), dim=-1).values
    on_grid = interpolate_sorted(values, grid, grid.expand(2, -1))
    torch.testing.assert_close(on_grid, values)
    q = torch.linspace(1e-5, 1 - 1e-5, 301).expand(2, -1)
    out = interpolate_sorted(values, grid, q)
    assert (out.diff(dim=-1) >= -1e-6).all()
    # a Gaussian curve (linear in z) is reproduced everywhere, extrapolation included
    z = torch.special.ndtri(grid)
    gaussian = (3.0 + 2.0 * z).expand(1, 1, -1)
    torch.testing.assert_close(interpolate_sorted(gaussian, grid, q[:1]), 3.0 + 2.0 * torch.special.ndtri(q[:1])[:, None],
                               rtol=1e-4, atol=1e-4)


def test_rearrangement_leaves_a_monotone_model_unchanged() -> None:
    model = _model("baseline_adaptive")
    with torch.no_grad():  # forecast = a + b * q with b > 0 per window: monotone already
        for block in model.backbone.blocks:
            block.forecast.weight.zero_()
            block.forecast.bias.zero_()
        last = model.backbone.blocks[-1]
        last.forecast.bias.fill_(0.5)
    x = _history()
    q = torch.rand(6, 10).sort(dim=-1).values
    with torch.no_grad():
        torch.testing.assert_close(model(x, q), model(x, q, raw=True))


def test_training_loss_scores_sorted_forecasts_against_sorted_levels() -> None:
    model = _model("adaptive_attention").train()
    x = _history(8)
    target = x[:, :H]
    gen = torch.Generator().manual_seed(5)
    loss, q, per_level = model.training_loss(x, target, generator=gen)
    assert (q.diff(dim=-1) >= 0).all()
    loss.backward()
    assert torch.isfinite(loss)
    gen = torch.Generator().manual_seed(5)
    plain = _model("adaptive_attention", monotone="none").train()
    _, q_plain, _ = plain.training_loss(x, target, generator=gen)
    torch.testing.assert_close(q, q_plain.sort(dim=-1).values)


def test_monotone_is_validated() -> None:
    with pytest.raises(ValueError, match="model.monotone='sorted'"):
        _model("baseline_adaptive", monotone="sorted")
