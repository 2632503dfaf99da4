"""Tables of the real-data benchmark: one per data set, and a summary over the panel.

Per data set, every model's CRPS is divided by the best peer's (the lowest CRPS among the
peer rows: NBEATS as shipped, NBEATS sorted, LightGBM) and by seasonal naive's; on
synthetic data also by the oracle's (the true conditional quantiles, the CRPS floor).
The summary takes, per model, the geometric mean of those ratios over the data sets it ran
on (the usual mean of relative scores: a 2x and a 0.5x ratio average to 1x), their worst
case, the range of its 90 % interval coverage, its largest crossing rate and its total
training CPU seconds.

An anyq row is ``<variant>`` for the ``test/`` family and ``<variant>+<family>`` for the
others (``+conformal`` for ``test_conformal/``); a run that names its headline family
(``headline`` = a metric prefix) marks that row ``headline``, and the summary then counts
that row only for the variant.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

NAIVE = "seasonal_naive"


@dataclass
class Row:
    """One model on one data set: its ``scores`` (anyq's scorer keys), training wall and CPU
    seconds, ``kind`` (``reference``, ``peer`` or ``anyq``) and free-form ``notes``."""

    model: str
    scores: dict[str, float]
    train_seconds: float
    train_cpu_seconds: float
    kind: str = "anyq"
    headline: bool = False
    notes: dict[str, object] = field(default_factory=dict)


@dataclass
class DatasetResult:
    """The rows of one data set, its split as text, its window count and the oracle CRPS
    (None on real data)."""

    name: str
    description: str
    split: str
    n_windows: int
    rows: list[Row]
    oracle_crps: Optional[float] = None

    def best_peer(self) -> Optional[Row]:
        peers = [r for r in self.rows if r.kind == "peer" and math.isfinite(r.scores["crps"])]
        return min(peers, key=lambda r: r.scores["crps"]) if peers else None

    def naive(self) -> Optional[Row]:
        return next((r for r in self.rows if r.model == NAIVE), None)


def ratio(a: float, b: Optional[float]) -> float:
    return a / b if b and math.isfinite(b) and b > 0 else math.nan


def geometric_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if not finite or len(finite) != len(values):
        return math.nan
    return math.exp(sum(math.log(v) for v in finite) / len(finite))


def fmt(value: object, spec: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    return spec.format(value)


def _markdown(header: Sequence[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def dataset_table(result: DatasetResult) -> str:
    """Markdown table of one data set (an ``x oracle`` column when the oracle is known)."""
    best, naive = result.best_peer(), result.naive()
    nbeats = next((r for r in result.rows if r.model == "nbeats_mqloss"), None)
    header = ["model", "CRPS", "x best peer", "x naive"]
    header += ["x oracle"] if result.oracle_crps else []
    header += ["cov-0.9", "cov-0.95", "MARFE", "MAPE %", "crossing", "train s", "train CPU s", "CPU x NBEATS"]
    lines = []
    for r in result.rows:
        s = r.scores
        name = r.model + (" (headline)" if r.headline else "") + (" (best peer)" if r is best else "")
        cells = [name, fmt(s["crps"], "{:.4g}"), fmt(ratio(s["crps"], best and best.scores["crps"]), "{:.3f}"),
                 fmt(ratio(s["crps"], naive and naive.scores["crps"]), "{:.3f}")]
        if result.oracle_crps:
            cells.append(fmt(ratio(s["crps"], result.oracle_crps), "{:.3f}"))
        cells += [fmt(s.get("coverage-0.9", math.nan), "{:.3f}"), fmt(s.get("coverage-0.95", math.nan), "{:.3f}"),
                  fmt(s.get("marfe", math.nan), "{:.4f}"), fmt(s.get("mape", math.nan), "{:.2f}"),
                  fmt(s.get("crossing_rate", math.nan), "{:.4f}"), fmt(r.train_seconds, "{:.1f}"),
                  fmt(r.train_cpu_seconds, "{:.1f}"),
                  fmt(ratio(r.train_cpu_seconds, nbeats and nbeats.train_cpu_seconds), "{:.2f}")]
        lines.append(cells)
    return _markdown(header, lines)


def summary_rows(results: Sequence[DatasetResult]) -> list[dict[str, object]]:
    """Per model: data sets, geometric-mean and worst CRPS ratio to the best peer and to
    seasonal naive, coverage-0.9 range, largest crossing rate, total training CPU seconds."""
    headline_variants = {r.notes.get("variant") for res in results for r in res.rows if r.headline}
    order: list[str] = []
    per_model: dict[str, list[tuple[DatasetResult, Row]]] = {}
    for res in results:
        for r in res.rows:
            if r.kind == "anyq" and r.notes.get("variant") in headline_variants and not r.headline:
                continue
            key = f"{r.notes['variant']} (headline)" if r.headline else r.model
            if key not in per_model:
                order.append(key)
                per_model[key] = []
            per_model[key].append((res, r))
    out = []
    for key in order:
        pairs = per_model[key]
        to_peer = [ratio(r.scores["crps"], res.best_peer().scores["crps"] if res.best_peer() else None)
                   for res, r in pairs]
        to_naive = [ratio(r.scores["crps"], res.naive().scores["crps"] if res.naive() else None) for res, r in pairs]
        coverage = [r.scores.get("coverage-0.9", math.nan) for _, r in pairs]
        out.append({
            "model": key, "datasets": [res.name for res, _ in pairs],
            "gmean_x_best_peer": geometric_mean(to_peer), "worst_x_best_peer": max(to_peer, default=math.nan),
            "gmean_x_naive": geometric_mean(to_naive), "worst_x_naive": max(to_naive, default=math.nan),
            "coverage_0.9_min": min(coverage, default=math.nan), "coverage_0.9_max": max(coverage, default=math.nan),
            "crossing_max": max((r.scores.get("crossing_rate", math.nan) for _, r in pairs), default=math.nan),
            "train_cpu_seconds": sum(r.train_cpu_seconds for _, r in pairs),
        })
    return out


def summary_table(results: Sequence[DatasetResult]) -> str:
    lines = []
    for s in summary_rows(results):
        lines.append([str(s["model"]), str(len(s["datasets"])), fmt(s["gmean_x_best_peer"], "{:.3f}"),
                      fmt(s["worst_x_best_peer"], "{:.3f}"), fmt(s["gmean_x_naive"], "{:.3f}"),
                      fmt(s["worst_x_naive"], "{:.3f}"),
                      f"{fmt(s['coverage_0.9_min'], '{:.3f}')}-{fmt(s['coverage_0.9_max'], '{:.3f}')}",
                      fmt(s["crossing_max"], "{:.4f}"), fmt(s["train_cpu_seconds"], "{:.0f}")])
    header = ["model", "sets", "gmean x best peer", "worst x best peer", "gmean x naive", "worst x naive",
              "cov-0.9 range", "max crossing", "train CPU s"]
    return _markdown(header, lines)


def render(results: Sequence[DatasetResult], preamble: str) -> str:
    """The whole report as markdown: the preamble, one section per data set, the summary."""
    parts = [preamble.rstrip(), ""]
    for res in results:
        oracle = f", oracle CRPS {res.oracle_crps:.4g}" if res.oracle_crps else ""
        parts += [f"## {res.name}: {res.description}", "",
                  f"Split {res.split}; {res.n_windows} test windows{oracle}.", "", dataset_table(res), ""]
    parts += ["## Summary over the panel", "", summary_table(results), ""]
    return "\n".join(parts)


def write(out_dir: Path, stamp: str, results: Sequence[DatasetResult], preamble: str,
          args: dict[str, object]) -> Path:
    """``<stamp>.md`` and ``<stamp>.json`` under ``out_dir``; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{stamp}.md"
    md.write_text(render(results, preamble))
    payload = {
        "args": args,
        "datasets": [{"name": res.name, "description": res.description, "split": res.split,
                      "n_windows": res.n_windows, "oracle_crps": res.oracle_crps,
                      "best_peer": (res.best_peer() or Row("", {}, 0, 0)).model or None,
                      "rows": [{"model": r.model, "kind": r.kind, "headline": r.headline, **r.scores,
                                "train_seconds": r.train_seconds, "train_cpu_seconds": r.train_cpu_seconds,
                                **r.notes} for r in res.rows]} for res in results],
        "summary": summary_rows(results),
    }
    (out_dir / f"{stamp}.json").write_text(json.dumps(payload, indent=1, default=str))
    return md
