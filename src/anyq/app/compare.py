"""``anyq-compare``: print the latest runs of an experiment side by side."""

from __future__ import annotations

import argparse
import sys

from anyq.app.paths import project_root
from anyq.errors import ReportError, StoreNotFoundError
from anyq.reporting.latest_runs import latest_runs
from anyq.reporting.table import print_runs
from anyq.tracking.store import open_existing_store, resolve_tracking_uri


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default="anyq")
    parser.add_argument("--last", type=int, default=2, help="how many of the newest runs")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri, project_root() / "mlruns")
    try:
        client = open_existing_store(uri)
        runs = latest_runs(client, args.experiment, args.last)
    except (ReportError, StoreNotFoundError) as exc:  # no store, no such experiment: the message, exit 1
        sys.exit(str(exc))
    print_runs(runs, title=f"Experiment {args.experiment!r}: test split")
    experiment = client.get_experiment_by_name(args.experiment)
    print(f"MLflow store: {uri}  experiment id {experiment.experiment_id if experiment else '?'}")
    for run in runs:
        print(f"  {run.data.tags.get('variant', '?'):>20}  run {run.info.run_id}")
    print("Browse them with: make ui  (http://127.0.0.1:5000)")


if __name__ == "__main__":
    main()
