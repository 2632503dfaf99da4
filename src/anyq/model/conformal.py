"""Split-conformal calibration per quantile level, fitted on validation windows.

For each level ``q_k`` of a grid (the rearrangement grid, ``k / (K + 1)``) the model's
forecast is shifted by an offset ``delta_k`` in units of the window's scale (max |history|,
the scale the networks work in), chosen on held-out calibration windows so that the share of
calibration targets at or below the shifted forecast is ``q_k``:

    r = (y - f_k(x)) / scale(x)          over every calibration window and horizon hour
    delta_k = r_(ceil((M + 1) q_k))      the order statistic of split conformal prediction
                                          (Vovk et al. 2005; Lei et al. 2018), M residuals

which gives ``P(y <= f_k + delta_k * scale) >= q_k`` for an exchangeable new window, and
``ceil((M + 1) q_k) / M`` on the calibration windows themselves. Offsets at other levels are
interpolated linearly in ``Phi^-1(q)`` between grid levels and held constant beyond them, so
the calibrated model still forecasts any level independently of the others; a monotone model
is rearranged after the shift (the shifted grid is sorted), so it stays monotone.

The offsets are buffers of the forecaster (``conformal.offsets``): they travel with the
checkpoint and the served model. Until fitted they are 0 (the identity).

``model.conformal=online`` fits the same offsets and uses them as the seed of the online
calibration (:mod:`anyq.model.online`), which moves them with the errors of earlier origins.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from anyq.model.online import interpolate_offsets, residual_spread

class ConformalOffsets(nn.Module):
    """Per-level offsets ``[K]`` on the normalised scale, read at any level."""

    offsets: torch.Tensor
    fitted: torch.Tensor
    spread: torch.Tensor
    #: buffers a state dict may lack (saved before calibration or before they existed): loaded as 0
    DEFAULTED = ("offsets", "fitted", "spread")

    def __init__(self, levels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("levels", levels.detach().clone().float(), persistent=False)
        self.register_buffer("offsets", torch.zeros_like(self.levels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        # 90 % spread of the median's residuals: the online calibration's step unit
        self.register_buffer("spread", torch.zeros(()))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # a checkpoint saved before calibration (during training) loads as the identity
        for name in self.DEFAULTED:
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def fit(self, residuals: torch.Tensor) -> torch.Tensor:
        """Fit from normalised residuals ``[M, K]`` (``(y - f_k) / scale`` per calibration hour
        and grid level); returns the offsets ``[K]`` and keeps the spread of the median level's
        residuals (:func:`anyq.model.online.residual_spread`) as ``spread``."""
        if residuals.dim() != 2 or residuals.shape[1] != self.levels.numel() or residuals.shape[0] == 0:
            raise ValueError(f"residuals must be [M > 0, K={self.levels.numel()}], got {tuple(residuals.shape)}")
        m = residuals.shape[0]
        ordered = residuals.sort(dim=0).values
        rank = torch.ceil((m + 1) * self.levels.double()).long().clamp_(1, m) - 1  # 0-based order statistic
        self.offsets.copy_(ordered.gather(0, rank.to(ordered.device).unsqueeze(0)).squeeze(0).float())
        self.spread.fill_(float(residual_spread(residuals, self.levels.to(residuals.device))))
        self.fitted.fill_(True)
        return self.offsets

    def at(self, q: torch.Tensor) -> torch.Tensor:
        """Offsets at levels ``q [..., Q]``: linear in ``Phi^-1(q)`` between grid levels, the end
        values beyond the grid."""
        return interpolate_offsets(self.levels, self.offsets, q)
