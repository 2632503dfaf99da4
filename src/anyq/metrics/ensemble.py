"""Seed ensembles (docs/design.md §3): the mean of the members' quantile forecasts.

Averaging quantiles (Vincentization) keeps the members' levels aligned, so the ensemble is
scored on the same grid as any single model; by convexity of the pinball loss its CRPS is
never above the members' average CRPS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def ensemble_mean(forecasts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Element-wise mean of member forecasts ``[N, H, Q]`` (all the same shape)."""
    members = [torch.as_tensor(f) for f in forecasts]
    if not members:
        raise ValueError("ensemble needs at least one member forecast")
    shape = members[0].shape
    if len(shape) != 3:
        raise ValueError(f"member forecasts must be [N, H, Q], got shape {tuple(shape)}")
    for i, m in enumerate(members[1:], start=1):
        if m.shape != shape:
            raise ValueError(f"member {i} has shape {tuple(m.shape)}, member 0 has {tuple(shape)}")
    stacked = torch.stack(members)
    if not stacked.is_floating_point():
        stacked = stacked.to(torch.get_default_dtype())
    return stacked.mean(dim=0)
