"""The parent run of a study (a sweep, an ablation, a confirm study): trial runs nest under it."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from anyq.data.dataset import Dataset
from anyq.errors import ConfigError

from anyq.tracking.orphans import hold_shared_run, run_lock_dir
from anyq.tracking.runs import RunRecord, run_lifecycle, while_store_busy
from anyq.tracking.store import artifact_root, ensure_store, get_or_create_experiment, resolve_tracking_uri
from anyq.tracking.trial_runs import TRIAL_NUMBER_TAG

STUDY_TAG = "study_name"
ROLE_TAG = "role"  # "study" on a parent run
STUDY_KIND_TAG = "study_kind"  # grid (an ablation), confirm; a sweep's parent carries STORAGE_TAG
CELL_TAG = "study_cell"  # on a grid study's run: its cell, the sorted overrides that make it
# a sweep's parent run: where its Optuna study lives and what it optimises
STORAGE_TAG = "optuna.storage"
DIRECTIONS_TAG = "optuna.directions"
OBJECTIVES_TAG = "optuna.objectives"
# a sweep's winner retrained over seeds (anyq-confirm): tags linking the two studies
CONFIRM_OF_TAG = "confirm_of"  # on the confirm parent: the sweep's study name
CONFIRM_TRIAL_TAG = "confirm_trial"  # on the confirm parent and its runs: the sweep's trial confirmed
CONFIRM_STUDY_TAG = "confirm_study"  # on the sweep parent: the confirm study's name
CONFIRM_RUN_TAG = "confirm_parent_run_id"  # on the sweep parent
CONFIRM_VERDICT_TAG = "confirm_verdict"  # on the sweep parent: the verdict in one sentence


#: Tags naming the data a study's trials train on, as every run carries them
#: (:func:`anyq.tracking.recording.run_tags`): a study resumed on other data is refused.
DATA_TAGS = ("dataset", "data_fingerprint")


def data_identity(dataset: Dataset) -> dict[str, str]:
    """``{"dataset": …, "data_fingerprint": …}`` of a loaded data set
    (:func:`anyq.data.dataset.load_dataset`): what a study's parent records and what a command
    that resumes the study must match."""
    return dict(zip(DATA_TAGS, (dataset.name, dataset.fingerprint)))


def check_identity(run: Run, identity: Mapping[str, str], study_name: str) -> None:
    """Raise :class:`ConfigError` when the study's parent ``run`` recorded other values of
    ``identity``'s tags (a parent from before they were recorded matches anything)."""
    differs = {key: value for key, value in identity.items() if run.data.tags.get(key, value) != value}
    if differs:
        recorded = ", ".join(f"{key} {run.data.tags[key]}" for key in differs)
        given = ", ".join(f"{key} {value}" for key, value in differs.items())
        raise ConfigError(f"study {study_name!r} was run on other data ({recorded}; this command's: {given}), "
                          f"and its trials would mix the two: give this data a study of its own "
                          f"(hydra.sweeper.study_name=<new name>)")


def find_parent_run(client: MlflowClient, experiment_id: str, study_name: str,
                    select: Optional[Mapping[str, str]] = None) -> Optional[Run]:
    """The first parent run of ``study_name`` that carries every tag of ``select``, or None."""
    extra = "".join(f" and tags.`{key}` = '{value}'" for key, value in (select or {}).items())
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{STUDY_TAG} = '{study_name}' and tags.{ROLE_TAG} = 'study'{extra}",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0] if runs else None


def open_parent_run(client: MlflowClient, experiment_id: str, study_name: str,
                    tags: Mapping[str, str], held: ExitStack, lock_dir: Path, fresh: bool = False,
                    identity: Optional[Mapping[str, str]] = None, select: Optional[Mapping[str, str]] = None) -> str:
    """Reuse the study's parent run (a resumed or shared study) or create it; mark it RUNNING.
    ``identity`` (tags such as :func:`data_identity`'s) is recorded on a new parent and must
    match a reused one's (:func:`check_identity`: ConfigError, the parent left as it was);
    ``select``: only a parent with these tags is reused, else a new one is created beside the
    others (a confirm study per confirmed trial; reports take the newest parent of a name).
    This process holds the run's lock shared in ``held`` from before it is marked RUNNING
    (:func:`~anyq.tracking.orphans.hold_shared_run`), so a process that dies leaves a run the
    next command closes.

    ``fresh``: always a new parent (the main job: each ``make run`` is a study of its own;
    reports take the newest parent of a study name). Callers hold the study lock, so two
    workers never create two parents.
    """
    identity = identity or {}
    run = None if fresh else find_parent_run(client, experiment_id, study_name, select)
    if run is None:
        created = client.create_run(
            experiment_id,
            run_name=study_name,
            tags={STUDY_TAG: study_name, ROLE_TAG: "study", MLFLOW_RUN_NAME: study_name, **tags, **identity,
                  **(select or {})},
        )
        held.enter_context(hold_shared_run(lock_dir, created.info.run_id))
        return created.info.run_id
    check_identity(run, identity, study_name)
    for key, value in identity.items():
        if key not in run.data.tags:
            client.set_tag(run.info.run_id, key, value)
    held.enter_context(hold_shared_run(lock_dir, run.info.run_id))
    if run.info.status != "RUNNING":
        client.update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id


def child_runs(client: MlflowClient, parent: Run, status: Optional[str] = None) -> list[Run]:
    """The runs nested under ``parent`` (any status, or only ``status``: FINISHED, KILLED, ...)."""
    flt = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'"
    if status:
        flt += f" and attributes.status = '{status}'"
    return list(client.search_runs([parent.info.experiment_id], filter_string=flt, max_results=10000))


@dataclass(frozen=True)
class StudyParent:
    """Where a study's runs go: the store, its experiment and the parent run, RUNNING."""

    client: MlflowClient
    uri: str
    experiment: str
    experiment_id: str
    run_id: str
    held: ExitStack  # this process's shared hold of the run's lock

    def run(self) -> Run:
        return self.client.get_run(self.run_id)

    @contextmanager
    def lifecycle(self) -> Iterator[RunRecord]:
        """The parent run in a :func:`~anyq.tracking.runs.run_lifecycle` (closed FINISHED, FAILED or
        KILLED), its lock released once it is closed."""
        with self.held, run_lifecycle(self.client, self.run_id) as record:
            yield record


def open_study_parent(tracking_uri: Optional[str], mlruns_dir: str | Path, experiment: str, study_name: str,
                      tags: Mapping[str, str], *, fresh: bool = False, identity: Optional[Mapping[str, str]] = None,
                      select: Optional[Mapping[str, str]] = None,
                      lock: Optional[AbstractContextManager] = None) -> StudyParent:
    """Both sweepers' (and the confirm study's) set-up: resolve the store
    (:func:`~anyq.tracking.store.resolve_tracking_uri`), create it and the experiment if
    needed, then reuse or create the study's parent run under ``lock`` (the study lock of a
    study shared by several workers) and mark it RUNNING; a reused parent must have been run on
    ``identity`` (:func:`check_identity`) and carry ``select`` (:func:`open_parent_run`). The caller closes it in :meth:`StudyParent.lifecycle`."""
    uri = resolve_tracking_uri(tracking_uri, mlruns_dir)
    client = ensure_store(uri, mlruns_dir)
    experiment_id = get_or_create_experiment(client, experiment, artifact_root(uri, mlruns_dir, experiment))
    held = ExitStack()
    with lock or nullcontext():
        run_id = open_parent_run(client, experiment_id, study_name, tags, held, run_lock_dir(uri, Path(mlruns_dir)),
                                 fresh=fresh, identity=identity, select=select)
    return StudyParent(client, uri, experiment, experiment_id, run_id, held)


def record_summary(client: MlflowClient, parent_run_id: str, summary: dict[str, Any]) -> None:
    """Log a study's summary (:func:`anyq.sweeping.summary.summarize`) on its parent run and
    tag the winning trial runs under it ``best_trial=true``."""
    client.log_dict(parent_run_id, summary, "study_summary.json")
    for state, count in summary["trials_by_state"].items():
        client.log_metric(parent_run_id, f"trials/{state.lower()}", count)
    winners: list[int] = []
    if summary.get("best"):
        best = summary["best"]
        client.log_metric(parent_run_id, "best_value", best["value"])
        # every worker of a shared study records the summary: the tags go through the
        # store's retry, where a worker that inserted the same tag first makes the retry an update
        while_store_busy(lambda: client.set_tag(parent_run_id, "best_trial", str(best["number"])))
        while_store_busy(lambda: client.set_tag(parent_run_id, "best_params", json.dumps(best["params"])))
        winners = [best["number"]]
    if summary.get("pareto_front"):
        winners = [p["number"] for p in summary["pareto_front"]]
        while_store_busy(lambda: client.set_tag(parent_run_id, "pareto_trials", json.dumps(winners)))
    for name, value in summary.get("importances", {}).items():
        client.log_metric(parent_run_id, f"importance/{name}", value)
    for child in child_runs(client, client.get_run(parent_run_id)):
        number = child.data.tags.get(TRIAL_NUMBER_TAG)
        if number is not None and int(number) in winners:
            while_store_busy(lambda: client.set_tag(child.info.run_id, "best_trial", "true"))
