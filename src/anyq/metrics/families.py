"""The metric families of a test pass and which one a run leads with (its headline).

``test/`` scores the model's forecast (rearranged, uncalibrated), ``test_conformal/`` the
split-conformal one (``model.conformal=per_level`` or ``online``), ``test_online/`` the online
calibration's (``model.conformal=online``). A run's headline family is the forecast it serves;
it is recorded as the run tag ``headline=<prefix>`` and is what the terminal table, the HTML
report and MLflow's saved view lead with.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Metric prefix of each scored forecast.
RAW, SPLIT, ONLINE = "test", "test_conformal", "test_online"
FAMILIES = (RAW, SPLIT, ONLINE)
#: The run tag naming a run's headline family.
HEADLINE_TAG = "headline"
#: The main job's headline (``experiment=cpu_demo``: split conformal), measured best across the
#: data of docs/experiments.md, "Online calibration and the headline family"; MLflow's saved
#: view leads with it.
MAIN_HEADLINE = SPLIT


def headline_family(conformal: str) -> str:
    """The headline prefix of a model built with ``model.conformal=conformal``: ``test_online``
    (online), ``test_conformal`` (per_level) or ``test`` (none)."""
    return {"online": ONLINE, "per_level": SPLIT}.get(conformal, RAW)


def headline_of(tags: Mapping[str, str]) -> str:
    """A run's headline prefix from its tags; ``test`` for runs recorded before the tag existed."""
    family = tags.get(HEADLINE_TAG, RAW)
    return family if family in FAMILIES else RAW


def headline_metric(tags: Mapping[str, str], metrics: Mapping[str, float], name: str) -> float | None:
    """``<headline>/<name>`` of a run, falling back to ``test/<name>`` when the headline family
    lacks it (e.g. ``oracle_crps``); None when neither was logged."""
    for key in (f"{headline_of(tags)}/{name}", f"{RAW}/{name}"):
        if key in metrics:
            return float(metrics[key])
    return None
