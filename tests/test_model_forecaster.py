"""Forecaster: the six variants, any-quantile property, scaling, training loss, building."""

from __future__ import annotations

import math

import pytest
import torch

from anyq.model import AnyQuantileForecaster, build_forecaster
from anyq.training.config_tree import VARIANTS, variant_config

L, H = 48, 24
BACKBONE = {"num_blocks": 2, "num_layers": 2, "layer_width": 32}
SAMPLER = {"num_bins": 20, "num_adaptive_quantiles": 3}
ATTENTION = {"patch_length": 12, "d_model": 16, "n_heads": 2, "num_blocks": 1, "d_ff": 32, "dropout": 0.1}


def _model(variant: str, seed: int = 0, **backbone) -> AnyQuantileForecaster:
    torch.manual_seed(seed)
    sampler, attention = variant_config(variant, SAMPLER, ATTENTION)
    return build_forecaster(L, H, {**BACKBONE, **backbone}, sampler, attention, monotone="none")  # the networks' own


def _data(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    level = 1000 * (1 + torch.rand(n, 1, generator=gen))  # windows on different scales
    series = level * (1 + 0.2 * torch.randn(n, L + H, generator=gen))
    return series[:, :L], series[:, L:]


def _make_non_trivial(model: AnyQuantileForecaster) -> None:
    """Train the sampler statistics a little and open the attention's zero-initialised head."""
    history, target = _data(16, seed=1)
    for _ in range(3):
        model.training_loss(history, target)
    if model.attention is not None:
        with torch.no_grad():
            model.attention.head.weight.normal_(0, 0.3)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_any_quantile_property(variant: str) -> None:
    model = _model(variant)
    _make_non_trivial(model)
    model.eval()
    history, _ = _data()
    n = history.shape[0]
    asked = torch.tensor([0.05, 0.5, 0.93]).expand(n, 3)
    more = torch.tensor([0.7, 0.93, 0.2, 0.05, 0.99, 0.5]).expand(n, 6)
    out, out_more = model(history, asked), model(history, more)
    torch.testing.assert_close(out_more[..., [3, 5, 1]], out, rtol=1e-5, atol=1e-3)
    assert (out[..., 2] - out[..., 0]).abs().max() > 1.0  # levels give different forecasts


@pytest.mark.parametrize("variant", ["adaptive_attention", "modulation_off", "sampler_off", "both_off"])
def test_attention_variant_equals_backbone_at_initialisation(variant: str) -> None:
    model = _model(variant).train()
    history, _ = _data()
    q = torch.rand(history.shape[0], 4)
    torch.manual_seed(7)
    out = model(history, q)
    scale = history.abs().amax(-1, keepdim=True)
    torch.manual_seed(7)
    base = model.backbone(history / scale, q) * scale[..., None]
    assert torch.equal(out, base)


@pytest.mark.parametrize("variant", ["nbeats_aq", "adaptive_attention"])
def test_forecast_is_scale_equivariant(variant: str) -> None:
    model = _model(variant)
    _make_non_trivial(model)
    model.eval()
    history, _ = _data()
    q = torch.rand(history.shape[0], 3)
    torch.testing.assert_close(model(37.0 * history, q), 37.0 * model(history, q), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("variant", ["baseline_adaptive", "adaptive_attention"])
def test_evaluation_in_chunks_gives_the_forecast_of_one_call(variant: str) -> None:
    """Without gradients on the CPU the windows go through the networks in chunks of
    EVAL_CHUNK_ROWS // Q windows (here 1024 // 99 = 10: 5 calls for 47 windows, the last of 7),
    calendar inputs sliced alike; the forecast is the one a single call gives."""
    torch.manual_seed(0)
    sampler, attention = variant_config(variant, SAMPLER, ATTENTION)
    model = build_forecaster(L, H, BACKBONE, sampler, attention, calendar_features=3)
    if model.attention is not None:  # open the zero-initialised head so the correction counts
        with torch.no_grad():
            model.attention.head.weight.normal_(0, 0.3)
    model.eval()
    n, q = 47, torch.linspace(0.01, 0.99, 99).expand(47, -1)
    x = torch.randn(n, L)
    calendar = torch.rand(n, L + H, 3)
    calls: list[int] = []
    model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    whole = model.forward_normalised(x, q, calendar)  # gradients on: one call
    assert calls == [n]
    calls.clear()
    with torch.no_grad():
        chunked = model.forward_normalised(x, q, calendar)
    assert calls == [10, 10, 10, 10, 7]
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    calls.clear()
    with torch.no_grad():
        model.forward_normalised(x, q, calendar, chunk_rows=None)
    assert calls == [n]
    assert (chunked[..., -1] - chunked[..., 0]).abs().max() > 0.01  # levels and windows differ


def test_all_zero_history_gives_finite_forecast() -> None:
    model = _model("adaptive_attention").eval()
    out = model(torch.zeros(2, L), torch.rand(2, 3))
    assert torch.isfinite(out).all()


def test_training_loss_is_pinball_on_normalised_scale_and_updates_sampler() -> None:
    model = _model("nbeats_aq").eval()
    history, target = _data()
    loss, q, per_level = model.training_loss(history, target, generator=torch.Generator().manual_seed(0))
    assert q.shape == per_level.shape == (6, 3) and loss.shape == ()
    scale = history.abs().amax(-1, keepdim=True)
    diff = (target / scale).unsqueeze(-1) - model(history, q) / scale.unsqueeze(-1)
    qq = q.unsqueeze(1)
    expected = torch.where(diff >= 0, qq * diff, (qq - 1) * diff).mean(dim=1)
    torch.testing.assert_close(per_level, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-5, atol=1e-7)
    assert not per_level.requires_grad and loss.requires_grad
    sampler = model.sampler
    assert int(sampler.num_updates) == 1 and int(sampler.bin_count.sum()) == 18
    assert sampler.bin_seen[sampler.bin_index(q)].all()


def test_training_loss_is_relative_to_window_scale() -> None:
    history, target = _data()
    losses = []
    for factor in (1.0, 250.0):
        model = _model("baseline_adaptive").eval()
        loss, _, _ = model.training_loss(factor * history, factor * target, generator=torch.Generator().manual_seed(0))
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradients_reach_all_parameters_after_one_step(variant: str) -> None:
    model = _model(variant).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    history, target = _data(8)
    for _ in range(2):  # the first step moves the zero-initialised head away from zero
        optimiser.zero_grad()
        loss, _, _ = model.training_loss(history, target)
        loss.backward()
        optimiser.step()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_film_backbone_variant_runs() -> None:
    model = _model("adaptive_attention", conditioning="film")
    loss, _, _ = model.training_loss(*_data())
    loss.backward()
    assert torch.isfinite(loss)


def test_state_dict_round_trip_restores_forecasts(tmp_path) -> None:
    model = _model("adaptive_attention")
    _make_non_trivial(model)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    assert {"sampler.bin_loss", "sampler.bin_seen", "sampler.bin_count"} <= set(model.state_dict())
    restored = _model("adaptive_attention", seed=99)
    restored.load_state_dict(torch.load(path))
    history, _ = _data()
    q = torch.rand(history.shape[0], 3)
    assert torch.equal(restored.eval()(history, q), model.eval()(history, q))


def test_build_forecaster_rejects_unknown_keys_and_kinds() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) model.attention.heads;"):
        build_forecaster(L, H, BACKBONE, SAMPLER, {"enabled": True, "heads": 4})
    with pytest.raises(ValueError, match=r"unknown key\(s\) model.backbone.width;"):
        build_forecaster(L, H, {"width": 3}, SAMPLER, {})
    with pytest.raises(ValueError, match=r"unknown key\(s\) model.sampler.bins;"):
        build_forecaster(L, H, BACKBONE, {"bins": 3}, {})
    with pytest.raises(ValueError, match="model.backbone.kind='tft' is not supported"):
        build_forecaster(L, H, {"kind": "tft"}, SAMPLER, {})
    with pytest.raises(ValueError, match="model.variant='full' is not one of"):
        variant_config("full", SAMPLER, ATTENTION)
    model = build_forecaster(L, H, {"kind": "nbeats_aq", **BACKBONE}, SAMPLER, {"enabled": False, "d_model": 7})
    assert model.attention is None


def test_build_forecaster_accepts_omegaconf_nodes() -> None:
    from omegaconf import OmegaConf

    sampler, attention = variant_config("modulation_off", SAMPLER, ATTENTION)
    model = build_forecaster(L, H, OmegaConf.create(BACKBONE), OmegaConf.create(sampler), OmegaConf.create(attention))
    assert model.attention is not None and not model.attention.modulation and model.sampler.kind == "adaptive"


def test_robust_scaler_location_and_scale_by_hand() -> None:
    from anyq.model.forecaster import location_scale

    history = torch.tensor([[1.0, 2.0, 4.0, 8.0, 100.0], [5.0, 5.0, 5.0, 5.0, 5.0], [0.0] * 5])
    loc, scale = location_scale(history, "robust")
    # median 4; |x - 4| = 3, 2, 0, 4, 96 -> MAD 3. A flat window: MAD 0 and std 0 -> scale 1.
    assert loc.squeeze(-1).tolist() == [4.0, 5.0, 0.0]
    assert scale.squeeze(-1).tolist() == [3.0, 1.0, 1.0]
    # MAD 0 but not flat: std x 0.6745 (neuralforecast's robust_statistics fallback)
    spiky = torch.tensor([[1.0, 1.0, 1.0, 1.0, 11.0]])
    _, s = location_scale(spiky, "robust")
    assert s.item() == pytest.approx(spiky.std().item() * 0.6744897501960817)
    loc, scale = location_scale(history, "max_abs")
    assert loc.abs().sum().item() == 0 and scale.squeeze(-1).tolist() == [100.0, 5.0, 1.0]


def test_standard_scaler_is_the_mean_and_the_sample_standard_deviation() -> None:
    from anyq.model.forecaster import location_scale

    history = torch.tensor([[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], [3.0] * 8])
    loc, scale = location_scale(history, "standard")
    # mean 5; squared deviations 9+1+1+1+0+0+4+16 = 32; / (8 - 1) -> std sqrt(32 / 7). Flat: scale 1.
    assert loc.squeeze(-1).tolist() == [5.0, 3.0]
    assert scale[0].item() == pytest.approx(math.sqrt(32 / 7)) and scale[1].item() == 1.0


def test_mean_abs_scaler_is_the_mean_absolute_value() -> None:
    from anyq.model.forecaster import location_scale

    history = torch.tensor([[1.0, -2.0, 3.0, 10.0], [0.0] * 4])
    loc, scale = location_scale(history, "mean_abs")
    # (1 + 2 + 3 + 10) / 4 = 4; all zeros: scale 1
    assert loc.abs().sum().item() == 0 and scale.squeeze(-1).tolist() == [4.0, 1.0]


def test_level_scaler_is_the_mean_and_the_mean_absolute_value() -> None:
    from anyq.model.forecaster import location_scale

    history = torch.tensor([[1.0, -2.0, 3.0, 10.0], [0.0] * 4, [2.0, 2.0, 2.0, 2.0]])
    loc, scale = location_scale(history, "level")
    # mean (1 - 2 + 3 + 10) / 4 = 3, mean |x| (1 + 2 + 3 + 10) / 4 = 4; all zeros: scale 1;
    # flat at 2: centred on 2, scale 2 (not 1, as standard's would be)
    assert loc.squeeze(-1).tolist() == [3.0, 0.0, 2.0] and scale.squeeze(-1).tolist() == [4.0, 1.0, 2.0]


@pytest.mark.parametrize("scaler", ["max_abs", "mean_abs", "level"])
@pytest.mark.parametrize("variant", ["baseline_adaptive", "adaptive_attention"])
def test_every_scaler_makes_the_forecast_scale_equivariant(variant: str, scaler: str) -> None:
    """The scalers without a shift-equivariant location (the centring ones are tested below)."""
    torch.manual_seed(0)
    sampler, attention = variant_config(variant, SAMPLER, ATTENTION)
    model = build_forecaster(L, H, BACKBONE, sampler, attention, scaler=scaler).eval()
    history, _ = _data()
    q = torch.rand(history.shape[0], 5)
    with torch.no_grad():
        base, scaled = model(history, q), model(3.0 * history, q)
    torch.testing.assert_close(scaled, 3.0 * base, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("scaler", ["robust", "standard"])
@pytest.mark.parametrize("variant", ["baseline_adaptive", "adaptive_attention"])
def test_centring_scalers_make_the_forecast_shift_and_scale_equivariant(variant: str, scaler: str) -> None:
    torch.manual_seed(0)
    sampler, attention = variant_config(variant, SAMPLER, ATTENTION)
    model = build_forecaster(L, H, BACKBONE, sampler, attention, scaler=scaler).eval()
    history, _ = _data()
    q = torch.rand(history.shape[0], 5)
    base = model(history, q)
    with torch.no_grad():
        shifted = model(3.0 * history + 250.0, q)
    torch.testing.assert_close(shifted, 3.0 * base + 250.0, rtol=1e-4, atol=1e-2)
    # max_abs is scale- but not shift-equivariant: the level is an input to the networks
    plain = build_forecaster(L, H, BACKBONE, sampler, attention).eval()
    assert not torch.allclose(plain(history + 250.0, q), plain(history, q) + 250.0, atol=1e-2)
