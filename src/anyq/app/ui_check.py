"""``python -m anyq.app.ui_check``: open an experiment's runs page in headless Chromium and check it.

    python -m anyq.app.ui_check                      # experiment main of mlruns/mlflow.db
    python -m anyq.app.ui_check --experiment ablation --out reports/ui/ablation_runs.png

Starts ``mlflow server`` on a free 127.0.0.1 port, opens the saved comparison view of the
experiment, writes a screenshot (default ``reports/ui/<experiment>_runs.png``) and checks
that the comparison columns, the dataset and the source are on the page; with ``--report``
also screenshots the report page and checks that its tables fit a 1,400 px window; exits 1
naming what is missing or too wide, 2 when no browser or server could be started. The server is stopped
before the command returns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from anyq.app.paths import work_root
from anyq.errors import BrowserError, StoreNotFoundError
from anyq.reporting.browser import capture, capture_runs_page, ensure_chromium, measure_tables
from anyq.tracking.store import open_existing_store, resolve_tracking_uri
from anyq.tracking.view import prepare_experiment

# What a user must see on the runs page of the saved view (headers, dataset, source).
EXPECTED = ("test_conformal/crps", "test_conformal/coverage-0.9", "test/crps", "delta/crps_vs_baseline",
            "delta/coverage-0.9_vs_baseline", "test/coverage-0.9", "test/oracle_ratio", "variant", "headline", "seed",
            "Dataset")


REPORT_WIDTH = 1400  # the report page must fit a window this wide (px)


def missing_on_page(dom: str, expected: Sequence[str]) -> list[str]:
    return [text for text in expected if text not in dom]


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m anyq.app.ui_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="main")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else mlruns/mlflow.db")
    parser.add_argument("--artifact-root", help="default: mlruns/artifacts beside the SQLite store")
    parser.add_argument("--out", type=Path, help="screenshot path (default reports/ui/<experiment>_runs.png)")
    parser.add_argument("--report", type=Path,
                        help="also screenshot this report page (e.g. reports/main/index.html) beside --out")
    args = parser.parse_args(argv)
    mlruns = work_root() / "mlruns"
    uri = resolve_tracking_uri(args.tracking_uri, mlruns)
    try:
        client = open_existing_store(uri)
    except StoreNotFoundError as exc:
        print(f"ui_check: error: {exc}", file=sys.stderr)
        sys.exit(2)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"ui_check: error: no MLflow experiment named {args.experiment!r} in {uri}", file=sys.stderr)
        sys.exit(2)
    prepare_experiment(client, experiment.experiment_id)  # the current saved view, training workflow
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", max_results=50)
    datasets = {i.dataset.name for r in runs for i in (r.inputs.dataset_inputs if r.inputs else [])}
    artifact_root = args.artifact_root or (mlruns / "artifacts").resolve().as_uri()
    out = args.out or work_root() / "reports" / "ui" / f"{args.experiment}_runs.png"
    try:
        page = capture_runs_page(uri, artifact_root, experiment.experiment_id, out)
    except BrowserError as exc:
        print(f"ui_check: error: {exc}", file=sys.stderr)
        sys.exit(2)
    missing = missing_on_page(page.dom, (*EXPECTED, *sorted(datasets)))
    print(f"{page.url}: screenshot {page.screenshot}")
    if missing:
        print(f"ui_check: missing on the runs page: {', '.join(missing)}", file=sys.stderr)
        sys.exit(1)
    if args.report:
        if not args.report.is_file():
            print(f"ui_check: error: no report page {args.report} (run make report first)", file=sys.stderr)
            sys.exit(2)
        shot = out.with_name(f"{args.experiment}_report.png")
        capture(ensure_chromium(), args.report.resolve().as_uri(), shot, width=REPORT_WIDTH, height=2400, wait_ms=2000)
        print(f"report page: screenshot {shot}")
        too_wide = measure_tables(ensure_chromium(), args.report, width=REPORT_WIDTH).too_wide()
        if too_wide:
            print(f"ui_check: report tables wider than a {REPORT_WIDTH} px window: {'; '.join(too_wide)}",
                  file=sys.stderr)
            sys.exit(1)
    print(f"ui_check: the runs page shows {', '.join(EXPECTED)} and dataset(s) {', '.join(sorted(datasets))}")


if __name__ == "__main__":
    main()
