"""One per-window scaling rule for the training loss and ``val/loss``.

``AnyQuantileForecaster.scale_of`` divides each window by its max ``|history|`` and uses 1
for an all-zero history; validation must score on that same scale, or a series that drops
to zero gives ``val/loss`` in the hundreds of thousands while ``train/loss`` stays near 0.5.
"""

from __future__ import annotations

import pytest
import torch

from anyq.metrics.functional import pinball_loss
from anyq.training.module import ForecastingModule
from anyq.model.forecaster import build_forecaster

L, H = 48, 24


def module() -> ForecastingModule:
    torch.manual_seed(0)
    forecaster = build_forecaster(
        L, H, backbone={"num_blocks": 1, "num_layers": 2, "layer_width": 16},
        sampler={"kind": "uniform"}, attention={"enabled": False},
    )
    return ForecastingModule(forecaster, num_series=3, val_num_levels=39, num_levels=39).eval()


def losses(m: ForecastingModule, history: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(training loss, validation loss) of one batch at the validation grid's levels."""
    levels = m.val_levels.expand(history.shape[0], -1)
    m.forecaster.sampler.sample = lambda n, generator=None: levels  # the same levels in both
    with torch.no_grad():
        train, _, _ = m.forecaster.training_loss(history, target)
        m.on_validation_epoch_start()
        m.validation_step({"history": history, "target": target,
                           "series_idx": torch.arange(history.shape[0])}, 0)
    return float(train), float(m._val_loss_sum) / history.shape[0]


def test_all_zero_window_same_finite_loss_in_training_and_validation():
    m = module()
    history = torch.zeros(2, L)
    target = torch.full((2, H), 0.5)  # the load comes back after a stretch of zeros
    train, val = losses(m, history, target)
    assert torch.isfinite(torch.tensor([train, val])).all()
    assert val == pytest.approx(train, rel=1e-5)
    # scale 1: the loss is the plain pinball loss of the forecast in data units
    with torch.no_grad():
        forecast = m.forecaster(history, m.val_levels.expand(2, -1))
    expected = pinball_loss(forecast, target, m.val_levels).mean()
    assert val == pytest.approx(float(expected), rel=1e-5)
    assert val < 10.0  # the old 1e-8 floor gave 0.5 / 1e-8-sized losses here


@pytest.mark.parametrize("level", [1e-30, 1.0, 1e4])
def test_same_loss_for_ordinary_and_tiny_windows(level):
    m = module()
    torch.manual_seed(1)
    history = level * torch.rand(3, L)
    target = level * torch.rand(3, H)
    train, val = losses(m, history, target)
    assert val == pytest.approx(train, rel=1e-5)
