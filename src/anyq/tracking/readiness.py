"""Is a run trained enough to judge? Three signs that it is not, read from its test metrics.

A comparison of two models that have not learned the data measures noise in their start-up,
not the difference of the variants, so such a run gets no better/worse verdict
(``anyq.reporting.verdict``). The rules (docs/design.md §7):

* ``test/coverage-0.9`` outside ``COVERAGE_BOUNDS`` (0.5 to 0.99): its 90 % interval is not one;
* ``test/oracle_ratio`` above ``MAX_ORACLE_RATIO`` (2, when the oracle is known: synthetic data):
  its CRPS is more than twice the floor;
* ``test/naive_ratio`` above 1: seasonal naive beats it on the same test windows.

The rules read the model's own forecast (``test/*``), not the calibrated headline family a
report's tables show beside it: calibration must not hide an untrained network. Each reason
names its metric key. A metric the run did not log is not held against it. The run carries
the answer as the tag ``trained_enough`` (``true``/``false``) and, when false,
``trained_enough_reason``; a study's parent run carries the same two tags for all its groups (:func:`record_study_readiness`).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

TRAINED_ENOUGH_TAG = "trained_enough"
REASON_TAG = "trained_enough_reason"
COVERAGE_BOUNDS = (0.5, 0.99)
MAX_ORACLE_RATIO = 2.0
MAX_NAIVE_RATIO = 1.0
MAX_TAG_LENGTH = 4000


def untrained_reasons(metrics: Mapping[str, float]) -> list[str]:
    """Why a run with these test metrics is not trained enough to judge ([] when it is)."""
    reasons = []
    coverage = metrics.get("test/coverage-0.9", math.nan)
    low, high = COVERAGE_BOUNDS
    if math.isfinite(coverage) and not low <= coverage <= high:
        reasons.append(f"test/coverage-0.9 {coverage:.3f} outside [{low:g}, {high:g}]")
    oracle = metrics.get("test/oracle_ratio", math.nan)
    if math.isfinite(oracle) and oracle > MAX_ORACLE_RATIO:
        reasons.append(f"test/oracle_ratio {oracle:.3f} above {MAX_ORACLE_RATIO:g}")
    naive = metrics.get("test/naive_ratio", math.nan)
    if math.isfinite(naive) and naive > MAX_NAIVE_RATIO:
        reasons.append(f"test/naive_ratio {naive:.3f}: CRPS above seasonal naive's on the same windows")
    return reasons


def readiness_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    """``{trained_enough: "true"}`` or ``{trained_enough: "false", trained_enough_reason: ...}``."""
    reasons = untrained_reasons(metrics)
    if not reasons:
        return {TRAINED_ENOUGH_TAG: "true"}
    return {TRAINED_ENOUGH_TAG: "false", REASON_TAG: "; ".join(reasons)}


def record_study_readiness(client: MlflowClient, parent_run_id: str, untrained: Mapping[str, str]) -> None:
    """On a study's parent run: ``trained_enough`` (``false`` when any group, the baseline
    included, is not trained enough to judge) and ``trained_enough_reason`` naming them."""
    if untrained:
        reason = "; ".join(f"{group}: {why}" for group, why in untrained.items())
        client.set_tag(parent_run_id, TRAINED_ENOUGH_TAG, "false")
        client.set_tag(parent_run_id, REASON_TAG, reason[:MAX_TAG_LENGTH])
        return
    client.set_tag(parent_run_id, TRAINED_ENOUGH_TAG, "true")
    if REASON_TAG in client.get_run(parent_run_id).data.tags:
        client.delete_tag(parent_run_id, REASON_TAG)


def untrained_runs(runs: Iterable[Run]) -> dict[str, str]:
    """``{variant: "seed N: reasons; ..."}`` for the runs not trained enough to judge (by their metrics)."""
    out: dict[str, list[str]] = {}
    for run in runs:
        why = untrained_reasons(run.data.metrics)
        if why:
            out.setdefault(run.data.tags.get("variant", "?"), []).append(
                f"seed {run.data.tags.get('seed', '?')}: {', '.join(why)}")
    return {variant: "; ".join(reasons) for variant, reasons in out.items()}
