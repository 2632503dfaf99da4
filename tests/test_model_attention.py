"""Adaptive attention: reference equivalence, modulation semantics, zero init, validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anyq.model.attention import AdaptiveAttention, AttentionBlock, ModulatedSelfAttention, _dropout

L, H, P = 48, 24, 12
D, HEADS, FF = 16, 4, 32


def _attention(**kwargs) -> AdaptiveAttention:
    params = dict(patch_length=P, d_model=D, n_heads=HEADS, num_blocks=2, d_ff=FF, dropout=0.0)
    params.update(kwargs)
    return AdaptiveAttention(L, H, **params)


def _randomise_head(module: AdaptiveAttention, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.head.weight.copy_(torch.randn(module.head.weight.shape, generator=gen) * 0.3)
        module.head.bias.copy_(torch.randn(module.head.bias.shape, generator=gen) * 0.1)


def _inputs(n: int = 3, num_q: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, L, generator=gen)
    base = torch.randn(n, H, num_q, generator=gen)
    q = torch.rand(n, num_q, generator=gen)
    w = torch.rand(n, num_q, generator=gen)
    return x, base, q, w


def test_block_without_modulation_equals_torch_transformer_encoder_layer() -> None:
    torch.manual_seed(0)
    block = AttentionBlock(D, HEADS, FF, dropout=0.0, modulation=False, adaptive_temp=1.0).eval()
    reference = nn.TransformerEncoderLayer(
        D, HEADS, FF, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    ).eval()
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(block.self_attn.in_proj.weight)
        reference.self_attn.in_proj_bias.copy_(block.self_attn.in_proj.bias)
        reference.self_attn.out_proj.weight.copy_(block.self_attn.out_proj.weight)
        reference.self_attn.out_proj.bias.copy_(block.self_attn.out_proj.bias)
        for name in ("linear1", "linear2", "norm1", "norm2"):
            getattr(reference, name).load_state_dict(getattr(block, name).state_dict())
    x = torch.randn(5, 6, D)
    out, _, factor = block(x, torch.randn(5, D), torch.rand(5))
    assert factor is None
    torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("last", [1, 2, 6])
def test_block_computing_only_its_last_tokens_equals_the_full_block(last: int) -> None:
    torch.manual_seed(5)
    block = AttentionBlock(D, HEADS, FF, dropout=0.0, modulation=True, adaptive_temp=2.0).eval()
    x, q_emb, w = torch.randn(5, 6, D), torch.randn(5, D), torch.rand(5)
    full, _, factor = block(x, q_emb, w)
    tail, _, tail_factor = block(x, q_emb, w, last=last)
    assert tail.shape == (5, last, D)
    torch.testing.assert_close(tail, full[:, 6 - last:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tail_factor, factor)


def test_modulated_logits_match_explicit_softmax_reference() -> None:
    torch.manual_seed(1)
    attn = ModulatedSelfAttention(D, HEADS, modulation=True, adaptive_temp=2.0)
    s, t = 6, 5
    x, q_emb, w = torch.randn(s, t, D), torch.randn(s, D), torch.rand(s)
    out, _, factor = attn(x, q_emb, w)
    # reference: per-head logits QK^T / sqrt(dh), times (1 + temp * w * sigmoid(gate)), then softmax
    wq, wk, wv = attn.in_proj.weight.chunk(3)
    bq, bk, bv = attn.in_proj.bias.chunk(3)
    dh = D // HEADS

    def heads(z: torch.Tensor) -> torch.Tensor:
        return z.view(s, t, HEADS, dh).transpose(1, 2)

    qh, kh, vh = heads(x @ wq.T + bq), heads(x @ wk.T + bk), heads(x @ wv.T + bv)
    gate = torch.sigmoid(torch.cat([q_emb, w[:, None]], -1) @ attn.gate.weight.T + attn.gate.bias)
    expected_factor = 1 + 2.0 * w[:, None] * gate
    logits = torch.einsum("shtd,shud->shtu", qh, kh) / dh**0.5 * expected_factor[:, :, None, None]
    y = torch.einsum("shtu,shud->shtd", torch.softmax(logits, -1), vh).transpose(1, 2).reshape(s, t, D)
    expected = y @ attn.out_proj.weight.T + attn.out_proj.bias
    torch.testing.assert_close(factor, expected_factor)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # without modulation the same weights give plain scaled-dot-product attention
    plain = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(s, t, D)
    attn.adaptive_temp = 0.0
    torch.testing.assert_close(attn(x, q_emb, w)[0], plain @ attn.out_proj.weight.T + attn.out_proj.bias)


def test_modulation_off_equals_zero_temperature_and_zero_importance() -> None:
    torch.manual_seed(2)
    on = _attention(modulation=True, adaptive_temp=1.5).eval()
    _randomise_head(on)
    off = _attention(modulation=False).eval()
    missing = off.load_state_dict(on.state_dict(), strict=False)
    assert missing.missing_keys == [] and all(".gate." in k for k in missing.unexpected_keys)
    cold = _attention(modulation=True, adaptive_temp=0.0).eval()
    cold.load_state_dict(on.state_dict())
    x, base, q, w = _inputs()
    expected = off(x, base, q, w)
    torch.testing.assert_close(cold(x, base, q, w), expected, rtol=0, atol=0)
    torch.testing.assert_close(on(x, base, q, torch.zeros_like(w)), expected, rtol=1e-6, atol=1e-6)
    # ...and modulation with non-trivial importance really changes the output
    assert (on(x, base, q, w) - expected).abs().max() > 1e-3


def test_correction_is_zero_at_initialisation() -> None:
    module = _attention(dropout=0.1).train()
    out = module(*_inputs())
    assert out.shape == (3, H, 4)
    assert torch.equal(out, torch.zeros_like(out))


def test_level_correction_independent_of_other_requested_levels() -> None:
    torch.manual_seed(3)
    module = _attention(dropout=0.2).eval()
    _randomise_head(module)
    x, base, q, w = _inputs(num_q=5)
    full = module(x, base, q, w)
    subset = module(x, base[..., [3, 1]], q[:, [3, 1]], w[:, [3, 1]])
    torch.testing.assert_close(subset, full[..., [3, 1]], rtol=1e-5, atol=1e-6)


def test_recorded_attention_path_matches_fused_path() -> None:
    torch.manual_seed(4)
    module = _attention().eval()
    _randomise_head(module)
    inputs = _inputs(n=2, num_q=3)
    fused = module(*inputs)
    assert module.last_attention == []
    module.record_attention = True
    recorded = module(*inputs)
    torch.testing.assert_close(recorded, fused, rtol=1e-5, atol=1e-6)
    tokens = L // P + H // P
    assert [a.shape for a in module.last_attention] == [(2, 3, HEADS, tokens, tokens)] * 2
    torch.testing.assert_close(module.last_attention[0].sum(-1), torch.ones(2, 3, HEADS, tokens))
    assert [m.shape for m in module.last_modulation] == [(2, 3, HEADS)] * 2
    assert all(((m >= 1) & (m <= 2)).all() for m in module.last_modulation)


def test_gradients_reach_every_parameter_including_gates() -> None:
    torch.manual_seed(5)
    module = _attention(dropout=0.1)
    _randomise_head(module)
    x, base, q, w = _inputs()
    w.requires_grad_(True)
    module(x, base, q, w).square().mean().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert w.grad is None  # importance is detached


def test_dropout_zeroes_share_p_and_rescales_the_rest() -> None:
    torch.manual_seed(6)
    x = torch.full((200, 500), 2.0, requires_grad=True)
    out = _dropout(x, 0.2)
    dropped = (out == 0).double().mean().item()
    assert abs(dropped - 0.2) < 0.005  # 100k draws: standard error 0.0013
    assert torch.equal(out.unique(), torch.tensor([0.0, 2.0 / 0.8]))
    out.sum().backward()
    assert torch.equal(x.grad, (out != 0).float() / 0.8)
    assert _dropout(x, 0.0) is x


def test_dropout_active_only_in_training_mode() -> None:
    torch.manual_seed(7)
    module = _attention(dropout=0.3)
    _randomise_head(module)
    inputs = _inputs()
    module.train()
    assert not torch.equal(module(*inputs), module(*inputs))
    module.eval()
    assert torch.equal(module(*inputs), module(*inputs))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 100, "n_heads": 8}, "model.attention.d_model=100 is not divisible by model.attention.n_heads=8"),
        ({"patch_length": 10}, "data.history_length=48 is not divisible by model.attention.patch_length=10"),
        ({"patch_length": 16}, "data.horizon_length=24 is not divisible by model.attention.patch_length=16"),
        ({"n_heads": 0}, "model.attention.n_heads=0 must be >= 1"),
        ({"dropout": -0.1}, "model.attention.dropout=-0.1 must be in [0, 1)"),
        ({"adaptive_temp": -1.0}, "model.attention.adaptive_temp=-1.0 must be >= 0"),
    ],
)
def test_invalid_configuration_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        _attention(**kwargs)
    assert str(err.value) == message
