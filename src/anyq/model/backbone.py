"""NBEATS-AQ backbone: a quantile-conditioned N-BEATS (Smyl et al., arXiv 2404.17451).

The level ``q`` is an input, so one network serves every quantile. All requested levels of a
window are evaluated in one batched call: the ``N`` windows are repeated ``Q`` times and each
``(window, level)`` row runs through the same residual stack independently, which is what
makes the output for one level independent of which other levels were requested.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyq.model.config import BackboneConfig
from anyq.model.checks import check_backbone

class QuantileEmbedding(nn.Module):
    """Cosine features of ``q`` followed by a linear map and ReLU (as in IQN, Dabney et al.).

    A raw scalar ``q`` can only shift activations linearly; cosine features ``cos(pi k q)``
    let a single linear layer express smooth non-linear functions of the level.
    """

    def __init__(self, dim: int, num_features: int = 32) -> None:
        super().__init__()
        self.register_buffer(
            "frequencies", math.pi * torch.arange(1, num_features + 1, dtype=torch.float32), persistent=False
        )
        self.proj = nn.Linear(num_features, dim)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """``q [...]`` -> embedding ``[..., dim]``."""
        features = torch.cos(q.unsqueeze(-1) * self.frequencies.to(q.dtype))
        return F.relu(self.proj(features))


class _Block(nn.Module):
    """Fully connected block emitting a backcast (size ``L``) and a forecast (size ``H``).

    The last block of a stack gets no backcast head: its backcast would never be used, and an
    unused parameter only wastes compute and trips distributed training's unused-parameter check.
    """

    def __init__(
        self,
        size_in: int,
        history_length: int,
        horizon_length: int,
        num_layers: int,
        layer_width: int,
        dropout: float,
        backcast: bool = True,
    ) -> None:
        super().__init__()
        widths = [size_in] + [layer_width] * num_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.dropout = nn.Dropout(dropout)
        self.backcast = nn.Linear(layer_width, history_length) if backcast else None
        self.forecast = nn.Linear(layer_width, horizon_length)

    def forward(
        self,
        x: torch.Tensor,
        film: tuple[torch.Tensor, torch.Tensor] | None = None,
        extra: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``extra`` (``[N * Q, width]``, optional) is added to the first layer's pre-activation:
        the block's share of the calendar inputs."""
        h = x
        for i, layer in enumerate(self.layers):
            pre = layer(h)
            if i == 0 and extra is not None:
                pre = pre + extra
            h = F.relu(pre)
            if i == 0 and film is not None:
                scale, shift = film
                h = h * (1.0 + scale) + shift
            h = self.dropout(h)
        return (self.backcast(h) if self.backcast is not None else None), self.forecast(h)


class NBeatsAQ(nn.Module):
    """Quantile-conditioned N-BEATS with doubly residual stacking.

    ``conditioning="cat"`` appends ``q`` to the input of every block. Unlike the authors' code,
    where the ``q`` slot is part of the residual and gets eroded by the backcasts, each block
    here sees the original ``q`` next to its residual history, so no block loses the level.
    ``conditioning="film"`` feeds the residual only and lets a cosine embedding of ``q``
    scale and shift the first hidden layer of every block (FiLM, as the authors' variant).

    Calendar inputs (``calendar_features`` = F > 0; per-hour features ``[N, L + H, F]`` whose
    last column is the holiday flag when ``calendar_holiday``, :mod:`anyq.data.calendar`): each
    window's vector — the first target hour's other features and the holiday flags of all
    ``L + H`` hours (without the flag: the first target hour's features only) — is
    projected once per window into every block's first hidden layer (a term added before the
    ReLU, shared by the window's levels), so the calendar informs every level without
    depending on which levels were requested.
    """

    def __init__(
        self,
        history_length: int,
        horizon_length: int,
        num_blocks: int = BackboneConfig.num_blocks,
        num_layers: int = BackboneConfig.num_layers,
        layer_width: int = BackboneConfig.layer_width,
        conditioning: str = BackboneConfig.conditioning,
        dropout: float = BackboneConfig.dropout,
        calendar_features: int = 0,
        calendar_holiday: bool = True,
    ) -> None:
        super().__init__()
        check_backbone(history_length, horizon_length, num_blocks, num_layers, layer_width, conditioning, dropout)
        self.history_length = history_length
        self.horizon_length = horizon_length
        self.conditioning = conditioning
        size_in = history_length + (1 if conditioning == "cat" else 0)
        self.blocks = nn.ModuleList(
            _Block(size_in, history_length, horizon_length, num_layers, layer_width, dropout, i < num_blocks - 1)
            for i in range(num_blocks)
        )
        self.calendar_features = calendar_features
        self.layer_width = layer_width
        self.calendar_holiday = calendar_holiday
        self.calendar = None
        if calendar_features:
            size = calendar_features - 1 + history_length + horizon_length if calendar_holiday else calendar_features
            self.calendar = nn.Linear(size, layer_width * num_blocks)
        if conditioning == "film":
            self.q_embedding = QuantileEmbedding(layer_width)
            # one projection for all blocks: a single matmul instead of one per block
            self.film = nn.Linear(layer_width, 2 * layer_width * num_blocks)

    def forward(self, x: torch.Tensor, q: torch.Tensor, calendar: torch.Tensor | None = None) -> torch.Tensor:
        """``x [N, L]`` (normalised history), ``q [N, Q]``, ``calendar [N, L + H, F]`` (when the
        backbone takes calendar inputs) -> forecast ``[N, H, Q]``."""
        n, num_q = q.shape
        if x.shape != (n, self.history_length):
            raise ValueError(
                f"history shape {tuple(x.shape)} does not match [N={n}, history_length={self.history_length}]"
            )
        residual = x.unsqueeze(1).expand(n, num_q, self.history_length).reshape(n * num_q, self.history_length)
        q_rows = q.reshape(n * num_q, 1).to(x.dtype)
        films: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.blocks)
        if self.conditioning == "film":
            params = self.film(self.q_embedding(q_rows.squeeze(-1))).chunk(2 * len(self.blocks), dim=-1)
            films = [(params[2 * i], params[2 * i + 1]) for i in range(len(self.blocks))]
        extras = self._calendar_terms(calendar, n, num_q, x.dtype)
        forecast = x.new_zeros(n * num_q, self.horizon_length)
        for block, film, extra in zip(self.blocks, films, extras):
            block_in = torch.cat([residual, q_rows], dim=-1) if self.conditioning == "cat" else residual
            backcast, block_forecast = block(block_in, film, extra)
            forecast = forecast + block_forecast
            if backcast is not None:
                residual = residual - backcast
        return forecast.reshape(n, num_q, self.horizon_length).transpose(1, 2)

    def _calendar_terms(
        self, calendar: torch.Tensor | None, n: int, num_q: int, dtype: torch.dtype
    ) -> list[torch.Tensor | None]:
        """Per block, the calendar's first-layer term ``[N * Q, width]`` (None without calendar)."""
        if self.calendar is None:
            return [None] * len(self.blocks)
        width = self.history_length + self.horizon_length
        if calendar is None or calendar.shape != (n, width, self.calendar_features):
            got = None if calendar is None else tuple(calendar.shape)
            raise ValueError(f"this model takes calendar inputs [N={n}, {width}, {self.calendar_features}], got {got}")
        calendar = calendar.to(dtype)
        if self.calendar_holiday:
            vector = torch.cat([calendar[:, self.history_length, :-1], calendar[:, :, -1]], dim=-1)
        else:
            vector = calendar[:, self.history_length]
        terms = self.calendar(vector).view(n, 1, len(self.blocks), self.layer_width)
        terms = terms.expand(n, num_q, -1, -1).reshape(n * num_q, len(self.blocks), self.layer_width)
        return list(terms.unbind(dim=1))
