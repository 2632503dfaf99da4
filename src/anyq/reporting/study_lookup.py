"""Which study or run a command is about, found by name in the MLflow store: a study's parent
run (by id, study name or experiment name, with the closest name when none matches) and the
newest run trained outside a study. MLflow only, no torch: a mistyped name is one line before
a report or a confirm study loads its heavy modules.
"""

from __future__ import annotations

from typing import Optional

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from anyq.errors import ReportError, closest, first_line
from anyq.tracking.baseline import BASELINE_VARIANT, is_training_run
from anyq.tracking.study_parent import ROLE_TAG, STORAGE_TAG, STUDY_TAG


def _search(client: MlflowClient, experiment_ids: list[str], flt: str, max_results: int = 1) -> list[Run]:
    return list(client.search_runs(experiment_ids, filter_string=flt, order_by=["attributes.start_time DESC"],
                                   max_results=max_results))


def find_parent(client: MlflowClient, *, experiment: Optional[str] = None, study: Optional[str] = None,
                parent_run_id: Optional[str] = None, sweep: bool = False) -> Run:
    """The study's parent run: by id, else the newest study parent matching experiment/study name.

    ``sweep``: the caller takes only a sweep (``anyq-confirm``), so a name that is not found
    is matched against sweeps' study names only, and the way out is a sweep.

    Raises:
        ReportError: no such run, experiment or study (the closest name, when one is near).
    """
    if parent_run_id:
        try:
            run = client.get_run(parent_run_id)
        except MlflowException as exc:
            raise ReportError(f"no run {parent_run_id} in the store: {first_line(exc)}") from exc
        if run.data.tags.get(ROLE_TAG) != "study":
            raise ReportError(f"run {parent_run_id} is not a study parent run (tag {ROLE_TAG}=study missing)")
        return run
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            near = closest(experiment, _study_names(client))
            raise ReportError(f"no MLflow experiment named {experiment!r}"
                              + (f" (did you mean {near}?)" if near else ""))
        experiment_ids = [found.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    flt = f"tags.{ROLE_TAG} = 'study'" + (f" and tags.{STUDY_TAG} = '{study}'" if study else "")
    runs = _search(client, experiment_ids, flt) if experiment_ids else []
    if not runs and study and not experiment:  # any experiment name works too
        named = client.get_experiment_by_name(study)
        if named is not None:
            runs = _search(client, [named.experiment_id], f"tags.{ROLE_TAG} = 'study'")
            if not runs:
                way = ("train a sweep first, `make sweep`" if sweep else
                       "runs trained outside a study: rerun them with `make run` or a sweep/ablation")
                raise ReportError(f"MLflow experiment {study!r} has no study parent run ({way})")
    if not runs:
        named = (experiment and f"experiment {experiment!r}", study and f"study {study!r}")
        where = " and ".join(x for x in named if x)
        near = closest(study or experiment or "", _study_names(client, sweep)) if (study or experiment) else None
        there = sorted(_studies(client, sweep))
        listed = ", ".join(there[:8]) + (", ..." if len(there) > 8 else "")
        hint = (f"did you mean {near}? " if near else
                f"{'sweeps' if sweep else 'studies'} in the store: {listed}; or " if there else "")
        first = ("a sweep first, `make sweep`" if sweep
                 else "a study first: a sweep, `make sweep`, or an ablation, `make ablate`")
        raise ReportError(f"no study parent run{' for ' + where if where else ''} in the store ({hint}train {first})")
    return runs[0]


def _studies(client: MlflowClient, sweeps_only: bool = False) -> set[str]:
    """Every study parent's study name in the store; ``sweeps_only``: those of sweeps (parents
    with an Optuna study behind them)."""
    experiments = client.search_experiments()
    parents = _search(client, [e.experiment_id for e in experiments], f"tags.{ROLE_TAG} = 'study'", 1000)
    return {r.data.tags[STUDY_TAG] for r in parents
            if r.data.tags.get(STUDY_TAG) and (STORAGE_TAG in r.data.tags or not sweeps_only)}


def _study_names(client: MlflowClient, sweeps_only: bool = False) -> set[str]:
    """The names a reader may mean: :func:`_studies`, and every experiment's name unless ``sweeps_only``."""
    studies = _studies(client, sweeps_only)
    return studies if sweeps_only else studies | {e.name for e in client.search_experiments()}


def is_loose_run(run: Run) -> bool:
    """A FINISHED run trained outside any study and compared with its baseline: what
    ``anyq-train`` without ``-m`` leaves (a baseline, a scored checkpoint or a study's run is not)."""
    tags = run.data.tags
    return (run.info.status == "FINISHED" and MLFLOW_PARENT_RUN_ID not in tags and bool(tags.get("baseline_run_id"))
            and tags.get(ROLE_TAG) not in ("study", "baseline") and tags.get("variant") != BASELINE_VARIANT
            and is_training_run(tags))


def newest_loose_run(client: MlflowClient, experiment_ids: list[str]) -> Optional[Run]:
    """The newest run trained outside a study (:func:`is_loose_run`) in these experiments."""
    if not experiment_ids:
        return None
    runs = client.search_runs(experiment_ids, "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=500)
    return next((r for r in runs if is_loose_run(r)), None)
