"""Human names, with units, for the metric keys the runs log: one table for headers and axes.

A key not listed keeps its own name, so a new metric still shows up (raw) rather than vanish.
Units follow docs/design.md §3: CRPS, pinball loss and interval widths are in the data's own
units (MW for MHLV), normalised CRPS, MAPE and sMAPE in %, coverage a share in [0, 1].
"""

from __future__ import annotations

import re

LABELS = {
    "crps": "CRPS (data units)",
    "crps_norm": "normalised CRPS (%)",
    "coverage-0.9": "coverage of 90 % interval",
    "coverage-0.95": "coverage of 95 % interval",
    "width-0.9": "width of 90 % interval (data units)",
    "width-0.95": "width of 95 % interval (data units)",
    "marfe": "MARFE (calibration error)",
    "mape": "MAPE of median (%)",
    "smape": "sMAPE of median (%)",
    "oracle_ratio": "CRPS / oracle CRPS",
    "naive_ratio": "CRPS / seasonal naive CRPS",
    "loss": "pinball loss (normalised scale)",
    "train_seconds": "training time (s)",
}
FAMILIES = {"test": "test", "val": "validation", "headline": "headline", "test_conformal": "test, conformal",
            "test_online": "test, online calibration", "ensemble": "seed ensemble"}
DELTA_CRPS = "Δ CRPS vs baseline (data units, negative = better)"
DELTA_CRPS_PCT = "Δ CRPS vs baseline (%, negative = better)"


def metric_label(key: str) -> str:
    """``val/crps`` -> ``validation CRPS (data units)``; unknown keys are returned as they are."""
    if key in LABELS:
        return LABELS[key]
    if key == "delta/crps_vs_baseline":
        return DELTA_CRPS
    match = re.fullmatch(r"([a-z_]+)/(.+)", key)
    if match and match.group(1) in FAMILIES and match.group(2) in LABELS:
        return f"{FAMILIES[match.group(1)]} {LABELS[match.group(2)]}"
    return key
