"""Closing the MLflow runs of trials whose worker died.

A worker killed outright (SIGKILL, a lost machine, an out-of-memory kill) cannot close
its own run, so the run would stay RUNNING for ever. The worker that finds the trial
stale in Optuna closes the run for it, the same way whatever the launcher.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from anyq.tracking.runs import close_run

STUDY_NAME_TAG = "optuna.study_name"
TRIAL_NUMBER_TAG = "optuna.trial_number"


def close_trial_runs(client: MlflowClient, parent_run_id: str, study_name: str, trial_number: int,
                     reason: str, status: str = "KILLED") -> list[str]:
    """Mark the trial's RUNNING runs under the parent ``status``, tagged ``error=reason``
    and ``trial_state=FAIL`` (what Optuna says of the trial).

    Only RUNNING runs are touched, so a run its job closed itself keeps its own status,
    and calling this twice (two workers noticing the same death) is harmless.
    Returns the ids of the runs closed.
    """
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    quoted = f'"{study_name}"' if "'" in study_name else f"'{study_name}'"  # MLflow has no escapes
    runs = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' "
                       f"and tags.`{STUDY_NAME_TAG}` = {quoted} "
                       f"and tags.`{TRIAL_NUMBER_TAG}` = '{int(trial_number)}' "
                       "and attributes.status = 'RUNNING'"),
        max_results=100,
    )
    for run in runs:
        client.set_tag(run.info.run_id, "error", reason[:500])
        client.set_tag(run.info.run_id, "trial_state", "FAIL")
        close_run(client, run.info.run_id, status)
    return [run.info.run_id for run in runs]
