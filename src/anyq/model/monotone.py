"""Monotone quantiles by rearrangement (Chernozhukov, Fernandez-Val and Galichon, 2010).

A quantile model evaluated level by level can cross: ``f(q1) > f(q2)`` for ``q1 < q2``.
Rearrangement replaces the curve ``q -> f(q)`` on ``(0, 1)`` by the quantile function of the
values ``f(U)``, ``U ~ U(0, 1)``: on a grid of equally spaced levels that is *sorting the
values* and assigning them to the sorted levels. It never increases the pinball loss summed
over the grid for any target (and so never the grid CRPS), and leaves a curve that is
already monotone unchanged.

Any level, not only the grid's: the rearranged curve is a function of the window alone,
computed on a fixed grid of ``K`` levels ``k / (K + 1)`` and read at the requested levels by
linear interpolation in ``z = Phi^-1(q)`` between neighbouring grid levels (and linear
extrapolation in ``z`` from the two outer grid levels beyond them). The value at a level
therefore does not depend on which other levels were requested: the any-quantile property
holds for the rearranged model too. Where the requested levels are the grid itself the
result is the sorted grid values, exactly.

In training, where a window has only its few drawn levels, the same operation is applied to
those: the forecasts are sorted and matched to the sorted levels before the loss.
"""

from __future__ import annotations

import torch

from anyq.model.checks import check_grid



def rearrangement_grid(num_levels: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The ``K`` equally spaced levels ``k / (K + 1)`` the rearrangement sorts over."""
    check_grid(num_levels)
    return torch.arange(1, num_levels + 1, dtype=dtype, device=device) / (num_levels + 1)


def sort_levels(q: torch.Tensor, forecast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rearrange per window over its own levels: ``q [N, Q]`` sorted, ``forecast [N, H, Q]``
    sorted along Q (values matched to the sorted levels)."""
    return q.sort(dim=-1).values, forecast.sort(dim=-1).values


def interpolate_sorted(sorted_values: torch.Tensor, grid: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Read sorted grid forecasts ``[N, H, K]`` at levels ``q [N, Q]`` -> ``[N, H, Q]``.

    Linear in ``Phi^-1(q)`` between the two grid levels around ``q`` (exact at grid levels),
    linear extrapolation from the outer two beyond the grid; non-decreasing in ``q`` because
    the grid values are sorted.
    """
    n, horizon, k = sorted_values.shape
    zg = torch.special.ndtri(grid.to(sorted_values.dtype))
    zq = torch.special.ndtri(q.to(sorted_values.dtype))
    hi = torch.searchsorted(zg, zq.contiguous()).clamp_(1, k - 1)
    lo = hi - 1
    weight = (zq - zg[lo]) / (zg[hi] - zg[lo])  # [N, Q]; < 0 or > 1 only beyond the grid
    index_lo = lo.unsqueeze(1).expand(n, horizon, -1)
    index_hi = hi.unsqueeze(1).expand(n, horizon, -1)
    low = sorted_values.gather(-1, index_lo)
    high = sorted_values.gather(-1, index_hi)
    return low + weight.unsqueeze(1) * (high - low)


def is_grid(q: torch.Tensor, grid: torch.Tensor) -> bool:
    """Whether every window asks for exactly the grid's levels, in the grid's order."""
    return q.shape[-1] == grid.shape[0] and bool((q == grid.to(q.dtype)).all())
