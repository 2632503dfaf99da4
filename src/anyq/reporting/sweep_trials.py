"""Every trial of a sweep as the report lists it: number, state, parameters, objectives, run.

The Optuna study behind the sweep's parent run (tag ``optuna.storage``) is the source: it
holds every trial in every state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), its parameters
and its objective values, and it is what Optuna's importance evaluator reads. A study that
cannot be opened read-only from here (a SQLite file that is not on this machine, a server
whose password the tag leaves out) is rebuilt from the trials' MLflow runs instead: their
``trial_state`` tag, the searched keys of the parent's ``search_space`` tag read from their
params, and their best epoch of the objective. The page says which source it used.

Importances are ``optuna.importance.get_param_importances`` (fANOVA by default) on the first
objective; they need at least :data:`MIN_COMPLETE` complete trials that vary a parameter.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from anyq.errors import first_line
from anyq.sweeping.storage import STORAGE_ENV, driver_url, redacted
from anyq.tracking.study_parent import DIRECTIONS_TAG, OBJECTIVES_TAG, STORAGE_TAG, STUDY_TAG
from anyq.tracking.trial_runs import TRIAL_NUMBER_TAG, TRIAL_STATE_TAG

MIN_COMPLETE = 2  # fewer complete trials give no importance
RECIPE_TAGS = ("recipe", "recipe_hash")  # the training recipe a run was trained under, when tagged
_SPACE_KEY = re.compile(r"(?:^|\) )([^\s=]+)=")  # keys of the parent's search_space tag


@dataclass(frozen=True)
class TrialRow:
    """One trial: ``values`` are its objectives (None unless COMPLETE; a pruned trial's
    ``intermediate`` is its best reported epoch), ``run`` its MLflow run when it has one."""

    number: int
    state: str
    params: dict[str, Any]
    values: Optional[list[float]]
    intermediate: Optional[float] = None
    run: Optional[Run] = None


@dataclass
class SweepTrials:
    rows: list[TrialRow]  # by trial number
    params: list[str]  # the searched parameters, in the order of the search space
    objectives: list[str]
    directions: list[str]
    source: str  # where the trials were read, in words
    importances: dict[str, float] = field(default_factory=dict)  # parameter -> share, sums to 1
    importance_note: str = ""  # why there are none, in one sentence
    scales: dict[str, str] = field(default_factory=dict)  # parameter -> categorical, int, float or log

    def scale(self, name: str) -> str:
        return self.scales.get(name, "float")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            out[row.state] = out.get(row.state, 0) + 1
        return out

    def complete(self) -> list[TrialRow]:
        return [r for r in self.rows if r.state == TrialState.COMPLETE.name and r.values]


def space_keys(tag: str) -> list[str]:
    """The parameter names of the parent's ``search_space`` tag (``key=Distribution(...) ...``)."""
    return list(dict.fromkeys(_SPACE_KEY.findall(tag or "")))


def _storage_url(tag: str) -> Optional[str]:
    """The study's storage URL when it can be opened read-only from here, else None."""
    env = os.environ.get(STORAGE_ENV)
    if env and redacted(env) == tag:  # the tag hides the password the variable holds
        tag = env
    if tag.startswith("sqlite:///"):
        path = Path(tag[len("sqlite:///"):])
        return tag if path.is_file() else None  # never create a store by reading one
    if tag.startswith("journal:///"):
        return None  # a journal file is the sweep's own; MLflow has the same trials
    return tag if "***" not in tag else None


def load_optuna_study(parent: Run) -> tuple[Optional[optuna.Study], str]:
    """The sweep's Optuna study read-only (no table created), or None and why."""
    tag = parent.data.tags.get(STORAGE_TAG, "")
    name = parent.data.tags.get(STUDY_TAG, "")
    url = _storage_url(tag)
    if url is None:
        return None, f"Optuna storage {tag or '(none recorded)'} is not readable from here"
    try:
        storage = RDBStorage(driver_url(url), skip_table_creation=True, skip_compatibility_check=True)
        return optuna.load_study(study_name=name, storage=storage), f"Optuna study {name!r} in {redacted(url)}"
    except Exception as exc:  # noqa: BLE001 - any storage error falls back to MLflow
        return None, f"Optuna study {name!r} in {redacted(url)} could not be read ({first_line(exc)})"


def best_validation(client: MlflowClient, run: Run, metric: str, direction: str) -> float:
    """A trial's objective as Optuna saw it: the best epoch of ``metric`` its run logged."""
    history = [m.value for m in client.get_metric_history(run.info.run_id, metric) if math.isfinite(m.value)]
    if not history:
        return run.data.metrics.get(metric, math.nan)
    return min(history) if direction == "minimize" else max(history)


def _run_state(run: Run) -> str:
    state = run.data.tags.get(TRIAL_STATE_TAG)
    if state:
        return state
    return {"FINISHED": "COMPLETE", "RUNNING": "RUNNING", "SCHEDULED": "WAITING"}.get(run.info.status, "FAIL")


def _param(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _from_runs(client: MlflowClient, parent: Run, runs: list[Run], objectives: list[str],
               directions: list[str]) -> tuple[list[TrialRow], list[str]]:
    keys = space_keys(parent.data.tags.get("search_space", ""))
    newest: dict[int, Run] = {}
    for run in runs:  # a trial retried after its worker died has several runs: the newest speaks
        number = int(run.data.tags[TRIAL_NUMBER_TAG])
        if number not in newest or run.info.start_time > newest[number].info.start_time:
            newest[number] = run
    rows = []
    for number, run in sorted(newest.items()):
        state = _run_state(run)
        values = [best_validation(client, run, m, d) for m, d in zip(objectives, directions)]
        params = {k: _param(run.data.params[k]) for k in keys if k in run.data.params}
        rows.append(TrialRow(number, state, params, values if state == "COMPLETE" else None,
                             values[0] if state == "PRUNED" else None, run))
    return rows, keys


def _scale(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return "categorical"
    if getattr(dist, "log", False):
        return "log"
    return "int" if isinstance(dist, IntDistribution) else "float"


def _from_study(study: optuna.Study, runs: list[Run]) -> tuple[list[TrialRow], list[str]]:
    by_number: dict[int, Run] = {}
    for run in runs:
        number = int(run.data.tags[TRIAL_NUMBER_TAG])
        if number not in by_number or run.info.start_time > by_number[number].info.start_time:
            by_number[number] = run
    rows, keys = [], {}
    for trial in study.get_trials(deepcopy=False):
        keys.update(dict.fromkeys(trial.distributions))
        best = None
        if trial.intermediate_values:
            seen = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
            if seen:
                best = min(seen) if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else max(seen)
        rows.append(TrialRow(trial.number, trial.state.name, dict(trial.params),
                             list(trial.values) if trial.values is not None else None,
                             best if trial.state == TrialState.PRUNED else None, by_number.get(trial.number)))
    return sorted(rows, key=lambda r: r.number), list(keys)


def _inferred_study(rows: list[TrialRow], keys: list[str], directions: list[str]) -> optuna.Study:
    """An in-memory study of the complete trials, distributions inferred from the values seen."""
    dists: dict[str, BaseDistribution] = {}
    for key in keys:
        seen = [r.params[key] for r in rows if key in r.params]
        if seen and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
            dists[key] = FloatDistribution(float(min(seen)), float(max(seen)))
        elif seen:
            dists[key] = CategoricalDistribution(sorted({str(v) for v in seen}))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    try:
        study = optuna.create_study(directions=directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for row in rows:
        if row.state != "COMPLETE" or not row.values or any(k not in row.params for k in dists):
            continue
        params = {k: (float(row.params[k]) if isinstance(d, FloatDistribution) else str(row.params[k]))
                  for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, values=row.values))
    return study


def importances_of(study: optuna.Study, complete: int) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances on the first objective, or none and the reason."""
    if complete < MIN_COMPLETE:
        return {}, (f"Parameter importances need at least {MIN_COMPLETE} complete trials; this sweep has "
                    f"{complete}.")
    target = None if len(study.directions) == 1 else (lambda t: t.values[0])
    try:
        found = optuna.importance.get_param_importances(study, target=target)
    except (RuntimeError, ValueError) as exc:  # e.g. every complete trial has the same parameters
        return {}, f"Optuna could not rank the parameters: {first_line(exc)}."
    if not found:
        return {}, "No parameter varied among the complete trials, so none can be ranked."
    return {k: float(v) for k, v in found.items()}, ""


def sweep_trials(client: MlflowClient, parent: Run, runs: list[Run]) -> SweepTrials:
    """Every trial of the sweep under ``parent``; ``runs`` are its trial runs in any state."""
    objectives = [s.strip() for s in parent.data.tags.get(OBJECTIVES_TAG, "val/crps").split(",")]
    directions = [s.strip() for s in parent.data.tags.get(DIRECTIONS_TAG, "minimize").split(",")]
    runs = [r for r in runs if TRIAL_NUMBER_TAG in r.data.tags]
    study, source = load_optuna_study(parent)
    if study is not None:
        rows, keys = _from_study(study, runs)
        ranked = study
        dists = {k: d for t in study.get_trials(deepcopy=False) for k, d in t.distributions.items()}
    else:
        rows, keys = _from_runs(client, parent, runs, objectives, directions)
        source = f"the trials' MLflow runs ({source})"
        ranked = _inferred_study(rows, keys, directions)
        dists = {k: d for t in ranked.get_trials(deepcopy=False) for k, d in t.distributions.items()}
    complete = sum(1 for r in rows if r.state == "COMPLETE" and r.values)
    importances, note = importances_of(ranked, complete) if keys else (
        {}, "The sweep recorded no searched parameters, so none can be ranked.")
    return SweepTrials(rows, keys, objectives, directions, source, importances, note,
                       {k: _scale(d) for k, d in dists.items()})


def recipe_of(tags: dict[str, str]) -> Optional[str]:
    """``name (hash)`` of the recipe a run or study was trained under, when it is tagged."""
    name, digest = (tags.get(t) for t in RECIPE_TAGS)
    if not name and not digest:
        return None
    return f"{name or '?'} ({digest[:12]})" if digest else str(name)
