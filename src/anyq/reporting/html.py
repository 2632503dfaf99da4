"""One self-contained HTML page per study: figures inlined as base64 PNG, tables, verdicts.

The page needs no server and no other file (the PNGs beside it are for reuse), so it can
be mailed or opened from the parent run's artifacts in the MLflow UI (under ``report/``).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import re
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
from mlflow.tracking import MlflowClient

from anyq.reporting.compare import METRICS, StudyComparison
from anyq.reporting.figures import FigureFile
from anyq.reporting.verdict import MIN_SEEDS
from anyq.tracking.readiness import (
    COVERAGE_BOUNDS,
    MAX_NAIVE_RATIO,
    MAX_ORACLE_RATIO,
    TRAINED_ENOUGH_TAG,
    readiness_tags,
    record_study_readiness,
)
from anyq.tracking.recipe import RECIPE_ARTIFACT, RECIPE_HASH_TAG, RECIPE_TAG
from anyq.tracking.study import CONFIRM_RUN_TAG, CONFIRM_STUDY_TAG, CONFIRM_VERDICT_TAG, STUDY_KIND_TAG

REPORT_DIR = "report"  # artifact folder on the study's parent run
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0 2em; } figcaption { font-size: 0.85em; color: #555; }
.better { color: #1a7f37; font-weight: 600; } .worse { color: #b42318; font-weight: 600; }
.untrained { background: #fff4e5; border-left: 4px solid #b54708; padding: 0.4em 0.8em; }
code { font-size: 0.9em; }
"""


def report_folder(study_name: str) -> str:
    """The folder name of a study's report under ``reports/``."""
    return re.sub(r"[^\w.-]+", "_", study_name)


def confirm_section(tags: dict[str, str]) -> list[str]:
    """A sweep confirmed over seeds (``make confirm``): its verdict and a link to its report."""
    name = tags.get(CONFIRM_STUDY_TAG)
    if not name:
        return []
    link = f"../{report_folder(name)}/index.html"
    return ["<h2>Confirmed over seeds</h2>",
            f"<p>{html.escape(tags.get(CONFIRM_VERDICT_TAG, ''))}</p>",
            f'<p>Study <a href="{html.escape(link)}">{html.escape(name)}</a> (parent run '
            f"<code>{html.escape(tags.get(CONFIRM_RUN_TAG, ''))}</code>): the best trial retrained with "
            "several seeds at the full budget against the baseline with the same seeds.</p>"]


def recipe_sentence(tags: dict[str, str]) -> str:
    """The recipe the study trained under, from its parent run's tags; empty when not recorded."""
    if RECIPE_TAG not in tags:
        return ""
    return (f" Recipe: <code>{html.escape(tags[RECIPE_TAG])}</code>, hash "
            f"<code>{html.escape(tags.get(RECIPE_HASH_TAG, '?'))}</code> (settings: the parent run's "
            f"<code>{RECIPE_ARTIFACT}</code>).")


def _kind_label(kind: str, tags: dict[str, str]) -> str:
    if kind == "sweep":
        return "Sweep study"
    if tags.get(STUDY_KIND_TAG) == "confirm":
        return f"Confirmation of sweep {html.escape(tags.get('confirm_of', '?'))} over seeds"
    return "Grid study (main job or ablation)"


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def two_figures(x: float) -> str:
    """Two significant figures without exponent notation: a CI half-width beside its mean."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{max(0, 1 - math.floor(math.log10(abs(x))))}f}"


def mean_ci(mean: float, half: float, fmt: str = "{:.4g}", sep: str = " ± ") -> str:
    """``mean ± half`` (just the mean for a single seed, "–" for nothing)."""
    if math.isnan(mean):
        return "–"
    return fmt.format(mean) if math.isnan(half) else f"{fmt.format(mean)}{sep}{two_figures(half)}"


def comparison_frame(comparison: StudyComparison) -> pd.DataFrame:
    """The headline table as display strings: seed mean ± CI half-width per metric."""
    table = comparison.table()
    out = pd.DataFrame(index=table.index)
    out["seeds"] = table["seeds"]
    for metric in METRICS:
        out[metric] = [mean_ci(m, h) for m, h in zip(table[metric], table[f"{metric} ±"])]
    out["ensemble CRPS"] = table["ensemble/crps"].map(_fmt)
    out["Δ CRPS vs baseline"] = table["delta/crps"].map(lambda v: "–" if math.isnan(v) else f"{v:+.4g}")
    out[f"Δ CRPS % ({100 * comparison.confidence:g} % interval)"] = [
        "–" if math.isnan(d) else f"{d:+.2f}" + ("" if math.isnan(lo) else f" ({lo:+.2f} .. {hi:+.2f})")
        for d, lo, hi in zip(table["delta/crps %"], table["ci_low %"], table["ci_high %"])]
    out["p (Holm)"] = table["p_value"].map(lambda v: _fmt(v, 3))
    out["verdict"] = table["verdict"]
    out["trained enough"] = ["yes" if ok else "NO" for ok in table["trained_enough"]]
    return out


def untrained_section(comparison: StudyComparison) -> list[str]:
    """The flag for models not trained enough to judge, with the reason per group and seed."""
    if not comparison.untrained:
        return []
    low, high = COVERAGE_BOUNDS
    items = "".join(f"<li><b>{html.escape(g)}</b>: {html.escape(why)}</li>" for g, why in comparison.untrained.items())
    whom = ("The baseline is among them, so no group gets a verdict."
            if comparison.baseline in comparison.untrained else "They get no verdict.")
    return ['<div class="untrained"><h2>Not trained enough to judge</h2>',
            f"<p>A run is not trained enough when its coverage-0.9 is outside [{low:g}, {high:g}], its CRPS is "
            f"above {MAX_ORACLE_RATIO:g} × the oracle's, or above seasonal naive's on the same windows "
            f"(ratio above {MAX_NAIVE_RATIO:g}). {whom} Train longer (<code>trainer.max_steps</code>).</p>",
            f"<ul>{items}</ul></div>"]


def _table(frame: pd.DataFrame) -> str:
    frame = frame.reset_index(names=frame.index.name or "group")
    return frame.to_html(classes="table", border=0, index=False, float_format=lambda v: _fmt(v), na_rep="–",
                         escape=True)


def _image(figure: FigureFile) -> str:
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    width, height = figure.size
    return (f'<figure id="{html.escape(figure.name)}"><h3>{html.escape(figure.title)}</h3>'
            f'<img alt="{html.escape(figure.title)}" width="{width}" height="{height}" '
            f'src="data:image/png;base64,{data}"/><figcaption>{html.escape(figure.caption)}</figcaption></figure>')


def render_html(comparison: StudyComparison, figures: Sequence[FigureFile]) -> str:
    study = comparison.study
    verdicts = "".join(
        f'<li class="{html.escape(pair["verdict"].split()[0])}">{html.escape(line)}</li>'
        for line, (_, pair) in zip(comparison.verdicts(), comparison.paired.iterrows()))
    naive = comparison.naive_crps
    naive_line = (f"Seasonal naive (the value a week earlier, scaled by its training errors' quantiles) scores "
                  f"CRPS {naive:.4g} on the same test windows: the reference row of the comparison."
                  if math.isfinite(naive) else
                  "Seasonal naive: not scored by these runs (trained before it was; retrain to see it).")
    runs = comparison.runs[["group", "seed", "variant", "run_id", "headline", *METRICS]].set_index("group")
    paired = comparison.paired.drop(columns=["alpha"], errors="ignore")
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f"<h1>Study {html.escape(study.name)}</h1>",
        "<p>"
        f"{_kind_label(study.kind, study.parent.data.tags)} in MLflow experiment "
        f"<code>{html.escape(study.experiment)}</code>, parent run <code>{study.parent_run_id}</code>, "
        f"store <code>{html.escape(study.tracking_uri)}</code>. Generated {generated} from the runs' logged "
        f"metrics and stored test forecasts (nothing retrained). Baseline: "
        f"<code>{html.escape(comparison.baseline)}</code>.{recipe_sentence(study.parent.data.tags)}</p>",
        *confirm_section(study.parent.data.tags),
        *untrained_section(comparison),
        "<h2>Verdicts</h2>",
        f"<ul>{verdicts or '<li>No group besides the baseline.</li>'}</ul>",
        f"<p>{html.escape(naive_line)}</p>",
        "<p>Verdict: the relative difference of the seed-mean test CRPS against the baseline, with an interval "
        "that holds both the spread over seeds (training randomness) and the noise of the test windows "
        "(per-origin differences, HAC/Newey-West variance), Student t with seeds − 1 degrees of freedom; "
        f"p-values Holm-adjusted over the study's variants, alpha {comparison.alpha:g}. Fewer than {MIN_SEEDS} "
        "seeds: an interval, no p-value. Per seed: each seed against the baseline of the same seed "
        "(Diebold-Mariano on its test windows). Metric intervals: "
        f"{100 * comparison.confidence:g} % Student-t over seeds.</p>",
        "<h2>Comparison (seed mean ± CI half-width)</h2>",
        f"<p>Headline metric family: <code>{html.escape(comparison.headline)}</code> (the forecast the runs "
        "serve, each run's <code>headline</code> tag): the <code>headline/*</code> columns. Seed ensembles and "
        "paired tests compare the stored <code>test/</code> forecasts.</p>",
        _table(comparison_frame(comparison)),
        "<h2>Seed ensembles (scored on the test windows)</h2>",
        _table(comparison.ensembles),
        "<h2>Paired comparisons against the baseline</h2>",
        _table(paired),
        "<h2>Figures</h2>",
        *[_image(f) for f in figures],
        "<h2>Runs</h2>",
        _table(runs),
    ]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>anyq report: '
            f"{html.escape(study.name)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(sections) + "</body></html>")


def write_report(comparison: StudyComparison, figures: Sequence[FigureFile], out_dir: Path) -> Path:
    """``out_dir/index.html`` (the PNGs of ``figures`` are expected in ``out_dir`` already)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(render_html(comparison, figures), encoding="utf-8")
    comparison.table().to_csv(out_dir / "comparison.csv")
    return path


def log_report(client: MlflowClient, parent_run_id: str, out_dir: Path,
               comparison: Optional[StudyComparison] = None) -> None:
    """Attach the page, figures and table to the study's parent run under ``report/``; with the
    ``comparison``, record on the parent whether every group is trained enough to judge
    (``trained_enough``, and ``trained_enough_reason`` naming the groups that are not), and tag
    runs that predate the rule (``anyq.tracking.readiness``)."""
    client.log_artifacts(parent_run_id, str(out_dir), REPORT_DIR)
    if comparison is None:
        return
    for _, run in comparison.study.runs():
        if TRAINED_ENOUGH_TAG not in run.data.tags:
            for key, value in readiness_tags(run.data.metrics).items():
                client.set_tag(run.info.run_id, key, value)
    record_study_readiness(client, parent_run_id, comparison.untrained)
