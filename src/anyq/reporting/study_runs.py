"""A study as MLflow holds it: the parent run, its finished runs, their groups and artifacts.

Reports never retrain: everything below reads what the runs logged (metrics, tags and the
``evaluation/`` artifacts). A study is either a *grid* (an ablation: runs grouped by their
``variant`` tag, one run per seed) or a *sweep* (parent tagged ``optuna.storage``, children
tagged ``optuna.trial_number``: the best trials by the sweep objective, one group each).
The baseline group is the study's own ``baseline_adaptive`` runs when it has them, else
the runs its children name in their ``baseline_run_id`` tag (sweeps train those on demand,
outside the parent).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from mlflow.artifacts import download_artifacts
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from anyq.errors import ReportError
from anyq.reporting.study_lookup import is_loose_run
from anyq.reporting.stats import StoredForecasts
from anyq.reporting.sweep_trials import SweepTrials, best_validation, sweep_trials
from anyq.tracking.baseline import BASELINE_VARIANT
from anyq.tracking.study_parent import (
    CELL_TAG,
    DIRECTIONS_TAG,
    OBJECTIVES_TAG,
    STORAGE_TAG,
    STUDY_TAG,
    child_runs,
)
from anyq.tracking.trial_runs import TRIAL_NUMBER_TAG
from anyq.training.config_tree import VARIANTS

FORECASTS = "evaluation/test_forecasts.npz"
IMPORTANCE = "evaluation/sampler_importance.npz"


def _configuration(run: Run) -> tuple[str, str]:
    """What makes runs comparable: the data, and the command line apart from seed and model."""
    overrides = run.data.tags.get("overrides", "").split()
    rest = sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("seed", "model"))
    return run.data.tags.get("data_fingerprint", ""), " ".join(rest)


def newest_per_cell(runs: Iterable[Run]) -> list[Run]:
    """One run per grid cell (its ``study_cell`` tag), else per (variant, seed), the newest: a
    command run again, or a cell two workers of one ablation both trained, is one seed of a
    comparison, not two identical ones."""
    newest: dict[tuple[str, ...], Run] = {}
    for run in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id)):
        tags = run.data.tags
        key = (tags[CELL_TAG],) if tags.get(CELL_TAG) else (tags.get("variant", "?"), str(_seed(run)))
        newest[key] = run
    return list(newest.values())


def load_runs_study(client: MlflowClient, tracking_uri: str, anchor: Run, *,
                    baseline: str = BASELINE_VARIANT) -> Study:
    """The single runs of ``anchor``'s experiment trained like it (same data, same command line
    but for ``seed=`` and ``model=``), grouped by variant, with the baselines they name. A
    command run again with the same seed is one seed, not two: its newest run stands for it."""
    experiment = client.get_experiment(anchor.info.experiment_id).name
    key = _configuration(anchor)
    finished = client.search_runs([anchor.info.experiment_id], "attributes.status = 'FINISHED'", max_results=10000)
    runs = newest_per_cell(r for r in finished if is_loose_run(r) and _configuration(r) == key)
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=_seed):
        groups.setdefault(run.data.tags.get("variant", "?"), []).append(run)
    base_runs = _baseline_runs(client, runs)
    if not base_runs:
        raise ReportError(f"run {anchor.info.run_id} names no FINISHED baseline run to compare against")
    order = list(VARIANTS)
    groups = dict(sorted(groups.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order),
                                                         kv[0])))
    return Study(client, tracking_uri, anchor, experiment, "runs", {baseline: base_runs, **groups}, baseline)


def objective_of(parent: Run) -> tuple[str, str]:
    """(metric, direction) a sweep optimised: its first objective; val/crps minimised otherwise."""
    objectives = parent.data.tags.get(OBJECTIVES_TAG, "val/crps").split(",")
    directions = parent.data.tags.get(DIRECTIONS_TAG, "minimize").split(",")
    return objectives[0].strip(), directions[0].strip()


@dataclass
class Study:
    """The runs a report is made of, already grouped; groups keep the study's order."""

    client: MlflowClient
    tracking_uri: str
    parent: Run
    experiment: str
    kind: str  # "grid", "sweep", or "runs" (single runs of an experiment; ``parent`` is the newest)
    groups: dict[str, list[Run]]
    baseline: str  # the key of the baseline group in ``groups``
    trials: list[Run] = field(default_factory=list)  # sweeps: every finished trial, by number
    objective: tuple[str, str] = ("val/crps", "minimize")
    trial_values: dict[str, float] = field(default_factory=dict)  # run id -> sweep objective
    pruned_values: dict[int, float] = field(default_factory=dict)  # trial number -> objective when pruned
    sweep: Optional[SweepTrials] = None  # sweeps: every trial in every state, importances
    top_trials: int = 0  # sweeps: how many of the best trials are compared on the test split

    @property
    def name(self) -> str:
        if self.kind == "runs":  # runs trained outside a study are named by their experiment
            return self.experiment
        return self.parent.data.tags.get(STUDY_TAG, self.parent.info.run_name or self.parent.info.run_id)

    @property
    def parent_run_id(self) -> str:
        return self.parent.info.run_id

    def runs(self) -> list[tuple[str, Run]]:
        return [(g, r) for g, runs in self.groups.items() for r in runs]


def _seed(run: Run) -> int:
    try:
        return int(run.data.tags.get("seed", "0"))
    except ValueError:
        return 0


def _baseline_runs(client: MlflowClient, children: list[Run]) -> list[Run]:
    """The runs the children were compared with (sweeps train them outside the parent)."""
    ids = sorted({r.data.tags["baseline_run_id"] for r in children if r.data.tags.get("baseline_run_id")})
    found = []
    for run_id in ids:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            continue
        if run.info.status == "FINISHED":
            found.append(run)
    return sorted(found, key=_seed)


def load_study(client: MlflowClient, tracking_uri: str, parent: Run, *, baseline: str = BASELINE_VARIANT,
               top_trials: int = 3) -> Study:
    """Group the parent's FINISHED children (see module doc) and attach the baseline group."""
    children = child_runs(client, parent, "FINISHED")
    if not children:
        raise ReportError(f"study parent run {parent.info.run_id} has no FINISHED runs under it")
    experiment = client.get_experiment(parent.info.experiment_id).name
    sweep = STORAGE_TAG in parent.data.tags or any(TRIAL_NUMBER_TAG in r.data.tags for r in children)
    groups: dict[str, list[Run]] = {}
    trials: list[Run] = []
    scores: dict[str, float] = {}
    pruned_values: dict[int, float] = {}
    every: Optional[SweepTrials] = None
    objective = objective_of(parent)
    if sweep:
        trials = sorted((r for r in children if TRIAL_NUMBER_TAG in r.data.tags), key=lambda r: int(r.data.tags[TRIAL_NUMBER_TAG]))
        metric, direction = objective
        scores = {r.info.run_id: best_validation(client, r, metric, direction) for r in trials}
        sign = 1.0 if direction == "minimize" else -1.0
        ranked = sorted(trials, key=lambda r: sign * scores[r.info.run_id]
                        if math.isfinite(scores[r.info.run_id]) else math.inf)
        for run in ranked[:top_trials]:
            groups[f"trial {run.data.tags[TRIAL_NUMBER_TAG]}"] = [run]
        base_runs = _baseline_runs(client, trials)
        pruned = [r for r in child_runs(client, parent, "KILLED")
                  if r.data.tags.get("trial_state") == "PRUNED" and TRIAL_NUMBER_TAG in r.data.tags]
        pruned_values = {int(r.data.tags[TRIAL_NUMBER_TAG]): best_validation(client, r, metric, direction) for r in pruned}
        every = sweep_trials(client, parent, child_runs(client, parent))
    else:
        for run in sorted(newest_per_cell(children), key=_seed):
            groups.setdefault(run.data.tags.get("variant", "?"), []).append(run)
        base_runs = groups.pop(baseline, None) or _baseline_runs(client, children)
        order = list(VARIANTS)  # conf/ablation/variants.yaml's order of the variants; unknown names after, by name
        groups = dict(sorted(groups.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order),
                                                             kv[0])))
    if not base_runs:
        raise ReportError(f"study {parent.info.run_id} has no FINISHED {baseline} runs to compare against")
    groups = {baseline: base_runs, **groups}
    return Study(client, tracking_uri, parent, experiment, "sweep" if sweep else "grid", groups, baseline,
                 trials, objective, scores, pruned_values, every, top_trials if sweep else 0)


class Artifacts:
    """Downloads each run's evaluation artifacts once, into a folder removed by ``close``."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.root = Path(tempfile.mkdtemp(prefix="anyq-report-"))
        self._forecasts: dict[str, StoredForecasts] = {}

    def _file(self, run_id: str, path: str) -> Optional[Path]:
        try:
            local = download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(self.root / run_id),
                                       tracking_uri=self.tracking_uri)
        except (MlflowException, OSError):
            return None
        return Path(local)

    def forecasts(self, run_id: str) -> StoredForecasts:
        if run_id not in self._forecasts:
            path = self._file(run_id, FORECASTS)
            if path is None:
                raise ReportError(f"run {run_id} has no {FORECASTS} artifact (trained with "
                                  f"evaluation.store_forecasts=false?)")
            with np.load(path) as arrays:
                self._forecasts[run_id] = StoredForecasts.from_arrays(arrays)
        return self._forecasts[run_id]

    def importance(self, run_id: str) -> Optional[np.ndarray]:
        """Sampler bin probabilities ``[epochs, num_bins]``, or None when the run logged none."""
        path = self._file(run_id, IMPORTANCE)
        if path is None:
            return None
        with np.load(path) as arrays:
            probabilities = np.asarray(arrays["probabilities"])
        return probabilities if probabilities.size else None

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Artifacts":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
