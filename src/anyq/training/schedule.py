"""Learning-rate schedules: linear warm-up, then inverse square root (as NBEATS-AQ trains),
cosine decay to the end of the step budget, or constant."""

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


def cosine_factor(step: int, warmup_updates: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up to 1, then half a cosine from 1 down to ``min_ratio`` at ``total_steps``."""
    step = step + 1
    if warmup_updates > 0 and step <= warmup_updates:
        return step / warmup_updates
    span = max(1, total_steps - warmup_updates)
    progress = min(1.0, (step - warmup_updates) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant_factor(step: int, warmup_updates: int) -> float:
    """Linear warm-up to 1, then 1."""
    step = step + 1
    if warmup_updates > 0 and step <= warmup_updates:
        return step / warmup_updates
    return 1.0


def lr_factor(schedule: str, step: int, warmup_updates: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """The multiplier of ``schedule`` (``inverse_sqrt``, ``cosine`` or ``constant``) at ``step``."""
    if schedule == "inverse_sqrt":
        return inverse_sqrt_factor(step, warmup_updates)
    if schedule == "cosine":
        return cosine_factor(step, warmup_updates, total_steps, min_ratio)
    if schedule == "constant":
        return constant_factor(step, warmup_updates)
    raise ValueError(f"optim.schedule={schedule!r} is not one of inverse_sqrt, cosine, constant")
