"""Closing the MLflow runs of trials whose worker died.

A worker killed outright (SIGKILL, a lost machine, an out-of-memory kill) cannot close
its runs, so they would stay RUNNING for ever. The worker that finds the trial stale in
Optuna closes them for it, the same way whatever the launcher: the trial's own run and
every run its job opened besides (the baseline it was training), found by the tag
:data:`OPENED_BY_TRIAL_TAG` that each of them carries (:func:`trial_key`).
"""

from __future__ import annotations

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from anyq.tracking.runs import RunRecord, close_run

STUDY_NAME_TAG = "optuna.study_name"
TRIAL_NUMBER_TAG = "optuna.trial_number"
#: On every run a trial's job opens (its own, its baseline): which trial of which study parent.
OPENED_BY_TRIAL_TAG = "opened_by_trial"
TRIAL_STATE_TAG = "trial_state"


def trial_key(parent_run_id: str, trial_number: int) -> str:
    """The value of :data:`OPENED_BY_TRIAL_TAG`: ``<study parent run id>/<trial number>``."""
    return f"{parent_run_id}/{int(trial_number)}"


def close_trial_runs(client: MlflowClient, parent_run_id: str, study_name: str, trial_number: int,
                     reason: str, status: str = "KILLED") -> list[str]:
    """Make the runs of a trial that Optuna failed for a lost worker say so; the ids changed.

    - the trial's own run (under the parent, tagged with its study and number): tagged
      ``trial_state=FAIL`` (what Optuna says of the trial); when it reads RUNNING, or FINISHED
      (its job ended but its worker died before telling the study, which retries the trial),
      it is also closed ``status`` with ``error=reason``; a run its job closed FAILED or
      KILLED keeps its status and error;
    - every other run the trial's job opened (:data:`OPENED_BY_TRIAL_TAG`, the baseline it
      was training) that reads RUNNING: closed ``status`` with ``error=reason``; a finished
      baseline stays the valid baseline it is.

    Calling this twice (two workers noticing the same death) is harmless.
    """
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    quoted = f'"{study_name}"' if "'" in study_name else f"'{study_name}'"  # MLflow has no escapes
    own = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' "
                       f"and tags.`{STUDY_NAME_TAG}` = {quoted} "
                       f"and tags.`{TRIAL_NUMBER_TAG}` = '{int(trial_number)}'"),
        max_results=100,
    )
    opened = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{OPENED_BY_TRIAL_TAG}` = '{trial_key(parent_run_id, trial_number)}' "
                       "and attributes.status = 'RUNNING'"),
        max_results=100,
    )
    changed: list[str] = []
    own_ids = {run.info.run_id for run in own}
    for run in own:
        if run.info.status in ("RUNNING", "FINISHED"):
            _close(client, run, reason, status, {TRIAL_STATE_TAG: "FAIL"})
        elif run.data.tags.get(TRIAL_STATE_TAG) != "FAIL":
            RunRecord(client, run.info.run_id).set_tags({TRIAL_STATE_TAG: "FAIL"})
        else:
            continue
        changed.append(run.info.run_id)
    for run in opened:
        if run.info.run_id not in own_ids:
            _close(client, run, reason, status, {})
            changed.append(run.info.run_id)
    return changed


def _close(client: MlflowClient, run: Run, reason: str, status: str, tags: dict[str, str]) -> None:
    RunRecord(client, run.info.run_id).set_tags({"error": reason[:500], **tags})
    close_run(client, run.info.run_id, status)
