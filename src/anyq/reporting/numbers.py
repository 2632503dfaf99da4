"""How reports, tables and progress lines write a number: significant figures in fixed point."""

from __future__ import annotations

import math


def significant(value: float, digits: int = 4) -> str:
    """``value`` to ``digits`` significant figures in fixed point, trailing zeros kept, so a
    column reads alike: 167.0 beside 166.5 (``.4g`` writes 167), 52.00 beside 0.6772, 25000
    (not 2.5e+04). NaN and infinities as Python writes them."""
    if value == 0 or not math.isfinite(value):
        return f"{value:.{digits - 1}f}" if value == 0 else f"{value}"
    return f"{value:.{max(0, digits - 1 - math.floor(math.log10(abs(value))))}f}"


def two_figures(x: float) -> str:
    """Two significant figures without exponent notation: a CI half-width beside its mean."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{max(0, 1 - math.floor(math.log10(abs(x))))}f}"
