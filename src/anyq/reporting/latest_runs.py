"""Read finished runs back from MLflow: reports never retrain anything."""

from __future__ import annotations

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from anyq.errors import ReportError
from anyq.tracking.study_parent import ROLE_TAG


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of the experiment ``name``; :class:`ReportError` when the store has none."""
    found = client.get_experiment_by_name(name)
    if found is None:
        raise ReportError(f"no MLflow experiment named {name!r} in {client.tracking_uri}")
    return found.experiment_id


def latest_runs(client: MlflowClient, experiment: str, last: int) -> list[Run]:
    """The ``last`` newest finished top-level runs, oldest first."""
    runs = client.search_runs(
        [experiment_id(client, experiment)],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=max(10 * last, 100),
    )
    top = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags and ROLE_TAG not in r.data.tags]
    return list(reversed(top[:last]))

