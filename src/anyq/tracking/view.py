"""How the MLflow UI opens anyq's experiments: the model-training view and a saved column view.

MLflow 3 (checked against the 3.17 UI bundle) reads two kinds of experiment tags:

* ``mlflow.experimentKind``: ``custom_model_development`` opens the experiment on its runs
  table (the model-training view); without it the UI may infer ``genai_development`` and
  open the GenAI "Overview" (traces, token usage) instead.
* the sidebar's "GenAI | Model training" switch: a browser setting (``localStorage``,
  default GenAI) that the UI also takes from the address, ``?workflowType=machine_learning``;
  with it, experiments open on their runs table. Every link anyq prints carries it.
* ``mlflow.sharedViewState.<key>``: a *saved view* holding {name, createdAt, updatedAt,
  state}, where state is the JSON of the runs table's settings (columns, sort). The UI lists
  it in its view menu and opens it from ``#/experiments/<id>?viewStateShareKey=<key>``. The
  UI otherwise keeps its column choice in the browser; a server cannot set a default.

Every experiment anyq writes gets both (:func:`prepare_experiment`), so the comparison
columns are one click away in ``main`` as in every sweep or ablation. The saved view groups
the rows by the ``variant`` tag (``groupBy``, a key of the same state). What a saved view
cannot say: a number format (metric columns print at full precision, so the rounded
difference and the verdict are text tags), a column title of one's own (a column is titled by
its key, and tag keys may not hold ``(``, ``=`` or ``,``), and a grouped row's interval (the
UI aggregates by mean, min or max only).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Mapping, Optional

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from anyq.metrics.families import HEADLINE_TAG, MAIN_HEADLINE

KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
TRAINING_WORKFLOW = "machine_learning"  # the UI's "Model training" switch, as a URL parameter
VIEW_KEY = "anyq-comparison"
VIEW_NAME = "anyq comparison"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
# the main job's headline family first, then the uncalibrated forecast's scores; the rest is one
# click away (Columns); the page must fit a screen
VIEW_COLUMNS = (f"{MAIN_HEADLINE}/crps", f"{MAIN_HEADLINE}/coverage-0.9", "test/crps", "delta/crps_vs_baseline",
                "delta/coverage-0.9_vs_baseline", "test/coverage-0.9", "test/oracle_ratio")
#: Text tags the view shows rounded (MLflow's runs table prints metrics at full precision and has
#: no number format a saved view could set): the verdict of the run's group against the baseline
#: (written by the report) and the test CRPS difference (written when the run is compared).
VERDICT_TAG = "verdict"
DELTA_TAG = "Δ CRPS vs baseline - negative is better"
VIEW_TAGS = ("variant", VERDICT_TAG, DELTA_TAG, HEADLINE_TAG, "seed")
#: Pixels for the text columns, wide enough for their titles and values (the UI's default cuts
#: at about 15 characters; the metric columns keep the UI's width so that all fit a 2,400 px page).
COLUMN_WIDTHS = {f"tags.`{VERDICT_TAG}`": 190, f"tags.`{DELTA_TAG}`": 270}
#: Rows grouped by variant (seed means in the metric columns; each group opens on its runs).
GROUP_BY = {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "variant"}]}
VIEW_ATTRIBUTES = ("Dataset", "Source")  # the UI's own columns, kept beside the comparison


def view_state() -> dict[str, Any]:
    """The runs table sorted by test CRPS (every run has it) with the comparison columns shown,
    the main job's headline family first."""
    columns = ([f"tags.`{t}`" for t in VIEW_TAGS] + [f"metrics.`{m}`" for m in VIEW_COLUMNS]
               + [f"attributes.`{a}`" for a in VIEW_ATTRIBUTES])
    return {"searchFilter": "", "orderByKey": "metrics.`test/crps`", "orderByAsc": True,
            "selectedColumns": columns, "columnOrder": columns, "groupBy": GROUP_BY,
            "columnWidths": COLUMN_WIDTHS}


def delta_text(metrics: Mapping[str, float]) -> Optional[str]:
    """The value of :data:`DELTA_TAG`: ``-27.7 (-8.3 %)``, the test CRPS difference from the
    baseline in data units and in % of the baseline's (None without a comparison)."""
    delta, ratio = metrics.get("delta/crps_vs_baseline"), metrics.get("delta/crps_ratio_vs_baseline")
    if delta is None or not math.isfinite(delta):
        return None
    share = f" ({100 * (ratio - 1):+.1f} %)" if ratio is not None and math.isfinite(ratio) else ""
    return f"{delta:+.4g}{share}"


def view_fragment(experiment_id: str) -> str:
    """The UI address fragment that opens the saved view in the model-training workflow."""
    return f"#/experiments/{experiment_id}/runs?workflowType={TRAINING_WORKFLOW}&viewStateShareKey={VIEW_KEY}"


def save_view(client: MlflowClient, experiment_id: str) -> str:
    """Write the saved view on the experiment (kept if already current); the fragment opening it."""
    state = json.dumps(view_state())

    def current() -> bool:
        tag = client.get_experiment(experiment_id).tags.get(VIEW_TAG)
        return tag is not None and json.loads(tag).get("state") == state

    if not current():
        now = int(time.time() * 1000)
        envelope = {"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": state}
        _set_tag(client, experiment_id, VIEW_TAG, json.dumps(envelope), current)
    return view_fragment(experiment_id)


def _set_tag(client: MlflowClient, experiment_id: str, key: str, value: str, done: Any) -> None:
    """Set an experiment tag; parallel workers race on the first insert (the store's select,
    then insert): the loser checks that the winner wrote what it meant to, else retries."""
    for attempt in range(3):
        try:
            client.set_experiment_tag(experiment_id, key, value)
            return
        except MlflowException:
            if done():
                return
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))


def prepare_experiment(client: MlflowClient, experiment_id: str) -> None:
    """Model-training view and the saved comparison view on ``experiment_id``."""
    def kind_set() -> bool:
        return client.get_experiment(experiment_id).tags.get(KIND_TAG) == TRAINING_KIND

    if not kind_set():
        _set_tag(client, experiment_id, KIND_TAG, TRAINING_KIND, kind_set)
    save_view(client, experiment_id)
