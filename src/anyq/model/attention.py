"""Adaptive attention: a patch transformer that corrects the backbone forecast per level.

Every ``(window, level)`` pair is its own token sequence (levels are folded into the batch),
so the correction for one level never depends on which other levels were requested; the
seed design mixed the level axis through a learned projection and lost that property.

Importance modulation multiplies the attention logits of head ``h`` by
``1 + adaptive_temp * w(q) * g_h(q)``, where ``w(q)`` in [0, 1] is the sampler's importance of
``q``'s bin (detached) and ``g(q) = sigmoid(linear([q_emb, w]))`` a learned per-head gate.
A factor above 1 sharpens the attention for levels the sampler finds hard.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyq.model.backbone import QuantileEmbedding
from anyq.model.config import AttentionConfig
from anyq.model.checks import check_attention


class ModulatedSelfAttention(nn.Module):
    """Multi-head self-attention whose logits are scaled per sequence and head before softmax.

    Parameter layout matches ``torch.nn.MultiheadAttention`` (one ``[3d, d]`` input projection,
    then an output projection), so the unmodulated case can be checked against it directly.
    The logit factor is applied by scaling the queries, which multiplies ``q.k`` exactly and
    keeps the fused ``scaled_dot_product_attention`` kernel; the explicit softmax path is
    taken only when the weights are recorded.

    The attention probabilities are not dropped out (the block's residual and feed-forward
    dropout regularise instead): over sequences this short (9 tokens at the defaults) dropping
    a weight removes a large share of the context, and on CPU the fused kernel has no dropout,
    so its fallback made a training step of the whole model about 30% slower.
    """

    def __init__(self, d_model: int, n_heads: int, modulation: bool, adaptive_temp: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.adaptive_temp = adaptive_temp
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # no gate at all without modulation: it would be a parameter that never gets a gradient
        self.gate = nn.Linear(d_model + 1, n_heads) if modulation else None

    def logit_factor(self, q_emb: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
        """``1 + adaptive_temp * w * g`` per sequence and head ``[S, n_heads]``; None when off."""
        if self.gate is None:
            return None
        gate = torch.sigmoid(self.gate(torch.cat([q_emb, w.unsqueeze(-1)], dim=-1)))
        return 1.0 + self.adaptive_temp * w.unsqueeze(-1) * gate

    def forward(
        self, x: torch.Tensor, q_emb: torch.Tensor, w: torch.Tensor, record: bool = False,
        last: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``x [S, T, d]``, ``q_emb [S, d]``, ``w [S]`` -> (output ``[S, T', d]``, weights
        ``[S, h, T', T]`` or None, logit factor ``[S, h]`` or None), where ``T'`` is ``last``
        (only the last ``last`` tokens attend: the others' outputs are not computed) or ``T``."""
        s, t, d = x.shape
        t_out = t if last is None else last
        w_query, w_kv = self.in_proj.weight.split([d, 2 * d])
        b_query, b_kv = self.in_proj.bias.split([d, 2 * d])
        query = F.linear(x[:, t - t_out:], w_query, b_query).view(s, t_out, self.n_heads, self.head_dim).transpose(1, 2)
        key, value = F.linear(x, w_kv, b_kv).view(s, t, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        factor = self.logit_factor(q_emb, w)
        if factor is not None:
            query = query * factor[:, :, None, None]
        weights = None
        if record:
            logits = query @ key.transpose(-1, -2) * self.head_dim**-0.5
            weights = torch.softmax(logits, dim=-1)
            y = weights @ value
        else:
            y = F.scaled_dot_product_attention(query, key, value)
        y = y.transpose(1, 2).reshape(s, t_out, d)
        return self.out_proj(y), weights, factor


class AttentionBlock(nn.Module):
    """Pre-norm transformer block; names and order follow ``nn.TransformerEncoderLayer``
    (``norm_first=True``, GELU) so the two can be compared weight for weight. ``dropout``
    acts on the attention output, the feed-forward hidden layer and its output."""

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float, modulation: bool, adaptive_temp: float
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = ModulatedSelfAttention(d_model, n_heads, modulation, adaptive_temp)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(
        self, x: torch.Tensor, q_emb: torch.Tensor, w: torch.Tensor, record: bool = False,
        last: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``x [S, T, d]`` -> ``[S, T, d]``, or ``[S, last, d]``: the last ``last`` tokens only,
        exactly as the full block computes them (every token still serves as key and value)."""
        p = self.dropout if self.training else 0.0
        attended, weights, factor = self.self_attn(self.norm1(x), q_emb, w, record, last)
        if last is not None:
            x = x[:, x.shape[1] - last:]
        x = x + _dropout(attended, p)
        x = x + _dropout(self.linear2(_dropout(F.gelu(self.linear1(self.norm2(x))), p)), p)
        return x, weights, factor


def _dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout from a uniform draw.

    Same distribution as ``F.dropout``, but on CPU a uniform fill plus a comparison is about
    1.5x faster than the Bernoulli kernel, and the attention runs over N*Q sequences, so its
    dropout masks are the largest tensors of a training step.
    """
    if p == 0.0:
        return x
    keep = (torch.rand_like(x) >= p).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * keep


class AdaptiveAttention(nn.Module):
    """Importance-modulated patch transformer returning a correction to the backbone forecast.

    Tokens are the history and the (normalised) backbone forecast cut into ``patch_length``
    patches, each a linear embedding plus a learned position embedding plus an embedding of
    ``q``. The correction is read from the forecast tokens by a linear head initialised to
    zero, so an untrained model forecasts exactly what its backbone does.

    Calendar inputs (``calendar_features`` = F > 0): each token also gets a linear embedding of
    the per-hour calendar features of its ``patch_length`` hours (``[N, L + H, F]``), computed
    once per window and shared by its levels.

    Set ``record_attention = True`` to keep, after each forward, ``last_attention`` (per block,
    weights ``[N, Q, n_heads, T, T]``) and ``last_modulation`` (per block, logit factors
    ``[N, Q, n_heads]``; empty without modulation) for diagnostics.
    """

    def __init__(
        self,
        history_length: int,
        horizon_length: int,
        patch_length: int = AttentionConfig.patch_length,
        d_model: int = AttentionConfig.d_model,
        n_heads: int = AttentionConfig.n_heads,
        num_blocks: int = AttentionConfig.num_blocks,
        d_ff: int = AttentionConfig.d_ff,
        dropout: float = AttentionConfig.dropout,
        adaptive_temp: float = AttentionConfig.adaptive_temp,
        modulation: bool = AttentionConfig.modulation,
        calendar_features: int = 0,
    ) -> None:
        super().__init__()
        check_attention(
            history_length, horizon_length, patch_length, d_model, n_heads, num_blocks, d_ff, dropout, adaptive_temp
        )
        self.history_length = history_length
        self.horizon_length = horizon_length
        self.patch_length = patch_length
        self.num_history_patches = history_length // patch_length
        self.num_forecast_patches = horizon_length // patch_length
        self.modulation = modulation
        self.adaptive_temp = adaptive_temp
        num_tokens = self.num_history_patches + self.num_forecast_patches
        self.history_embed = nn.Linear(patch_length, d_model)
        self.forecast_embed = nn.Linear(patch_length, d_model)
        self.calendar_features = calendar_features
        self.calendar_embed = nn.Linear(patch_length * calendar_features, d_model) if calendar_features else None
        self.position = nn.Parameter(torch.randn(num_tokens, d_model) * 0.02)
        self.q_embedding = QuantileEmbedding(d_model)
        self.blocks = nn.ModuleList(
            AttentionBlock(d_model, n_heads, d_ff, dropout, modulation, adaptive_temp) for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, patch_length)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.record_attention = False
        self.last_attention: list[torch.Tensor] = []
        self.last_modulation: list[torch.Tensor] = []

    def forward(
        self,
        x: torch.Tensor,
        base: torch.Tensor,
        q: torch.Tensor,
        w: torch.Tensor,
        calendar: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x [N, L]``, ``base [N, H, Q]`` (both normalised), ``q, w [N, Q]``, ``calendar
        [N, L + H, F]`` (with calendar inputs) -> correction ``[N, H, Q]``."""
        n, num_q = q.shape
        ph, pf, plen = self.num_history_patches, self.num_forecast_patches, self.patch_length
        # history tokens are shared by a window's levels: embed once, then broadcast over Q
        history = self.history_embed(x.reshape(n, ph, plen)).unsqueeze(1).expand(n, num_q, ph, -1)
        forecast = self.forecast_embed(base.transpose(1, 2).reshape(n, num_q, pf, plen))
        q_emb = self.q_embedding(q.to(x.dtype))
        position = self.position
        if self.calendar_embed is not None:
            expected = (n, (ph + pf) * plen, self.calendar_features)
            if calendar is None or calendar.shape != expected:
                got = None if calendar is None else tuple(calendar.shape)
                raise ValueError(f"this model takes calendar inputs {list(expected)}, got {got}")
            per_token = calendar.to(x.dtype).reshape(n, ph + pf, plen * self.calendar_features)
            position = position + self.calendar_embed(per_token).unsqueeze(1)  # [N, 1, T, d]
        tokens = torch.cat([history, forecast], dim=2) + position + q_emb.unsqueeze(2)
        h = tokens.reshape(n * num_q, ph + pf, -1)
        q_flat = q_emb.reshape(n * num_q, -1)
        w_flat = w.detach().reshape(n * num_q).to(h.dtype)
        record = self.record_attention
        attention, modulation = [], []
        for i, block in enumerate(self.blocks):
            # the correction reads the forecast tokens only: the last block computes just those
            # (same output, a third less work at the defaults); recorded weights keep [T, T]
            last = pf if i == len(self.blocks) - 1 and not record else None
            h, weights, factor = block(h, q_flat, w_flat, record, last)
            if record:
                attention.append(weights.detach().reshape(n, num_q, *weights.shape[1:]))
                if factor is not None:
                    modulation.append(factor.detach().reshape(n, num_q, -1))
        self.last_attention, self.last_modulation = attention, modulation
        correction = self.head(self.norm(h[:, -pf:]))  # [N*Q, pf, patch]
        return correction.reshape(n, num_q, pf * plen).transpose(1, 2)
