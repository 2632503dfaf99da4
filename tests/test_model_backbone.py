"""NBEATS-AQ backbone: doubly residual stacking, conditioning, any-quantile batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anyq.model.backbone import NBeatsAQ, QuantileEmbedding

L, H = 24, 12


def _reference(model: NBeatsAQ, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The NBEATS-AQ equations written out level by level with the model's own weights."""
    out = torch.empty(x.shape[0], H, q.shape[1], dtype=x.dtype)
    for j in range(q.shape[1]):
        level = q[:, j : j + 1]
        residual, forecast = x.clone(), torch.zeros(x.shape[0], H, dtype=x.dtype)
        for i, block in enumerate(model.blocks):
            h = torch.cat([residual, level], dim=-1) if model.conditioning == "cat" else residual
            for k, layer in enumerate(block.layers):
                h = F.relu(h @ layer.weight.T + layer.bias)
                if k == 0 and model.conditioning == "film":
                    emb = model.q_embedding(level.squeeze(-1))
                    film = model.film(emb)
                    width = h.shape[-1]
                    scale = film[:, 2 * i * width : (2 * i + 1) * width]
                    shift = film[:, (2 * i + 1) * width : (2 * i + 2) * width]
                    h = h * (1 + scale) + shift
            forecast = forecast + h @ block.forecast.weight.T + block.forecast.bias
            if i < len(model.blocks) - 1:
                residual = residual - (h @ block.backcast.weight.T + block.backcast.bias)
        out[:, :, j] = forecast
    return out


@pytest.mark.parametrize("conditioning", ["cat", "film"])
def test_matches_written_out_equations(conditioning: str) -> None:
    torch.manual_seed(0)
    model = NBeatsAQ(L, H, num_blocks=3, num_layers=2, layer_width=16, conditioning=conditioning).double().eval()
    x, q = torch.randn(5, L, dtype=torch.float64), torch.rand(5, 4, dtype=torch.float64)
    out = model(x, q)
    assert out.shape == (5, H, 4)
    torch.testing.assert_close(out, _reference(model, x, q), rtol=1e-10, atol=1e-12)


def test_cat_appends_the_level_to_every_block_input() -> None:
    model = NBeatsAQ(L, H, num_blocks=4, num_layers=2, layer_width=8, conditioning="cat")
    assert [block.layers[0].in_features for block in model.blocks] == [L + 1] * 4
    assert [block.backcast.out_features for block in model.blocks[:-1]] == [L] * 3
    assert model.blocks[-1].backcast is None  # its backcast would never be used
    film = NBeatsAQ(L, H, num_blocks=4, num_layers=2, layer_width=8, conditioning="film")
    assert [block.layers[0].in_features for block in film.blocks] == [L] * 4


@pytest.mark.parametrize("conditioning", ["cat", "film"])
def test_level_output_independent_of_other_requested_levels(conditioning: str) -> None:
    torch.manual_seed(1)
    model = NBeatsAQ(L, H, num_blocks=2, num_layers=2, layer_width=16, conditioning=conditioning, dropout=0.3).eval()
    x = torch.randn(6, L)
    few = torch.tensor([0.1, 0.7]).expand(6, 2)
    many = torch.tensor([0.3, 0.1, 0.95, 0.7, 0.5]).expand(6, 5)
    out_few, out_many = model(x, few), model(x, many)
    torch.testing.assert_close(out_many[..., [1, 3]], out_few, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out_many[..., 0], out_many[..., 2])  # the level does matter


@pytest.mark.parametrize("conditioning", ["cat", "film"])
def test_both_conditionings_train(conditioning: str) -> None:
    torch.manual_seed(2)
    model = NBeatsAQ(L, H, num_blocks=2, num_layers=2, layer_width=16, conditioning=conditioning)
    out = model(torch.randn(4, L), torch.rand(4, 3))
    out.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_quantile_embedding_shape_and_range() -> None:
    emb = QuantileEmbedding(8)
    out = emb(torch.rand(3, 5))
    assert out.shape == (3, 5, 8) and (out >= 0).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conditioning": "add"}, "model.backbone.conditioning='add' must be one of ['cat', 'film']"),
        ({"num_blocks": 0}, "model.backbone.num_blocks=0 must be >= 1"),
        ({"layer_width": 0}, "model.backbone.layer_width=0 must be >= 1"),
        ({"dropout": 1.0}, "model.backbone.dropout=1.0 must be in [0, 1)"),
    ],
)
def test_invalid_configuration_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        NBeatsAQ(L, H, **kwargs)
    assert str(err.value) == message


def test_history_of_wrong_length_raises() -> None:
    model = NBeatsAQ(L, H, num_blocks=1, num_layers=1, layer_width=4)
    with pytest.raises(ValueError, match="history_length=24"):
        model(torch.randn(2, L + 1), torch.rand(2, 1))
