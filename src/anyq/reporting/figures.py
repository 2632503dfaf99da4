"""The report's figures (matplotlib, Agg backend: no display needed), one function each.

Every figure is drawn at ``FIGSIZE`` inches and saved at ``DPI`` without tight cropping,
so each PNG is exactly ``PIXELS`` (width, height) and a page can lay them out blindly; the
sweep's slice plot alone grows taller past four searched parameters (its size is in its
``FigureFile``).
Curves of a group are its members' curves averaged over seeds (the typical single model);
the fan chart shows the group's seed ensemble, the forecast a user of the group would get.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from anyq.metrics.functional import quantile_at  # noqa: E402
from anyq.reporting.study_comparison import StudyComparison  # noqa: E402
from anyq.reporting.labels import metric_label as objective_label  # noqa: E402
from anyq.reporting.stats import BETTER, WORSE, StoredForecasts  # noqa: E402
from anyq.reporting.study_runs import Artifacts  # noqa: E402
from anyq.reporting.sweep_trials import SweepTrials, best_validation  # noqa: E402
from anyq.reporting.verdict import BASELINE_NOT_TRAINED, NOT_TRAINED, TOO_FEW_SEEDS  # noqa: E402
from anyq.training.config_tree import full_variant  # noqa: E402
from anyq.tracking.trial_runs import TRIAL_NUMBER_TAG  # noqa: E402

FIGSIZE = (8.0, 4.5)
DPI = 100
PIXELS = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
BASELINE_COLOR = "tab:gray"


@dataclass(frozen=True)
class FigureFile:
    name: str  # file stem, e.g. "crps_by_group"
    title: str
    caption: str
    path: Path
    size: tuple[int, int]  # pixels (width, height)


def _figure() -> tuple[Figure, plt.Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _colors(groups: Sequence[str], baseline: str) -> dict[str, str]:
    cycle = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"] if c != "#7f7f7f"]
    others = [g for g in groups if g != baseline]
    return {baseline: BASELINE_COLOR, **{g: cycle[i % len(cycle)] for i, g in enumerate(others)}}


def crps_by_group(comparison: StudyComparison) -> Figure:
    """Test CRPS per group: seeds as dots, seed mean with its CI, seed ensemble as a diamond."""
    fig, ax = _figure()
    groups, baseline = comparison.groups, comparison.baseline
    colors = _colors(groups, baseline)
    x = np.arange(len(groups))
    for i, group in enumerate(groups):
        seeds = comparison.runs.loc[comparison.runs["group"] == group, "test/crps"].to_numpy(float)
        ax.scatter(np.full(seeds.size, i - 0.15), seeds, s=14, color=colors[group], alpha=0.6,
                   label="single seeds" if i == 0 else None)
        mean = comparison.stat(group, "test/crps")
        low, high = comparison.stat(group, "test/crps", "ci_low"), comparison.stat(group, "test/crps", "ci_high")
        err = None if math.isnan(low) else [[mean - low], [high - mean]]
        ax.errorbar(i, mean, yerr=err, fmt="o", color=colors[group], capsize=5, ms=7,
                    label=f"seed mean, {100 * comparison.confidence:g} % CI" if i == 0 else None)
        ax.scatter(i + 0.15, comparison.ensembles.loc[group, "crps"], marker="D", s=36, color=colors[group],
                   edgecolor="black", label="seed ensemble" if i == 0 else None)
    ax.axhline(comparison.stat(baseline, "test/crps"), color=BASELINE_COLOR, ls="--", lw=1,
               label=f"{baseline} (baseline) mean")
    if math.isfinite(comparison.naive_crps):
        ax.axhline(comparison.naive_crps, color="grey", ls=":", lw=1, label="seasonal naive (reference)")
    marks = {BETTER: "(better)", WORSE: "(worse)", TOO_FEW_SEEDS: "(too few seeds)",
             NOT_TRAINED: "(not trained enough)", BASELINE_NOT_TRAINED: "(baseline not trained enough)"}
    labels = [g + ("\n(baseline)" if g == baseline else
                   "\n" + marks.get(comparison.paired.loc[g, "verdict"], "(n.s.)").strip()) for g in groups]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("test CRPS (data units)")
    kind = "Best trials against the baseline" if comparison.study.kind == "sweep" else "CRPS by variant"
    ax.set_title(f"{kind}: test CRPS")
    ax.legend(fontsize=8)
    return fig


def _curves_by_group(comparison: StudyComparison, x_key: str, y_key: str, *, xlabel: str,
                     ylabel: str, title: str, ideal: bool = False, **style: object) -> Figure:
    """One line per variant (the baseline dashed) of a per-level or per-step curve."""
    fig, ax = _figure()
    colors = _colors(comparison.groups, comparison.baseline)
    if ideal:
        ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls=":", label="ideal")
    for group, curves in comparison.curves.items():
        y = curves[y_key]
        x = np.arange(1, y.size + 1) if x_key == "step" else curves[x_key]
        ax.plot(x, y, color=colors[group], label=group,
                ls="--" if group == comparison.baseline else "-", **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def reliability_diagram(comparison: StudyComparison) -> Figure:
    """Observed share of targets below each level's forecast against the level (ideal: diagonal)."""
    fig = _curves_by_group(comparison, "levels", "reliability", xlabel="nominal level q",
                           ylabel="observed share of targets below the q forecast",
                           title="Reliability diagram (test, averaged over seeds)",
                           ideal=True, marker=".", ms=3)
    fig.axes[0].set_xlim(0, 1)
    fig.axes[0].set_ylim(0, 1)
    return fig


def crps_by_horizon(comparison: StudyComparison) -> Figure:
    return _curves_by_group(comparison, "step", "crps_by_horizon", xlabel="horizon step (hours ahead)",
                            ylabel="test CRPS (data units)", title="CRPS by horizon step (averaged over seeds)")


def pinball_by_level(comparison: StudyComparison) -> Figure:
    return _curves_by_group(comparison, "levels", "pinball_by_level", xlabel="quantile level q",
                            ylabel="mean pinball loss (data units)",
                            title="Pinball loss by quantile level (test, averaged over seeds)")


def sampler_importance(probabilities: np.ndarray, title: str) -> Figure:
    """Heatmap epochs x bins of the sampler's bin probabilities, relative to uniform (1 = uniform);
    a single snapshot (one epoch) is drawn as bars over the bins, which a heatmap of one row
    would hide behind a meaningless epoch axis."""
    fig, ax = _figure()
    epochs, bins = probabilities.shape
    relative = probabilities * bins
    if epochs == 1:
        edges = np.linspace(0.0, 1.0, bins + 1)
        ax.bar(edges[:-1], relative[0], width=np.diff(edges), align="edge", color="tab:blue", edgecolor="white")
        ax.axhline(1.0, color="black", lw=0.8, ls=":", label="uniform sampling")
        ax.set_xlim(0, 1)
        ax.set_xlabel("quantile level q (sampler bins)")
        ax.set_ylabel("bin probability × num_bins (1 = uniform)")
        ax.set_title(f"{title} (end of training, one snapshot)")
        ax.legend(fontsize=8)
        return fig
    image = ax.imshow(relative, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                      extent=(0.0, 1.0, 0.5, epochs + 0.5))
    fig.colorbar(image, ax=ax, label="bin probability × num_bins (1 = uniform)")
    ax.set_xlabel("quantile level q (sampler bins)")
    ax.set_ylabel("epoch (end of)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    return fig


def _history(f: StoredForecasts, series: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed values of ``series`` at times [start, stop), stitched from the test targets."""
    mine = f.series_idx == series
    times = (f.origin[mine, None] + np.arange(f.target.shape[1])).reshape(-1)
    values = f.target[mine].reshape(-1)
    times, first = np.unique(times, return_index=True)
    keep = (times >= start) & (times < stop)
    return times[keep], values[first][keep]


def pick_window(f: StoredForecasts) -> int:
    """A fully observed window of the first series, in the middle of the test period."""
    complete = ~np.isnan(f.target).any(axis=1)
    series = int(f.series_idx[complete].min()) if complete.any() else int(f.series_idx.min())
    candidates = np.flatnonzero((f.series_idx == series) & complete)
    if candidates.size == 0:
        candidates = np.flatnonzero(f.series_idx == series)
    candidates = candidates[np.argsort(f.origin[candidates])]
    return int(candidates[candidates.size // 2])


def fan_chart(f: StoredForecasts, history_length: int, label: str, window: Optional[int] = None) -> Figure:
    """Bands 5-95 % and 25-75 %, the median and the truth for one test window, after its history.

    The history is the observed load before the origin as far as the test targets reach
    (test windows overlap, so their targets tile the test period): reports read stored
    artifacts only and never reload the data.
    """
    fig, ax = _figure()
    i = pick_window(f) if window is None else window
    origin, series, horizon = int(f.origin[i]), int(f.series_idx[i]), f.target.shape[1]
    forecast = torch.as_tensor(f.forecast[i], dtype=torch.float64)
    levels = torch.as_tensor(f.levels, dtype=torch.float64)
    q = {p: quantile_at(forecast, levels, p).numpy() for p in (0.05, 0.25, 0.5, 0.75, 0.95)}
    steps = origin + np.arange(horizon)
    hist_t, hist_y = _history(f, series, origin - history_length, origin)
    if hist_t.size:
        ax.plot(hist_t - origin, hist_y, color="black", lw=1, label="history (observed)")
    ax.fill_between(steps - origin, q[0.05], q[0.95], color="tab:blue", alpha=0.2, label="5-95 %")
    ax.fill_between(steps - origin, q[0.25], q[0.75], color="tab:blue", alpha=0.4, label="25-75 %")
    ax.plot(steps - origin, q[0.5], color="tab:blue", lw=1.5, label="median")
    ax.plot(steps - origin, f.target[i], color="tab:red", lw=1, label="truth")
    ax.axvline(-0.5, color="black", lw=0.6, ls=":")
    ax.set_xlabel("hours from the forecast origin (first forecast hour = 0)")
    ax.set_ylabel("load (data units)")
    stamp = f.timestamp(origin)
    when = f"first forecast hour {stamp:%Y-%m-%d %H:%M}" if stamp is not None else f"origin hour {origin}"
    ax.set_title(f"Example forecast: {label}\nseries {f.series_name(series)}, {when}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return fig


def optimisation_history(numbers: np.ndarray, values: np.ndarray, direction: str, objective: str,
                         baseline_value: float, pruned: Optional[dict[int, float]] = None) -> Figure:
    """Each finished trial's objective and the best so far, against the baseline's; pruned trials
    (their best epoch before they were stopped) as crosses, outside the best-so-far line."""
    fig, ax = _figure()
    if pruned:
        ax.scatter(list(pruned), list(pruned.values()), marker="x", color=BASELINE_COLOR, s=22, label="pruned trial")
    order = np.argsort(numbers)
    numbers, values = numbers[order], values[order]
    finite = np.where(np.isfinite(values), values, np.inf if direction == "minimize" else -np.inf)
    best = np.minimum.accumulate(finite) if direction == "minimize" else np.maximum.accumulate(finite)
    ax.scatter(numbers, values, color="tab:blue", s=18, label="trial")
    ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    if math.isfinite(baseline_value):
        ax.axhline(baseline_value, color=BASELINE_COLOR, ls="--", label="baseline adaptive model")
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{objective_label(objective)} (best epoch)")
    ax.set_title(f"Optimisation history ({direction} {objective})")
    ax.legend(fontsize=8)
    return fig


def parameter_importance(importances: dict[str, float], objective: str) -> Figure:
    """Optuna's importance of each searched parameter for the first objective, as bars (they sum to 1)."""
    fig, ax = _figure()
    names = list(importances)[::-1]  # most important on top
    values = [importances[n] for n in names]
    ax.barh(np.arange(len(names)), values, color="tab:blue")
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, max(values, default=0) * 1.15))
    ax.set_xlabel(f"importance for {objective_label(objective)} (share, all parameters sum to 1)")
    ax.set_title("Parameter importances (Optuna, fANOVA)")
    return fig


def _positions(values: list[object], scale: str) -> tuple[np.ndarray, Optional[list[str]]]:
    """Numbers of a range stay numbers; choices (and anything not a number) become evenly
    spaced categories, in their natural order, with their labels."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and scale != "categorical":
        return np.asarray(values, dtype=float), None
    labels = [str(v) for v in sorted(set(values), key=lambda v: (not numeric, v if numeric else str(v)))]
    return np.asarray([labels.index(str(v)) for v in values], dtype=float), labels


def parameter_slices(trials: SweepTrials) -> Figure:
    """One panel per searched parameter: each trial's objective against its value (a slice plot);
    complete trials coloured by trial number, pruned ones as crosses at their best epoch."""
    params = trials.params
    cols = min(4, max(1, len(params)))
    rows = math.ceil(len(params) / cols)
    fig = Figure(figsize=(FIGSIZE[0], max(FIGSIZE[1], 2.6 * rows)), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    objective = trials.objectives[0]
    points = [(r, r.values[0] if r.values else r.intermediate) for r in trials.rows]
    points = [(r, v) for r, v in points if v is not None and math.isfinite(v)]
    numbers = [r.number for r, _ in points] or [0]
    norm = matplotlib.colors.Normalize(vmin=min(numbers), vmax=max(max(numbers), min(numbers) + 1))
    for ax, name in zip(axes.flat, params):
        shown = [(r, v) for r, v in points if name in r.params]
        x, labels = _positions([r.params[name] for r, _ in shown], trials.scale(name))
        done = np.array([r.state == "COMPLETE" for r, _ in shown], dtype=bool)
        y = np.array([v for _, v in shown], dtype=float)
        if done.any():
            ax.scatter(x[done], y[done], c=[r.number for (r, _), d in zip(shown, done) if d], cmap="viridis",
                       norm=norm, s=22, edgecolor="black", linewidth=0.4)
        if (~done).any():
            ax.scatter(x[~done], y[~done], marker="x", color=BASELINE_COLOR, s=22, label="pruned (best epoch)")
            ax.legend(fontsize=7)
        if labels is not None:
            ax.set_xticks(np.arange(len(labels)), labels, fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        elif trials.scale(name) == "log":
            ax.set_xscale("log")
        elif trials.scale(name) == "int":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(name, fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{objective_label(objective)}\n(best epoch)", fontsize=8)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    if any(r.state == "COMPLETE" for r, _ in points):
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes, label="trial number",
                           shrink=0.8)
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Each trial's {objective_label(objective)} against each searched parameter")
    return fig


def headline_group(comparison: StudyComparison) -> str:
    """The group the single-run figures show: the full model, a sweep's best trial, else the first."""
    others = [g for g in comparison.groups if g != comparison.baseline]
    full = full_variant()  # the variant with every switch on, read from conf/model
    if full in others:
        return full
    return others[0] if others else comparison.baseline


def _importance(comparison: StudyComparison, artifacts: Artifacts) -> Optional[tuple[np.ndarray, str]]:
    headline = headline_group(comparison)
    order = [headline, *[g for g in comparison.groups if g != headline]]
    for group in order:
        for run in comparison.study.groups[group]:
            if run.data.params.get("model.sampler.kind", "adaptive") != "adaptive":
                continue
            probabilities = artifacts.importance(run.info.run_id)
            if probabilities is not None and probabilities.ndim == 2:
                return probabilities, f"{group}, seed {run.data.tags.get('seed', '?')} (run {run.info.run_id[:8]})"
    return None


def _save(fig: Figure, out_dir: Path, name: str, title: str, caption: str) -> FigureFile:
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=DPI)
    width, height = fig.get_size_inches() * DPI
    return FigureFile(name, title, caption, path, (int(round(width)), int(round(height))))


def render_figures(comparison: StudyComparison, artifacts: Artifacts, out_dir: Path) -> list[FigureFile]:
    """Draw every figure the study supports into ``out_dir`` as PNG files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [
        _save(crps_by_group(comparison), out_dir, "crps_by_group", "Test CRPS by group",
              "Dots: single seeds; circle and bars: seed mean with its t-interval; diamond: seed ensemble; "
              "dashed line: the baseline's mean; dotted: seasonal naive on the same windows. Verdicts: "
              "seed-mean CRPS against the baseline, over seeds and test windows."),
        _save(reliability_diagram(comparison), out_dir, "reliability", "Reliability diagram",
              "Share of test targets below each level's forecast; a calibrated model lies on the diagonal."),
        _save(crps_by_horizon(comparison), out_dir, "crps_by_horizon", "CRPS by horizon step",
              "How skill decays with lead time."),
        _save(pinball_by_level(comparison), out_dir, "pinball_by_level", "Pinball loss by quantile level",
              "Where in the distribution the error sits."),
    ]
    importance = _importance(comparison, artifacts)
    if importance is not None:
        probabilities, who = importance
        files.append(_save(sampler_importance(probabilities, f"Adaptive sampler importance: {who}"), out_dir,
                           "sampler_importance", "Adaptive sampler importance over training",
                           "Bin probabilities of the adaptive quantile sampler at the end of each epoch, "
                           "relative to uniform sampling."))
    headline = headline_group(comparison)
    first = comparison.study.groups[headline][0]
    history_length = int(first.data.params.get("data.history_length", 168))
    files.append(_save(fan_chart(comparison.ensemble_forecasts[headline], history_length,
                                 f"{headline} seed ensemble"), out_dir, "fan_chart", "Example forecast",
                       "One test window of the first series: quantile bands of the seed ensemble, its median "
                       "and the truth, after the observed history."))
    if comparison.study.kind == "sweep" and comparison.study.trials:
        study = comparison.study
        metric, direction = study.objective
        numbers = np.array([int(r.data.tags[TRIAL_NUMBER_TAG]) for r in study.trials])
        values = np.array([study.trial_values[r.info.run_id] for r in study.trials], dtype=float)
        base = [best_validation(study.client, r, metric, direction) for r in study.groups[study.baseline]]
        files.append(_save(optimisation_history(numbers, values, direction, metric,
                                                float(np.mean(base)) if base else math.nan,
                                                study.pruned_values),
                           out_dir, "optimisation_history", "Optimisation history",
                           "Objective of each finished trial (its best epoch) and the best so far; crosses: "
                           "pruned trials at the epoch they were stopped."))
    trials = comparison.study.sweep
    if trials is not None and trials.importances:
        files.append(_save(parameter_importance(trials.importances, trials.objectives[0]), out_dir,
                           "parameter_importance", "Importance of each searched parameter",
                           "How much of the variation of the first objective over the complete trials each "
                           "searched parameter explains (optuna.importance.get_param_importances, fANOVA)."))
    if trials is not None and trials.params and any(r.values or r.intermediate is not None for r in trials.rows):
        files.append(_save(parameter_slices(trials), out_dir, "parameter_slices", "Objective against each parameter",
                           "Every complete trial's objective (best epoch) against the value it tried, coloured by "
                           "trial number; crosses: pruned trials at their best epoch before they were stopped."))
    return files
