"""Read finished runs back from MLflow: reports never retrain anything."""

from __future__ import annotations

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from anyq.errors import ReportError, closest
from anyq.tracking.baseline import is_training_run
from anyq.tracking.study_parent import ROLE_TAG, STUDY_TAG


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of the experiment ``name``; :class:`ReportError` when the store has none."""
    found = client.get_experiment_by_name(name)
    if found is None:
        near = closest(name, [e.name for e in client.search_experiments()])
        raise ReportError(f"no MLflow experiment named {name!r} in {client.tracking_uri}"
                          + (f" (did you mean {near}?)" if near else ""))
    return found.experiment_id


def latest_runs(client: MlflowClient, experiment: str, last: int) -> list[Run]:
    """The ``last`` newest finished top-level training runs (not scored checkpoints), oldest first.

    Raises:
        ReportError: no such experiment, or none of its finished runs is outside a study
            (the message names its studies and the command that reports them).
    """
    found = experiment_id(client, experiment)
    runs = client.search_runs(
        [found],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=max(10 * last, 100),
    )
    top = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags and ROLE_TAG not in r.data.tags
           and is_training_run(r.data.tags)]
    if not top:
        studies = client.search_runs([found], filter_string=f"tags.{ROLE_TAG} = 'study'",
                                     order_by=["attributes.start_time DESC"], max_results=100)
        names = list(dict.fromkeys(r.data.tags.get(STUDY_TAG, "?") for r in studies))
        where = (f"its runs belong to studies ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
                 f"compare a study's runs with: anyq-report --study {names[0]}" if names
                 else "train one with `make run` or `anyq-train`")
        raise ReportError(f"experiment {experiment!r} has no finished run outside a study: {where}")
    return list(reversed(top[:last]))

