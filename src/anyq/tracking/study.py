"""The parent run of a study (a sweep or an ablation): trial runs nest under it."""

from __future__ import annotations

from typing import Mapping, Optional

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

STUDY_TAG = "study_name"
ROLE_TAG = "role"
# a sweep's winner retrained over seeds (anyq.app.confirm): tags linking the two studies
CONFIRM_OF_TAG = "confirm_of"  # on the confirm parent: the sweep's study name
CONFIRM_STUDY_TAG = "confirm_study"  # on the sweep parent: the confirm study's name
CONFIRM_RUN_TAG = "confirm_parent_run_id"  # on the sweep parent
CONFIRM_VERDICT_TAG = "confirm_verdict"  # on the sweep parent: the verdict in one sentence


def find_parent_run(client: MlflowClient, experiment_id: str, study_name: str) -> Optional[Run]:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{STUDY_TAG} = '{study_name}' and tags.{ROLE_TAG} = 'study'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0] if runs else None


def open_parent_run(client: MlflowClient, experiment_id: str, study_name: str,
                    tags: Mapping[str, str], fresh: bool = False) -> str:
    """Reuse the study's parent run (a resumed or shared study) or create it; mark it RUNNING.

    ``fresh``: always a new parent (the main job: each ``make run`` is a study of its own;
    reports take the newest parent of a study name). Callers hold the study lock, so two
    workers never create two parents.
    """
    run = None if fresh else find_parent_run(client, experiment_id, study_name)
    if run is None:
        created = client.create_run(
            experiment_id,
            run_name=study_name,
            tags={STUDY_TAG: study_name, ROLE_TAG: "study", MLFLOW_RUN_NAME: study_name, **tags},
        )
        return created.info.run_id
    if run.info.status != "RUNNING":
        client.update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id
