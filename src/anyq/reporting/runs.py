"""Read finished runs back from MLflow: reports never retrain anything."""

from __future__ import annotations

from typing import Optional

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID


def experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        raise SystemExit(f"no MLflow experiment named {name!r} in {client._tracking_client.tracking_uri}")
    return found.experiment_id


def latest_runs(client: MlflowClient, experiment: str, last: int) -> list[Run]:
    """The ``last`` newest finished top-level runs, oldest first."""
    runs = client.search_runs(
        [experiment_id(client, experiment)],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=max(10 * last, 100),
    )
    top = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags and "role" not in r.data.tags]
    return list(reversed(top[:last]))


def child_runs(client: MlflowClient, parent: Run, status: Optional[str] = None) -> list[Run]:
    flt = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'"
    if status:
        flt += f" and attributes.status = '{status}'"
    return list(client.search_runs([parent.info.experiment_id], filter_string=flt, max_results=10000))
