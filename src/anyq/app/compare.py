"""``anyq-compare``: print the latest runs of an experiment side by side, their baselines
first (the reference of their Δ CRPS column), oldest first; one table per data set."""

from __future__ import annotations

import argparse
import sys

from anyq.app.paths import ui_hint, work_root
from anyq.errors import ReportError, StoreNotFoundError
from anyq.reporting.latest_runs import latest_runs
from anyq.reporting.table import print_runs
from anyq.tracking.baseline_comparison import BASELINE_RUN_TAG
from anyq.tracking.store import open_existing_store, resolve_tracking_uri


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default="anyq",
                        help="MLflow experiment whose runs trained outside a study are listed (default anyq)")
    parser.add_argument("--last", type=int, default=2, help="how many of the newest runs (default 2)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: MLFLOW_TRACKING_URI, else ./mlruns, or $ANYQ_ROOT/mlruns)")
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri, work_root() / "mlruns")
    try:
        client = open_existing_store(uri)
        runs = latest_runs(client, args.experiment, args.last)
    except (ReportError, StoreNotFoundError) as exc:  # no store, no such experiment: one line, exit 2 as anyq-report
        print(f"anyq-compare: error: {exc}", file=sys.stderr)
        sys.exit(2)
    shown = {run.info.run_id for run in runs}
    wanted = sorted({r.data.tags[BASELINE_RUN_TAG] for r in runs if r.data.tags.get(BASELINE_RUN_TAG)} - shown)
    if wanted:  # one query in every experiment (a baseline is reused across them); a deleted one is left out
        ids = ", ".join(f"'{run_id}'" for run_id in wanted)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  f"attributes.run_id IN ({ids})", order_by=["attributes.start_time ASC"]) + runs
    print_runs(runs, title=f"Experiment {args.experiment!r}: test split")
    experiment = client.get_experiment_by_name(args.experiment)
    print(f"MLflow store: {uri}  experiment id {experiment.experiment_id if experiment else '?'}")
    for run in runs:
        print(f"  {run.data.tags.get('variant', '?'):>20}  run {run.info.run_id}")
    print(f"Browse them with: {ui_hint(uri)}")


if __name__ == "__main__":
    main()
