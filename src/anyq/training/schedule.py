"""Inverse-square-root learning-rate schedule with linear warm-up (as NBEATS-AQ trains)."""

from __future__ import annotations

import math


def inverse_sqrt_factor(step: int, warmup_updates: int) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based).

    Rises linearly to 1 over ``warmup_updates`` steps, then decays as
    ``sqrt(warmup_updates / step)`` so the peak lr is the configured ``lr``.
    """
    step = step + 1
    if warmup_updates <= 0:
        return 1.0
    if step <= warmup_updates:
        return step / warmup_updates
    return math.sqrt(warmup_updates / step)
