"""Quantile-level sampler for training: uniform, or adaptive to where the loss is high.

The unit interval is cut into ``num_bins`` equal bins. Each bin keeps an exponential moving
average of the pinball loss observed at levels inside it. The adaptive kind draws bins with
probability proportional to ``(loss_b / mean loss) ** (1 / temperature)``, floored at
``min_prob``; the uniform kind draws ``q ~ U(0, 1)`` but tracks the same statistics, because
the attention's importance modulation needs them whichever way levels are drawn.

All state lives in registered buffers, so it travels with ``state_dict()`` (and therefore
with Lightning checkpoints) and with ``.to(device)``. Every per-step operation stays on the
buffers' device without a host synchronisation.
"""

from __future__ import annotations

import torch
from torch import nn

KINDS = ("adaptive", "uniform")

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
        ``bin_seen``  whether the bin was ever observed; its first observation initialises
                      the EMA directly instead of being averaged with an arbitrary start value.
        ``bin_count`` total number of observations per bin (diagnostics).
        ``num_updates`` number of ``update`` calls (diagnostics).
    """

    bin_loss: torch.Tensor
    bin_seen: torch.Tensor
    bin_count: torch.Tensor
    num_updates: torch.Tensor

    def __init__(
        self,
        kind: str = "adaptive",
        num_adaptive_quantiles: int = 3,
        num_bins: int = 100,
        momentum: float = 0.99,
        temperature: float = 1.0,
        min_prob: float = 0.002,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"model.sampler.kind={kind!r} must be one of {list(KINDS)}")
        if num_adaptive_quantiles < 1:
            raise ValueError(f"model.sampler.num_adaptive_quantiles={num_adaptive_quantiles} must be >= 1")
        if num_bins < 1:
            raise ValueError(f"model.sampler.num_bins={num_bins} must be >= 1")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"model.sampler.momentum={momentum} must be in [0, 1)")
        if not temperature > 0.0:
            raise ValueError(f"model.sampler.temperature={temperature} must be > 0")
        if not 0.0 <= min_prob * num_bins <= 1.0:
            raise ValueError(
                f"model.sampler.min_prob={min_prob} times model.sampler.num_bins={num_bins} must lie in [0, 1]"
            )
        self.kind = kind
        self.num_adaptive_quantiles = num_adaptive_quantiles
        self.num_bins = num_bins
        self.momentum = momentum
        self.temperature = temperature
        self.min_prob = min_prob
        self.register_buffer("bin_loss", torch.zeros(num_bins))
        self.register_buffer("bin_seen", torch.zeros(num_bins, dtype=torch.bool))
        self.register_buffer("bin_count", torch.zeros(num_bins, dtype=torch.long))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, num_adaptive_quantiles={self.num_adaptive_quantiles}, num_bins={self.num_bins}, "
            f"momentum={self.momentum}, temperature={self.temperature}, min_prob={self.min_prob}"
        )

    def bin_index(self, q: torch.Tensor) -> torch.Tensor:
        """Bin of each level: ``floor(q * num_bins)``, levels at the edges kept in range."""
        return (q.detach() * self.num_bins).floor().long().clamp_(0, self.num_bins - 1)

    @torch.no_grad()
    def probabilities(self) -> torch.Tensor:
        """Bin probabilities ``[num_bins]``: ``(loss_b / mean) ** (1 / T)``, floored, renormalised.

        Bins never observed count as average (ratio 1); with nothing observed the result is
        uniform. Computed in log space so a small temperature cannot overflow; the division
        by the mean cancels in the normalisation but keeps the formula scale-free.

        The floor is applied once and followed by one renormalisation (not iterated): a
        floored bin therefore ends at ``min_prob / S`` with ``S = 1 + sum of the lifted
        deficits <= 1 + num_bins * min_prob``, i.e. slightly below ``min_prob`` (at the
        defaults, never below ``min_prob / 1.2``), while the ordering of bins is preserved.
        """
        seen = self.bin_seen
        loss = self.bin_loss.clamp_min(_LOSS_TINY)
        num_seen = seen.sum()
        seen_mean = torch.where(seen, loss, torch.zeros_like(loss)).sum() / num_seen.clamp_min(1)
        fill = torch.where(num_seen > 0, seen_mean, torch.ones_like(seen_mean))
        loss = torch.where(seen, loss, fill)
        log_ratio = (loss.log() - loss.mean().log()) / self.temperature
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
    def update(self, q: torch.Tensor, loss: torch.Tensor) -> None:
        """Fold one batch of per-level losses (``[B, Q]`` each) into the bin EMAs.

        The batch contributes its per-bin mean loss; the EMA moves only for bins observed in
        this batch, so rarely drawn bins keep their estimate instead of decaying towards 0.
        """
        idx = self.bin_index(q).reshape(-1)
        values = loss.detach().reshape(-1).to(self.bin_loss.dtype)
        sums = torch.zeros_like(self.bin_loss).index_add_(0, idx, values)
        counts = torch.zeros_like(self.bin_count).index_add_(0, idx, torch.ones_like(idx))
        observed = counts > 0
        batch_mean = sums / counts.clamp_min(1).to(sums.dtype)
        ema = torch.where(self.bin_seen, self.momentum * self.bin_loss + (1.0 - self.momentum) * batch_mean, batch_mean)
        self.bin_loss.copy_(torch.where(observed, ema, self.bin_loss))
        self.bin_seen.logical_or_(observed)
        self.bin_count.add_(counts)
        self.num_updates.add_(1)

    @torch.no_grad()
    def update_loop(self, q: torch.Tensor, loss: torch.Tensor) -> None:
        """Reference for ``update``: the same semantics as plain Python loops (slow; for tests
        and the benchmark only)."""
        sums: dict[int, float] = {}
        counts: dict[int, int] = {}
        for level, value in zip(q.detach().reshape(-1), loss.detach().reshape(-1)):
            b = min(max(int((level * self.num_bins).floor()), 0), self.num_bins - 1)
            sums[b] = sums.get(b, 0.0) + float(value)
            counts[b] = counts.get(b, 0) + 1
        for b, total in sums.items():
            mean = total / counts[b]
            if bool(self.bin_seen[b]):
                self.bin_loss[b] = self.momentum * float(self.bin_loss[b]) + (1.0 - self.momentum) * mean
            else:
                self.bin_loss[b] = mean
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
