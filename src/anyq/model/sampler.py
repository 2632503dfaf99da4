"""Quantile-level sampler for training: uniform, or adaptive to where the forecast is worst.

The unit interval is cut into ``num_bins`` equal bins. Each bin keeps exponential moving
averages of the pinball loss observed at levels inside it and of the share of targets below
the forecast at those levels. The adaptive kind draws bins with probability proportional to
``(s_b / mean s) ** (1 / temperature)``, floored at ``min_prob``, where the *signal* ``s_b`` is
(``signal=``):

- ``raw``: the bin's loss ``L_b`` (the setup guide's signal). For a calibrated forecast the
  expected pinball loss at level ``q`` is ``sigma * phi(Phi^-1(q))`` (Gaussian case): largest
  at the median, about 7 % of that at q = 0.01, so this signal starves the tails.
- ``relative``: ``L_b / r_b``, the loss relative to the loss a calibrated Gaussian forecast
  would have in that bin, ``r_b`` = the bin average of ``phi(Phi^-1(q))``
  (``(erf(z_hi) - erf(z_lo)) / (4 sqrt(pi) * width)``, ``z = Phi^-1(edge)``). Constant over the
  bins for a calibrated forecast of any scale, so the draws are uniform; a bin whose loss is
  above what its level explains is drawn more.
- ``calibration``: ``1 + |c_b - q_b| / min(q_b, 1 - q_b)``, with ``c_b`` the share of targets
  below the forecast and ``q_b`` the bin centre: the relative error of the bin's tail
  probability. 1 everywhere for a calibrated forecast (uniform draws), whatever the
  distribution's shape; a bin whose coverage is off by 100 % of its tail mass is drawn twice
  as often.

The uniform kind draws ``q ~ U(0, 1)`` but tracks the same statistics, because the
attention's importance modulation needs them whichever way levels are drawn.

All state lives in registered buffers, so it travels with ``state_dict()`` (and therefore
with Lightning checkpoints) and with ``.to(device)``. Every per-step operation stays on the
buffers' device without a host synchronisation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from anyq.model.config import SamplerConfig
from anyq.model.checks import check_sampler

#: Drawn levels are clamped to ``[Q_EPS, 1 - Q_EPS]``: a level of exactly 0 or 1 asks for an
#: unbounded quantile. 1e-6 is far below a bin width and representable next to 1 in float32.
Q_EPS = 1e-6

#: Bin losses are clamped to this before taking logs, so a bin with zero loss gets a
#: probability of zero before the ``min_prob`` floor instead of producing ``log(0)``.
_LOSS_TINY = 1e-30


class QuantileSampler(nn.Module):
    """Draws ``num_adaptive_quantiles`` levels per training window and learns where to look.

    Buffers:
        ``bin_loss``  EMA of the loss per bin (meaningful only where ``bin_seen``).
        ``bin_below`` EMA of the share of targets below the forecast per bin (where
                      ``bin_seen``; 0.5 placeholder in checkpoints written before it existed).
        ``bin_seen``  whether the bin was ever observed; its first observation initialises
                      the EMA directly instead of being averaged with an arbitrary start value.
        ``bin_count`` total number of observations per bin (diagnostics).
        ``num_updates`` number of ``update`` calls (diagnostics).
    """

    bin_loss: torch.Tensor
    bin_below: torch.Tensor
    bin_seen: torch.Tensor
    bin_count: torch.Tensor
    num_updates: torch.Tensor

    def __init__(
        self,
        kind: str = SamplerConfig.kind,
        num_adaptive_quantiles: int = SamplerConfig.num_adaptive_quantiles,
        num_bins: int = SamplerConfig.num_bins,
        momentum: float = SamplerConfig.momentum,
        temperature: float = SamplerConfig.temperature,
        min_prob: float = SamplerConfig.min_prob,
        signal: str = SamplerConfig.signal,
    ) -> None:
        super().__init__()
        check_sampler(kind, num_adaptive_quantiles, num_bins, momentum, temperature, min_prob, signal)
        self.kind = kind
        self.num_adaptive_quantiles = num_adaptive_quantiles
        self.num_bins = num_bins
        self.momentum = momentum
        self.temperature = temperature
        self.min_prob = min_prob
        self.signal = signal
        self.register_buffer("bin_loss", torch.zeros(num_bins))
        self.register_buffer("bin_below", torch.full((num_bins,), 0.5))
        self.register_buffer("bin_seen", torch.zeros(num_bins, dtype=torch.bool))
        self.register_buffer("bin_count", torch.zeros(num_bins, dtype=torch.long))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        edges = torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64)
        self.register_buffer("bin_centre", ((edges[:-1] + edges[1:]) / 2).float(), persistent=False)
        self.register_buffer("bin_reference", calibrated_gaussian_loss(edges).float(), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, signal={self.signal!r}, num_adaptive_quantiles={self.num_adaptive_quantiles}, "
            f"num_bins={self.num_bins}, momentum={self.momentum}, temperature={self.temperature}, "
            f"min_prob={self.min_prob}"
        )

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints and served models written before ``bin_below`` existed still load
        state_dict.setdefault(prefix + "bin_below", torch.full_like(self.bin_below, 0.5))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def bin_index(self, q: torch.Tensor) -> torch.Tensor:
        """Bin of each level: ``floor(q * num_bins)``, levels at the edges kept in range."""
        return (q.detach() * self.num_bins).floor().long().clamp_(0, self.num_bins - 1)

    @torch.no_grad()
    def signal_values(self) -> torch.Tensor:
        """The per-bin signal ``s_b`` of ``self.signal`` (module docstring), positive;
        bins never observed hold the mean of the observed ones (1 with nothing observed)."""
        seen = self.bin_seen
        if self.signal == "calibration":
            centre = self.bin_centre
            values = 1.0 + (self.bin_below - centre).abs() / torch.minimum(centre, 1.0 - centre)
        else:
            values = self.bin_loss.clamp_min(_LOSS_TINY)
            if self.signal == "relative":
                values = values / self.bin_reference
        num_seen = seen.sum()
        seen_mean = torch.where(seen, values, torch.zeros_like(values)).sum() / num_seen.clamp_min(1)
        fill = torch.where(num_seen > 0, seen_mean, torch.ones_like(seen_mean))
        return torch.where(seen, values, fill).clamp_min(_LOSS_TINY)

    @torch.no_grad()
    def probabilities(self) -> torch.Tensor:
        """Bin probabilities ``[num_bins]``: ``(s_b / mean s) ** (1 / T)``, floored, renormalised.

        Bins never observed count as average (ratio 1); with nothing observed the result is
        uniform. Computed in log space so a small temperature cannot overflow; the division
        by the mean cancels in the normalisation but keeps the formula scale-free.

        The floor is applied once and followed by one renormalisation (not iterated): a
        floored bin therefore ends at ``min_prob / S`` with ``S = 1 + sum of the lifted
        deficits <= 1 + num_bins * min_prob``, i.e. slightly below ``min_prob`` (at the
        defaults, never below ``min_prob / 1.2``), while the ordering of bins is preserved.
        """
        signal = self.signal_values()
        log_ratio = (signal.log() - signal.mean().log()) / self.temperature
        probs = torch.softmax(log_ratio, dim=0)
        probs = probs.clamp_min(self.min_prob)
        return probs / probs.sum()

    @torch.no_grad()
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Levels ``[batch_size, num_adaptive_quantiles]`` strictly inside (0, 1).

        The adaptive kind draws bins with replacement from ``probabilities()`` and then a
        uniform position inside each bin. ``generator`` must live on the buffers' device.
        """
        shape = (batch_size, self.num_adaptive_quantiles)
        device, dtype = self.bin_loss.device, self.bin_loss.dtype
        if self.kind == "uniform":
            q = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        else:
            num = batch_size * self.num_adaptive_quantiles
            bins = torch.multinomial(self.probabilities(), num, replacement=True, generator=generator)
            offset = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            q = (bins.view(shape).to(dtype) + offset) / self.num_bins
        return q.clamp_(Q_EPS, 1.0 - Q_EPS)

    @torch.no_grad()
    def update(self, q: torch.Tensor, loss: torch.Tensor, below: torch.Tensor | None = None) -> None:
        """Fold one batch of per-level losses (``[B, Q]`` each) into the bin EMAs.

        ``below [B, Q]`` is the share of each (window, level)'s target hours below the
        forecast; without it the coverage EMA is left alone. The batch contributes its
        per-bin means; the EMAs move only for bins observed in this batch, so rarely drawn
        bins keep their estimate instead of decaying towards 0.
        """
        idx = self.bin_index(q).reshape(-1)
        values = loss.detach().reshape(-1).to(self.bin_loss.dtype)
        columns = [values]
        if below is not None:
            columns.append(below.detach().reshape(-1).to(self.bin_loss.dtype))
        stacked = torch.stack(columns, dim=1)  # one index_add for every statistic
        sums = torch.zeros(self.num_bins, stacked.shape[1], dtype=stacked.dtype, device=stacked.device)
        sums.index_add_(0, idx, stacked)
        counts = torch.zeros_like(self.bin_count).index_add_(0, idx, torch.ones_like(idx))
        observed = counts > 0
        batch_mean = sums / counts.clamp_min(1).to(sums.dtype)[:, None]
        m = self.momentum
        ema = torch.where(self.bin_seen, m * self.bin_loss + (1.0 - m) * batch_mean[:, 0], batch_mean[:, 0])
        self.bin_loss.copy_(torch.where(observed, ema, self.bin_loss))
        if below is not None:
            ema = torch.where(self.bin_seen, m * self.bin_below + (1.0 - m) * batch_mean[:, 1], batch_mean[:, 1])
            self.bin_below.copy_(torch.where(observed, ema, self.bin_below))
        self.bin_seen.logical_or_(observed)
        self.bin_count.add_(counts)
        self.num_updates.add_(1)

    @torch.no_grad()
    def update_loop(self, q: torch.Tensor, loss: torch.Tensor, below: torch.Tensor | None = None) -> None:
        """Reference for ``update``: the same semantics as plain Python loops (slow; for tests
        and the benchmark only)."""
        sums: dict[int, float] = {}
        below_sums: dict[int, float] = {}
        counts: dict[int, int] = {}
        shares = below.detach().reshape(-1) if below is not None else torch.zeros(q.numel())
        for level, value, share in zip(q.detach().reshape(-1), loss.detach().reshape(-1), shares):
            b = min(max(int((level * self.num_bins).floor()), 0), self.num_bins - 1)
            sums[b] = sums.get(b, 0.0) + float(value)
            below_sums[b] = below_sums.get(b, 0.0) + float(share)
            counts[b] = counts.get(b, 0) + 1
        for b, total in sums.items():
            mean = total / counts[b]
            mean_below = below_sums[b] / counts[b]
            if bool(self.bin_seen[b]):
                self.bin_loss[b] = self.momentum * float(self.bin_loss[b]) + (1.0 - self.momentum) * mean
                if below is not None:
                    self.bin_below[b] = self.momentum * float(self.bin_below[b]) + (1.0 - self.momentum) * mean_below
            else:
                self.bin_loss[b] = mean
                if below is not None:
                    self.bin_below[b] = mean_below
                self.bin_seen[b] = True
            self.bin_count[b] += counts[b]
        self.num_updates += 1

    @torch.no_grad()
    def importance(self, q: torch.Tensor) -> torch.Tensor:
        """Importance of each level's bin, ``p_bin / max p`` in [0, 1], shaped like ``q``.

        Depends on ``q`` alone (never on the other requested levels), so it can modulate the
        attention at evaluation time without breaking the any-quantile property.
        """
        probs = self.probabilities()
        weights = probs / probs.max()
        return weights[self.bin_index(q)].to(q.dtype)


def calibrated_gaussian_loss(edges: torch.Tensor) -> torch.Tensor:
    """Bin averages of ``phi(Phi^-1(q))`` over bins with the given ``edges`` ``[B + 1]``: the
    expected pinball loss of a calibrated Gaussian forecast of unit scale, per bin.

    With ``z = Phi^-1(q)``, ``dq = phi(z) dz`` and ``phi(z)^2 = exp(-z^2) / (2 pi)``, so
    ``int phi(Phi^-1(q)) dq = (erf(z_hi) - erf(z_lo)) / (4 sqrt(pi))`` over ``[z_lo, z_hi]``
    — exact, including the outer bins that reach 0 and 1.
    """
    edges = edges.double()
    z = torch.special.ndtri(edges)  # -inf at 0, +inf at 1: erf is +-1 there
    integral = (torch.erf(z[1:]) - torch.erf(z[:-1])) / (4.0 * math.sqrt(math.pi))
    return integral / (edges[1:] - edges[:-1])
