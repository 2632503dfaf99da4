"""Split-conformal calibration per level: nominal coverage on its own calibration windows."""

from __future__ import annotations

import math

import pytest
import torch

from anyq.model import build_forecaster
from anyq.model.conformal import ConformalOffsets
from anyq.training.config_tree import variant_config

L, H = 48, 24


def _model(monotone: str = "rearrange", seed: int = 0):
    torch.manual_seed(seed)
    sampler, attention = variant_config("baseline_adaptive", {"num_bins": 10}, {})
    return build_forecaster(L, H, backbone={"num_blocks": 2, "layer_width": 32}, sampler=sampler,
                            attention=attention, monotone=monotone, monotone_grid=19, conformal="per_level").eval()


def _batches(n_batches: int = 4, size: int = 32, seed: int = 1):
    """Windows whose targets the untrained model forecasts badly (biased and too narrow)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        level = 50 + 100 * torch.rand(size, 1, generator=gen)
        history = level + 5 * torch.randn(size, L, generator=gen)
        target = 1.2 * level + 10 * torch.randn(size, H, generator=gen)
        out.append({"history": history, "target": target})
    return out


def test_offsets_are_the_conformal_order_statistics_of_the_residuals() -> None:
    offsets = ConformalOffsets(torch.tensor([0.1, 0.5, 0.9]))
    residuals = torch.arange(1.0, 11.0).unsqueeze(1).expand(10, 3)  # 1..10 in each column
    # rank ceil((M + 1) q) with M = 10: ceil(1.1) = 2, ceil(5.5) = 6, ceil(9.9) = 10
    torch.testing.assert_close(offsets.fit(residuals), torch.tensor([2.0, 6.0, 10.0]))
    assert bool(offsets.fitted)
    # between levels: linear in Phi^-1(q); beyond the grid: the end values
    z = torch.special.ndtri
    q = torch.tensor([[0.3, 0.05, 0.99]])
    w = (z(torch.tensor(0.3)) - z(torch.tensor(0.1))) / (z(torch.tensor(0.5)) - z(torch.tensor(0.1)))
    torch.testing.assert_close(offsets.at(q), torch.tensor([[2.0 + 4.0 * float(w), 2.0, 10.0]]))


def test_calibrated_forecasts_reach_nominal_coverage_on_their_calibration_windows() -> None:
    model = _model(monotone="none")
    batches = _batches()
    grid = model.monotone_levels
    before = _coverage(model, batches, grid, calibrated=False)
    model.fit_conformal(batches)
    after = _coverage(model, batches, grid, calibrated=True)
    m = sum(b["target"].numel() for b in batches)
    nominal = torch.ceil((m + 1) * grid.double()) / m
    assert (before - grid).abs().max() > 0.2  # badly calibrated to begin with
    # exactly the order statistic, up to the one residual that sits on the boundary (float rounding)
    torch.testing.assert_close(after.double(), nominal.clamp(max=1.0), rtol=0, atol=1.01 / m)


def test_monotone_calibrated_model_keeps_nominal_interval_coverage_and_order() -> None:
    model = _model(monotone="rearrange")
    batches = _batches()
    model.fit_conformal(batches)
    levels = torch.tensor([0.05, 0.5, 0.95])
    with torch.no_grad():
        for b in batches:
            f = model(b["history"], levels.expand(b["history"].shape[0], -1))
            assert (f.diff(dim=-1) >= 0).all()
    history = torch.cat([b["history"] for b in batches])
    target = torch.cat([b["target"] for b in batches])
    with torch.no_grad():
        f = model(history, levels.expand(history.shape[0], -1))
    inside = ((target >= f[..., 0]) & (target <= f[..., 2])).float().mean()
    assert float(inside) == pytest.approx(0.9, abs=0.02)


def _coverage(model, batches, grid, calibrated: bool) -> torch.Tensor:
    hits = torch.zeros(grid.numel())
    total = 0
    with torch.no_grad():
        for b in batches:
            f = model(b["history"], grid.expand(b["history"].shape[0], -1), calibrated=calibrated)
            hits += (b["target"].unsqueeze(-1) <= f).float().sum(dim=(0, 1))
            total += b["target"].numel()
    return hits / total


def test_any_quantile_property_holds_with_calibration() -> None:
    model = _model()
    model.fit_conformal(_batches())
    x = _batches(1)[0]["history"][:5]
    levels = torch.tensor([0.02, 0.33, 0.5, 0.81, 0.999])
    with torch.no_grad():
        together = model(x, levels.expand(5, -1))
        for i, level in enumerate(levels):
            torch.testing.assert_close(model(x, level.reshape(1, 1).expand(5, 1))[..., 0], together[..., i],
                                       rtol=1e-5, atol=1e-4)


def test_a_checkpoint_saved_before_calibration_loads_as_the_identity() -> None:
    model = _model()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("conformal.")}
    fresh = _model(seed=1)
    fresh.load_state_dict(state)
    assert not bool(fresh.conformal.fitted) and float(fresh.conformal.offsets.abs().sum()) == 0.0
    x = torch.rand(3, L) * 10 + 100
    q = torch.rand(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, q), fresh(x, q, calibrated=False))


def test_fit_errors() -> None:
    plain = build_forecaster(L, H, backbone={"num_blocks": 1, "layer_width": 8}, sampler={}, attention={})
    with pytest.raises(ValueError, match="model.conformal=none"):
        plain.fit_conformal(_batches(1))
    model = _model()
    nan_batch = {"history": torch.rand(2, L), "target": torch.full((2, H), math.nan)}
    with pytest.raises(ValueError, match="no calibration window"):
        model.fit_conformal([nan_batch])
    with pytest.raises(ValueError, match="model.conformal='cqr'"):
        build_forecaster(L, H, backbone={"num_blocks": 1, "layer_width": 8}, sampler={}, attention={}, conformal="cqr")
