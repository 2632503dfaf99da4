"""``anyq-report``: compare the runs of a study and write its HTML report (nothing is retrained).

    anyq-report                          # the newest study (main job, ablation, sweep) in the store
    anyq-report main                     # the newest study of that name, or of that MLflow experiment
    anyq-report --study ablation         # the same, spelt out
    anyq-report --experiment ablation --alpha 0.01
    anyq-report --view-only              # only write the MLflow UI's saved comparison view
    anyq-report --experiment anyq        # single runs (anyq-train without -m) of that experiment

A name with no study behind it (an experiment of single runs) reports that experiment's
runs trained outside a study like the newest one (same data and command line but for seed
and model) against the baselines they were compared with; so does no name when the newest
thing in the store is such a run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from rich import box
from rich.console import Console
from rich.table import Table

from anyq.app.paths import work_root
from anyq.errors import ReportError, StoreNotFoundError, WindowMismatchError
from anyq.interrupts import stop_on_signals
from anyq.reporting.study_lookup import find_parent, newest_loose_run
from anyq.reporting.table import wide_console
from anyq.tracking.baseline import BASELINE_VARIANT
from anyq.tracking.store import open_existing_store, resolve_tracking_uri
from anyq.tracking.study_parent import (
    CONFIRM_STUDY_TAG,
    STORAGE_TAG,
    STUDY_KIND_TAG,
    STUDY_TAG,
    child_runs,
)
from anyq.tracking.view import VIEW_COLUMNS, save_view

if TYPE_CHECKING:
    from anyq.reporting.study_comparison import StudyComparison
    from anyq.reporting.study_runs import Study

# The comparison, its statistics and figures (torch, SciPy, statsmodels, matplotlib) are
# imported once the study or run is found: a mistyped name is one line in about 2 s.
UI_URL = "http://127.0.0.1:5000"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="anyq-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="study name or MLflow experiment name (default: the newest study)")
    parser.add_argument("--experiment", help="MLflow experiment of the study (default: any)")
    parser.add_argument("--study", help="study name (the parent run's study_name tag) or experiment name")
    parser.add_argument("--parent-run-id", help="the study's parent run (default: the newest study parent)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else mlruns/mlflow.db)")
    parser.add_argument("--out", type=Path, help="report folder (default: reports/<study>)")
    parser.add_argument("--alpha", type=float, default=0.05, help="level of the paired tests (default 0.05)")
    parser.add_argument("--baseline", default=BASELINE_VARIANT, help="variant every group is compared with")
    parser.add_argument("--no-log", action="store_true", help="do not attach the report to the parent run")
    parser.add_argument("--view-only", action="store_true",
                        help="only write the MLflow UI's saved view with the comparison columns")
    parser.add_argument("--ui-url", default=UI_URL, help="where `make ui` serves MLflow (for printed links)")
    args = parser.parse_args(argv)
    if args.name and args.study and args.name != args.study:
        parser.error(f"two names given: {args.name!r} and --study {args.study!r}")
    args.study = args.study or args.name
    if not 0.0 < args.alpha < 1.0:
        parser.error(f"--alpha must be in (0, 1), got {args.alpha}")
    return args


def _cell(mean: float, half: float, fmt: str | int) -> str:
    from anyq.reporting.html import mean_ci

    return mean_ci(mean, half, fmt, sep="±").replace("–", "-")


def _relative(delta: float, low: float, high: float) -> str:
    """``+1.2 (-0.4..+2.8)``: the relative CRPS difference in % and its interval."""
    if math.isnan(delta):
        return "-"
    return f"{delta:+.1f}" + ("" if math.isnan(low) else f" ({low:+.1f}..{high:+.1f})")


def comparison_tables(comparison: "StudyComparison") -> tuple[Table, Table]:
    """Scores and verdicts first, calibration and cost second: each fits an 80-column terminal."""
    from anyq.reporting.stats import BETTER, NO_DIFFERENCE, WORSE
    from anyq.reporting.verdict import BASELINE_NOT_TRAINED, NOT_TRAINED, TOO_FEW_SEEDS

    table = comparison.table()
    study = comparison.study
    ci = f"seed mean ± {100 * comparison.confidence:g} % CI half-width"
    style = {"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True}
    headline = comparison.headline
    families = "test/" if headline == "test" else f"headline {headline}/ and test/"
    kind = study.parent.data.tags.get(STUDY_KIND_TAG) or study.kind  # a confirm study: "confirm", not "grid"
    scores = Table(title=f"Study {study.name!r} ({kind}), test split: {families} "
                         f"CRPS in data units ({ci}) and verdict of test/ vs {comparison.baseline}", **style)
    details = Table(title=f"Study {study.name!r}: coverage of the 90 % and 95 % intervals, calibration, point "
                          f"accuracy, cost ({ci})", **style)
    for name in ("group", "n", "head-\nline\nCRPS", "CRPS", "ens.\nCRPS", "Δ CRPS %\n(interval;\n− = better)",
                 "p\n(Holm)", "verdict", "head-\nline /\noracle"):
        scores.add_column(name, justify="left" if name in ("group", "verdict") else "right", no_wrap=True)
    for name in ("group", "head-\nline\ncov. 90 %", "cov.\n90 %", "cov.\n95 %", "CRPS\n%", "MARFE", "MAPE\n%",
                 "train\ns"):
        details.add_column(name, justify="left" if name == "group" else "right", no_wrap=True)
    styles = {BETTER: "[green]better[/]", WORSE: "[red]worse[/]", NO_DIFFERENCE: "n.s.", "baseline": "ref.",
              TOO_FEW_SEEDS: "too few seeds", NOT_TRAINED: "[yellow]not trained enough[/]",
              BASELINE_NOT_TRAINED: "[yellow]baseline not trained[/]", "reference": "ref."}
    for group, row in table.iterrows():
        def c(metric: str, fmt: str | int) -> str:
            return _cell(row[metric], row[f"{metric} ±"], fmt)

        verdict = str(row["verdict"])
        scores.add_row(
            str(group), str(row["seeds"]), c("headline/crps", 4), c("test/crps", 4),
            _cell(row["ensemble/crps"], math.nan, 4),
            _relative(row["delta/crps %"], row["ci_low %"], row["ci_high %"]),
            "-" if math.isnan(row["p_value"]) else f"{row['p_value']:.1g}",
            styles.get(verdict, verdict), c("headline/oracle_ratio", "{:.3f}"),
        )
        details.add_row(
            str(group), c("headline/coverage-0.9", "{:.3f}"), c("test/coverage-0.9", "{:.3f}"),
            c("test/coverage-0.95", "{:.3f}"), c("test/crps_norm", "{:.2f}"), c("test/marfe", "{:.4f}"),
            c("test/mape", "{:.2f}"), c("train_seconds", "{:.0f}"),
        )
    return scores, details


def view_only(client: MlflowClient, args: argparse.Namespace, console: Console) -> None:
    if args.experiment or args.study or args.parent_run_id:
        parent = find_parent(client, experiment=args.experiment, study=args.study, parent_run_id=args.parent_run_id)
        experiment_ids = [parent.info.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()  # studies' and single runs'
                          if client.search_runs([e.experiment_id], max_results=1)]
    for experiment_id in experiment_ids:
        name = client.get_experiment(experiment_id).name
        console.print(f"saved view 'anyq comparison' of experiment {name!r}: "
                      f"{args.ui_url}/{save_view(client, experiment_id)}")
    pinned = ", ".join(VIEW_COLUMNS)
    console.print(f"If your MLflow UI shows other columns, pick the view 'anyq comparison' in the runs table's "
                  f"view menu, or pin these columns (Columns button): {pinned}")


def found_line(client: MlflowClient, parent: Run) -> str:
    """What the report is about, in one line: study, kind, runs, experiment, parent run."""
    tags = parent.data.tags
    children = child_runs(client, parent, "FINISHED")
    variants = sorted({r.data.tags.get("variant", "?") for r in children})
    kind = tags.get(STUDY_KIND_TAG) or ("sweep" if STORAGE_TAG in tags else "grid")
    experiment = client.get_experiment(parent.info.experiment_id).name
    started = dt.datetime.fromtimestamp(parent.info.start_time / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Found study {tags.get(STUDY_TAG, parent.info.run_name)!r} ({kind}, {len(children)} finished runs: "
            f"{', '.join(variants) or 'none'}) in experiment {experiment!r}, parent run {parent.info.run_id}, "
            f"started {started}")


def runs_found_line(client: MlflowClient, study: "Study") -> str:
    """What a report of single runs is about: the experiment, its runs and the newest one."""
    variants = ", ".join(f"{g} ({len(r)})" for g, r in study.groups.items())
    return (f"Found {sum(len(r) for r in study.groups.values())} runs trained outside a study in experiment "
            f"{study.experiment!r} ({variants}), newest run {study.parent_run_id}")


def pick_target(client: MlflowClient, args: argparse.Namespace) -> tuple[Optional[Run], Optional[Run]]:
    """(study parent, None) or (None, newest single run): what the report is about.

    A named study or experiment with no study parent, or no name when the newest thing in the
    store is a single run (``anyq-train`` without ``-m``), gives that experiment's single runs.
    """
    if args.parent_run_id:
        return find_parent(client, parent_run_id=args.parent_run_id), None
    try:
        parent: Optional[Run] = find_parent(client, experiment=args.experiment, study=args.study)
    except ReportError as exc:
        named = args.experiment or args.study
        experiment = client.get_experiment_by_name(named) if named else None
        ids = ([experiment.experiment_id] if experiment is not None else
               [] if named else [e.experiment_id for e in client.search_experiments()])
        if named and experiment is None:
            raise  # no study and no experiment of that name: find_parent's line, with its suggestion
        loose = newest_loose_run(client, ids)
        if loose is None:
            raise ReportError(f"{exc}; nor any run trained outside a study and compared with its baseline") from None
        return None, loose
    if args.experiment or args.study:
        return parent, None
    loose = newest_loose_run(client, [e.experiment_id for e in client.search_experiments()])
    if loose is not None and parent is not None and loose.info.start_time > parent.info.start_time:
        return None, loose
    return parent, None


def report(client: MlflowClient, uri: str, args: argparse.Namespace, console: Console) -> Path:
    started = time.perf_counter()
    parent, anchor = pick_target(client, args)
    from anyq.reporting.figures import render_figures
    from anyq.reporting.html import log_report, write_report
    from anyq.reporting.study_comparison import compare, compare_study
    from anyq.reporting.study_progress import Stages
    from anyq.reporting.study_runs import Artifacts, load_runs_study

    if parent is not None:
        console.print(found_line(client, parent), soft_wrap=True)
    with Artifacts(uri) as artifacts, Stages("report", 4, console) as stage:
        stage("reading runs and test forecasts, paired tests")
        if parent is not None:
            comparison = compare(client, uri, artifacts, parent_run_id=parent.info.run_id, alpha=args.alpha,
                                 baseline=args.baseline)
        else:
            assert anchor is not None
            single = load_runs_study(client, uri, anchor, baseline=args.baseline)
            console.print(runs_found_line(client, single), soft_wrap=True)
            comparison = compare_study(single, artifacts, alpha=args.alpha)
        study = comparison.study
        out = args.out or work_root() / "reports" / re.sub(r"[^\w.-]+", "_", study.name)
        stage("drawing figures")
        figures = render_figures(comparison, artifacts, out)
        stage("writing the page")
        path = write_report(comparison, figures, out)
        where = f"run {study.parent_run_id}" if study.kind == "runs" else "the study's parent run"  # runs: the newest
        stage(f"logging it on {where}" if not args.no_log else "done")
        if not args.no_log:
            log_report(client, study.parent_run_id, out, comparison)
    view = save_view(client, study.parent.info.experiment_id)
    for table in comparison_tables(comparison):
        console.print(table)
    console.print("[bold]Verdicts[/] (seed-mean CRPS against the baseline, interval over seeds and test "
                  "windows, p Holm-adjusted over the variants; n.s. = no detectable difference):")
    for line in comparison.verdicts():
        console.print(f"  - {line}", soft_wrap=True)
    if study.sweep is not None:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(study.sweep.counts().items()))
        shares = ", ".join(f"{k} {v:.2f}" for k, v in study.sweep.importances.items())
        console.print(f"Trials: {len(study.sweep.rows)} ({counts}), every one on the page with its parameters; "
                      + (f"parameter importances: {shares}" if shares else study.sweep.importance_note),
                      soft_wrap=True)
    if study.parent.data.tags.get(CONFIRM_STUDY_TAG):
        console.print(f"Confirmed over seeds: study {study.parent.data.tags[CONFIRM_STUDY_TAG]!r} "
                      f"(make report STUDY={study.parent.data.tags[CONFIRM_STUDY_TAG]})")
    which = "newest run" if study.kind == "runs" else "parent run"
    console.print(f"MLflow store: {uri}  experiment {study.experiment!r}  {which} {study.parent_run_id}")
    console.print(f"MLflow UI (make ui): {args.ui_url}/{view}")
    console.print(f"Report: {path}  ({len(figures)} figures, {time.perf_counter() - started:.1f} s)")
    return path


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = resolve_tracking_uri(args.tracking_uri, work_root() / "mlruns")
    console = wide_console()
    try:
        # a signal stops the report at its next stage and exits 128 + its number (143, 130)
        with stop_on_signals():
            client = open_existing_store(uri)
            if args.view_only:
                view_only(client, args, console)
            else:
                report(client, uri, args, console)
    except (ReportError, WindowMismatchError, StoreNotFoundError) as exc:
        print(f"anyq-report: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
