"""The fixed quantile-level grid that every model is scored on (docs/design.md §3).

Validation and test always use this grid, never sampled levels, so that scores of
different models and epochs are comparable.
"""

from __future__ import annotations

import torch


def evaluation_grid(num: int = 99, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Levels ``i / (num + 1)`` for ``i = 1..num``: {0.01, ..., 0.99} for the default 99.

    The grid is symmetric around 0.5, so central intervals (coverage) and, for odd ``num``,
    the median are on it.
    """
    if num < 1:
        raise ValueError(f"evaluation grid needs at least one level, got num={num}")
    return torch.arange(1, num + 1, dtype=torch.float64).div(num + 1).to(dtype)


def level_index(levels: torch.Tensor, value: float, tol: float = 1e-6) -> int:
    """Position of ``value`` in ``levels``; metrics read a quantile off the grid rather than interpolate.

    Raises ``ValueError`` naming the missing level, e.g. when a coverage interval needs
    ``(1 - p) / 2`` and the grid does not hold it.
    """
    grid = torch.as_tensor(levels).detach().reshape(-1).to("cpu", torch.float64)
    hits = torch.nonzero((grid - float(value)).abs() <= tol).reshape(-1)
    if hits.numel() == 0:
        raise ValueError(f"level {float(value):.6g} is not in the quantile grid ({grid.numel()} levels)")
    return int(hits[0])


def level_bracket(levels: torch.Tensor, value: float, tol: float = 1e-6) -> tuple[int, int, float]:
    """Grid neighbours ``(lo, hi)`` of ``value`` and the weight ``w`` of ``hi``.

    The forecast quantile at ``value`` is read as ``(1 - w) * f[lo] + w * f[hi]``: exact
    (``lo == hi``, ``w == 0``) when the level is on the grid, linear between the two
    neighbouring levels otherwise. This lets the default 99-level grid report the 95 %
    interval, whose bounds 0.025 and 0.975 fall midway between grid levels. Levels outside
    the grid's span cannot be read and raise ``ValueError`` naming the level.
    """
    grid = torch.as_tensor(levels).detach().reshape(-1).to("cpu", torch.float64)
    value = float(value)
    hits = torch.nonzero((grid - value).abs() <= tol).reshape(-1)
    if hits.numel():
        return int(hits[0]), int(hits[0]), 0.0
    if grid.numel() == 0 or value < float(grid[0]) or value > float(grid[-1]):
        span = "empty grid" if grid.numel() == 0 else f"[{float(grid[0]):.6g}, {float(grid[-1]):.6g}]"
        raise ValueError(f"level {value:.6g} is outside the quantile grid {span}")
    if bool((grid[1:] <= grid[:-1]).any()):
        raise ValueError(f"level {value:.6g} is not on the grid and the grid is not increasing, cannot interpolate")
    hi = int(torch.searchsorted(grid, torch.tensor([value], dtype=torch.float64))[0])
    lo = hi - 1
    return lo, hi, (value - float(grid[lo])) / float(grid[hi] - grid[lo])
