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
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from anyq.reporting.figures import FigureFile
from anyq.reporting.labels import DELTA_CRPS, DELTA_CRPS_PCT, metric_label
from anyq.reporting.numbers import significant, two_figures
from anyq.reporting.study_comparison import StudyComparison
from anyq.reporting.study_runs import Study
from anyq.reporting.sweep_trials import SweepTrials, recipe_of, space_keys
from anyq.reporting.verdict import MIN_SEEDS
from anyq.tracking.readiness import (
    COVERAGE_BOUNDS,
    MAX_NAIVE_RATIO,
    MAX_ORACLE_RATIO,
    TRAINED_ENOUGH_TAG,
    readiness_tags,
    record_study_readiness,
)
from anyq.tracking.recipe_tags import RECIPE_ARTIFACT, RECIPE_HASH_TAG, RECIPE_TAG
from anyq.tracking.study_parent import (
    CONFIRM_OF_TAG,
    CONFIRM_RUN_TAG,
    CONFIRM_STUDY_TAG,
    CONFIRM_TRIAL_TAG,
    CONFIRM_VERDICT_TAG,
    STUDY_KIND_TAG,
)
from anyq.tracking.view import DELTA_TAG, VERDICT_TAG, delta_text

REPORT_DIR = "report"  # artifact folder on the study's parent run
SWEEP_FIGURES = ("optimisation_history", "parameter_importance", "parameter_slices")  # shown with the trials
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1240px; color: #222; }
.scroll { max-width: 100%; overflow-x: auto; margin: 0.5em 0 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; overflow-wrap: break-word; }
td.id { word-break: break-all; font-family: ui-monospace, monospace; font-size: 0.95em; min-width: 8ch; }
th { background: #f2f2f2; vertical-align: bottom; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
td.text, th.text { text-align: left; }
img { max-width: 100%; height: auto; }
figure { margin: 1em 0 2em; } figcaption { font-size: 0.85em; color: #555; }
.better { color: #1a7f37; font-weight: 600; } .worse { color: #b42318; font-weight: 600; }
.untrained { background: #fff4e5; border-left: 4px solid #b54708; padding: 0.4em 0.8em; }
code { font-size: 0.9em; overflow-wrap: anywhere; }
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
            f"<code>{html.escape(tags.get(CONFIRM_RUN_TAG, ''))}</code>): the confirmed trial retrained with "
            "seeds (confirm.seeds) against the baseline with the same seeds and budget.</p>"]


def recipe_sentence(tags: dict[str, str], parent: bool = True) -> str:
    """The recipe the study trained under, from its parent run's tags (``parent``; else a
    single run's, whose settings are its ``config.yaml``); empty when not recorded."""
    if RECIPE_TAG not in tags:
        return ""
    where = f"the parent run's <code>{RECIPE_ARTIFACT}</code>" if parent else "each run's <code>config.yaml</code>"
    return (f" Recipe: <code>{html.escape(tags[RECIPE_TAG])}</code>, hash "
            f"<code>{html.escape(tags.get(RECIPE_HASH_TAG, '?'))}</code> (settings: {where}).")


def _kind_label(kind: str, tags: dict[str, str]) -> str:
    if kind == "sweep":
        return "Sweep study"
    if kind == "runs":
        return "Runs trained outside a study (single runs and their baselines)"
    if tags.get(STUDY_KIND_TAG) == "confirm":
        return f"Confirmation of sweep {html.escape(tags.get('confirm_of', '?'))} over seeds"
    return "Grid study (main job or ablation)"


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else significant(value, digits)
    return str(value)


def _p_value(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3g}"


def mean_ci(mean: float, half: float, fmt: str | int = 4, sep: str = " ± ") -> str:
    """``mean ± half`` (just the mean for a single seed, "–" for nothing); ``fmt``: a format
    string for the mean, or its significant figures (:func:`significant`)."""
    if math.isnan(mean):
        return "–"
    shown = significant(mean, fmt) if isinstance(fmt, int) else fmt.format(mean)
    return shown if math.isnan(half) else f"{shown}{sep}{two_figures(half)}"


def _pm(table: pd.DataFrame, metric: str, fmt: str | int = 4) -> list[str]:
    """``mean ± half-width`` per row, kept on one line (no-break spaces)."""
    return [mean_ci(m, h, fmt, sep="\u00a0±\u00a0") for m, h in zip(table[metric], table[f"{metric} ±"])]


def _signed(value: float, fmt: str | int = 4) -> str:
    """With its sign; ``fmt`` as in :func:`mean_ci`."""
    if math.isnan(value):
        return "–"
    return ("+" if value >= 0 else "") + significant(value, fmt) if isinstance(fmt, int) else fmt.format(value)


VERDICT_WORDS = {"baseline": "reference (baseline)", "reference": "reference (seasonal naive)"}


def comparison_frame(comparison: StudyComparison) -> pd.DataFrame:
    """The headline table as display strings, human headers with units: seed mean ± CI
    half-width, the difference against the baseline and the verdict."""
    table = comparison.table()
    level = f"{100 * comparison.confidence:g} %"
    out = pd.DataFrame(index=table.index)
    out["seeds"] = table["seeds"]
    out["headline CRPS (data units)"] = _pm(table, "headline/crps")
    out["test CRPS (data units)"] = _pm(table, "test/crps")
    out["seed-ensemble CRPS (data units)"] = table["ensemble/crps"].map(_fmt)
    out[DELTA_CRPS] = table["delta/crps"].map(_signed)
    out[f"{DELTA_CRPS_PCT} ({level} interval)"] = [
        "–" if math.isnan(d) else f"{d:+.2f}" + ("" if math.isnan(lo) else f" ({lo:+.2f} .. {hi:+.2f})")
        for d, lo, hi in zip(table["delta/crps %"], table["ci_low %"], table["ci_high %"])]
    out["p (Holm-adjusted)"] = table["p_value"].map(_p_value)
    out["verdict"] = [VERDICT_WORDS.get(str(v), str(v)) for v in table["verdict"]]
    out["trained enough to judge"] = ["yes" if ok else "NO" for ok in table["trained_enough"]]
    out["headline CRPS / oracle CRPS"] = _pm(table, "headline/oracle_ratio", "{:.3f}")
    out["test CRPS / seasonal naive CRPS"] = _pm(table, "test/naive_ratio", "{:.3f}")
    return out


def details_frame(comparison: StudyComparison) -> pd.DataFrame:
    """Calibration, point accuracy and cost, seed mean ± CI half-width, headers with units."""
    table = comparison.table()
    out = pd.DataFrame(index=table.index)
    out["headline coverage of 90 % interval"] = _pm(table, "headline/coverage-0.9", "{:.3f}")
    out["headline coverage of 95 % interval"] = _pm(table, "headline/coverage-0.95", "{:.3f}")
    out["test coverage of 90 % interval"] = _pm(table, "test/coverage-0.9", "{:.3f}")
    out["test coverage of 95 % interval"] = _pm(table, "test/coverage-0.95", "{:.3f}")
    out["normalised CRPS (%)"] = _pm(table, "test/crps_norm", 3)
    out["MARFE (calibration error)"] = _pm(table, "test/marfe", 3)
    out["MAPE of median (%)"] = _pm(table, "test/mape", 3)
    out["test CRPS / oracle CRPS"] = _pm(table, "test/oracle_ratio", "{:.3f}")
    out["training time (s)"] = _pm(table, "train_seconds", 3)
    return out


def ensembles_frame(comparison: StudyComparison) -> pd.DataFrame:
    """The seed ensembles' scores, rounded, headers with units."""
    e = comparison.ensembles
    out = pd.DataFrame(index=e.index)
    out["members"] = e["members"].map(lambda v: f"{v:.0f}")
    for key, header, digits in (("crps", "CRPS (data units)", 4), ("crps_norm", "normalised CRPS (%)", 3),
                                ("coverage-0.9", "coverage of 90 % interval", 3),
                                ("coverage-0.95", "coverage of 95 % interval", 3),
                                ("marfe", "MARFE (calibration error)", 3), ("mape", "MAPE of median (%)", 3),
                                ("oracle_ratio", "CRPS / oracle CRPS", 4)):
        if key in e:
            out[header] = e[key].map(lambda v, d=digits: _fmt(float(v), d))
    return out


def paired_frame(comparison: StudyComparison) -> pd.DataFrame:
    """The verdict's test per group, rounded, headers with units (differences in % of the baseline)."""
    p = comparison.paired
    level = f"{100 * comparison.confidence:g} %"
    out = pd.DataFrame(index=p.index)
    if not len(p):
        return out
    out[f"{DELTA_CRPS_PCT} ({level} interval)"] = [
        f"{100 * d:+.2f} ({100 * lo:+.2f} .. {100 * hi:+.2f})" if math.isfinite(lo) else _signed(100 * d, "{:+.2f}")
        for d, lo, hi in zip(p["relative_difference"], p["ci_low"], p["ci_high"])]
    out[DELTA_CRPS] = p["mean_difference"].map(_signed)
    out["seed-mean CRPS (data units)"] = p["candidate_crps"].map(_fmt)
    out["baseline seed-mean CRPS (data units)"] = p["reference_crps"].map(_fmt)
    out["p (raw)"] = p["p_value"].map(lambda v: _p_value(float(v)))
    out["p (Holm-adjusted)"] = p["p_adjusted"].map(lambda v: _p_value(float(v)))
    out["verdict"] = p["verdict"]
    out["why"] = p["reason"].map(lambda v: "" if v is None or v != v else str(v))
    out["seeds (group / baseline)"] = [f"{c} / {r}" + (" paired" if paired else "")
                                       for c, r, paired in zip(p["candidate_seeds"], p["reference_seeds"],
                                                               p["paired_seeds"])]
    out["test origins"] = p["n_origins"]
    out["SE from seeds / from windows (% points)"] = [  # one seed a side: no spread over seeds to estimate
        f"{'–' if max(c, r) < 2 else significant(100 * a, 3)} / {significant(100 * b, 3)}"
        for a, b, c, r in zip(p["se_seeds"], p["se_windows"], p["candidate_seeds"], p["reference_seeds"])]
    out["each seed vs the same seed's baseline"] = p["per_seed"]
    return out


def runs_frame(comparison: StudyComparison) -> pd.DataFrame:
    """One row per run: its group, seed and scores, rounded, headers with units."""
    r = comparison.runs.set_index("group")
    out = pd.DataFrame(index=r.index)
    out["seed"] = r["seed"]
    out["variant"] = r["variant"]
    out["run id"] = r["run_id"]
    out["headline family"] = r["headline"]
    for key, header, digits in (("headline/crps", "headline CRPS (data units)", 4),
                                ("test/crps", "test CRPS (data units)", 4),
                                ("test/coverage-0.9", "test coverage of 90 % interval", 3),
                                ("test/oracle_ratio", "test CRPS / oracle CRPS", 4),  # 1.003, not 1.00
                                ("test/naive_ratio", "test CRPS / seasonal naive CRPS", 4),
                                ("train_seconds", "training time (s)", 3)):
        out[header] = r[key].map(lambda v, d=digits: _fmt(float(v), d))
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


def _table(frame: pd.DataFrame, index_name: Optional[str] = None) -> str:
    """The frame as an HTML table inside a box that scrolls sideways if the table is ever wider
    than the page (cells wrap first)."""
    frame = frame.reset_index(names=index_name or frame.index.name or "group")
    table = frame.to_html(classes="table", border=0, index=False, float_format=lambda v: _fmt(v), na_rep="–",
                          escape=True)
    # run ids may break anywhere; dotted setting names after their dots
    table = re.sub(r"<td>([0-9a-f]{32})</td>", r'<td class="id">\1</td>', table)
    table = re.sub(r"<th>([^<]*)</th>", lambda m: f"<th>{m.group(1).replace('.', '.<wbr>')}</th>", table)
    return f'<div class="scroll">{table}</div>'


def _image(figure: FigureFile) -> str:
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    width, height = figure.size
    return (f'<figure id="{html.escape(figure.name)}"><h3>{html.escape(figure.title)}</h3>'
            f'<img alt="{html.escape(figure.title)}" width="{width}" height="{height}" '
            f'src="data:image/png;base64,{data}"/><figcaption>{html.escape(figure.caption)}</figcaption></figure>')


def _param_cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def trials_frame(trials: SweepTrials) -> pd.DataFrame:
    """Every trial of a sweep: state, every searched parameter, objective(s), test scores, run."""
    rows = []
    for t in trials.rows:
        row: dict[str, object] = {"trial": t.number, "state": t.state}
        for name in trials.params:
            row[name] = _param_cell(t.params.get(name))
        for i, objective in enumerate(trials.objectives):
            header = f"{metric_label(objective)}, best epoch ({trials.directions[i]})"
            if t.values is not None and i < len(t.values):
                row[header] = _fmt(float(t.values[i]))
            elif i == 0 and t.intermediate is not None:
                row[header] = f"{_fmt(float(t.intermediate))} (when pruned)"
            else:
                row[header] = "–"
        metrics = t.run.data.metrics if t.run is not None else {}
        row["test CRPS (data units)"] = _fmt(metrics.get("test/crps", math.nan))
        row[DELTA_CRPS] = _signed(metrics.get("delta/crps_vs_baseline", math.nan))
        if any(recipe_of(r.run.data.tags) for r in trials.rows if r.run is not None):
            row["recipe"] = (recipe_of(t.run.data.tags) if t.run is not None else None) or "–"
        row["run id"] = t.run.info.run_id if t.run is not None else "–"
        rows.append(row)
    return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()


def trials_section(study: Study, figures: Sequence[FigureFile]) -> list[str]:
    """A sweep's search: every trial, the importances (or why none) and their figures."""
    trials = study.sweep
    if trials is None:
        return []
    counts = ", ".join(f"{n} {state}" for state, n in sorted(trials.counts().items()))
    compared = len(study.groups) - 1
    space = ", ".join(f"<code>{html.escape(p)}</code>" for p in trials.params) or "none recorded"
    out = ["<h2>Trials: what was searched</h2>",
           f"<p>{len(trials.rows)} trials ({html.escape(counts) or 'none'}), read from "
           f"{html.escape(trials.source)}. Searched parameters: {space}. The comparison below tests the "
           f"{compared} best complete trial(s) by the objective on the test split against the baseline; "
           "this table lists every trial.</p>",
           _table(trials_frame(trials), "trial")]
    out.append("<h3>Parameter importances</h3>")
    if trials.importances:
        shares = pd.DataFrame({"importance (share of the objective's variation)":
                               [f"{v:.3f}" for v in trials.importances.values()]},
                              index=pd.Index(list(trials.importances), name="parameter"))
        out.append(_table(shares, "parameter"))
    else:
        out.append(f"<p>{html.escape(trials.importance_note)}</p>")
    out += [_image(f) for f in figures if f.name in SWEEP_FIGURES]
    return out


def confirmed_trial_section(study: Study) -> list[str]:
    """A confirm study: which sweep trial it retrains, with the settings that trial searched."""
    tags = study.parent.data.tags
    if tags.get(STUDY_KIND_TAG) != "confirm":
        return []
    sweep, number = tags.get(CONFIRM_OF_TAG, "?"), tags.get(CONFIRM_TRIAL_TAG, "?")
    settings: dict[str, str] = {}
    trial_run = None
    try:
        trial_run = study.client.get_run(tags["confirm_trial_run_id"]) if tags.get("confirm_trial_run_id") else None
        sweep_parent = study.client.get_run(tags["confirm_of_run_id"]) if tags.get("confirm_of_run_id") else None
    except MlflowException:
        sweep_parent = None
    if trial_run is not None and sweep_parent is not None:
        keys = space_keys(sweep_parent.data.tags.get("search_space", ""))
        settings = {k: trial_run.data.params[k] for k in keys if k in trial_run.data.params}
    recipe = recipe_of(tags) or (recipe_of(trial_run.data.tags) if trial_run is not None else None)
    link = f"../{report_folder(sweep)}/index.html"
    out = ["<h2>Confirmed trial</h2>",
           f'<p>Trial <b>{html.escape(number)}</b> of sweep <a href="{html.escape(link)}">{html.escape(sweep)}</a>'
           + (f" (run <code>{html.escape(trial_run.info.run_id)}</code>)" if trial_run is not None else "")
           + ", retrained over seeds (confirm.seeds) against the baseline with the same seeds and budget. "
           + (f"Recipe: <b>{html.escape(recipe)}</b>." if recipe else "No recipe tag on these runs.") + "</p>"]
    if settings:
        frame = pd.DataFrame({"value": list(settings.values())}, index=pd.Index(list(settings), name="setting"))
        out += ["<p>Its searched settings:</p>", _table(frame, "setting")]
    return out


def render_html(comparison: StudyComparison, figures: Sequence[FigureFile]) -> str:
    study = comparison.study
    verdicts = "".join(
        f'<li class="{html.escape(pair["verdict"].split()[0])}">{html.escape(line)}</li>'
        for line, (_, pair) in zip(comparison.verdicts(), comparison.paired.iterrows()))
    naive = comparison.naive_crps
    naive_line = (f"Seasonal naive (the value a week earlier, scaled by its training errors' quantiles) scores "
                  f"CRPS {significant(naive)} on the same test windows: the reference row of the comparison."
                  if math.isfinite(naive) else
                  "Seasonal naive: not scored by these runs (trained before it was; retrain to see it).")
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = (f"parent run <code>{study.parent_run_id}</code>" if study.kind != "runs" else
             f"newest run <code>{study.parent_run_id}</code> (the page is also logged on it)")
    sections = [
        f"<h1>{'Experiment' if study.kind == 'runs' else 'Study'} {html.escape(study.name)}</h1>",
        "<p>"
        f"{_kind_label(study.kind, study.parent.data.tags)} in MLflow experiment "
        f"<code>{html.escape(study.experiment)}</code>, {where}, "
        f"store <code>{html.escape(study.tracking_uri)}</code>. Generated {generated} from the runs' logged "
        f"metrics and stored test forecasts (nothing retrained). Baseline: "
        f"<code>{html.escape(comparison.baseline)}</code>.{recipe_sentence(study.parent.data.tags, study.kind != 'runs')}</p>",
        *confirmed_trial_section(study),
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
        f"{100 * comparison.confidence:g} % Student-t over seeds. Negative differences mean lower CRPS than "
        "the baseline (better).</p>",
        *trials_section(study, figures),
        "<h2>Comparison (seed mean ± CI half-width)</h2>",
        f"<p>Headline metric family: <code>{html.escape(comparison.headline)}</code> (the forecast the runs "
        "serve, each run's <code>headline</code> tag): the headline columns. Seed ensembles and "
        "paired tests compare the stored <code>test/</code> forecasts. CRPS is in the data's units "
        "(MW for MHLV); coverage is the share of targets inside the interval (ideal: its nominal level).</p>",
        _table(comparison_frame(comparison)),
        "<h3>Calibration, point accuracy and cost (seed mean ± CI half-width)</h3>",
        _table(details_frame(comparison)),
        "<h2>Seed ensembles (scored on the test windows)</h2>",
        _table(ensembles_frame(comparison)),
        "<h2>Paired comparisons against the baseline</h2>",
        _table(paired_frame(comparison)),
        "<h2>Figures</h2>",
        *[_image(f) for f in figures if f.name not in SWEEP_FIGURES],
        "<h2>Runs</h2>",
        _table(runs_frame(comparison)),
    ]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>anyq report: '
            f"{html.escape(study.name)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(x for x in sections if x) + "</body></html>")


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
    verdicts = comparison.table()["verdict"]
    for group, run in comparison.study.runs():
        tags = {key: value for key, value in readiness_tags(run.data.metrics).items()
                if TRAINED_ENOUGH_TAG not in run.data.tags}
        tags[VERDICT_TAG] = str(verdicts.get(group, ""))  # the group's verdict, a column of MLflow's saved view
        shown = delta_text(run.data.metrics)
        if shown:
            tags[DELTA_TAG] = shown
        for key, value in tags.items():
            if value and run.data.tags.get(key) != value:
                client.set_tag(run.info.run_id, key, value)
    if comparison.study.kind != "runs":  # a single run keeps its own trained_enough tags
        record_study_readiness(client, parent_run_id, comparison.untrained)
