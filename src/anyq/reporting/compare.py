"""Compare the groups of a study from what MLflow holds: seeds, seed ensembles, paired tests.

Three views of every group (a variant of an ablation, or one of a sweep's best trials):

* ``summary``: mean and 95 % t-interval over seeds of each run's logged test metrics
  (``METRICS``): how good a single model of the group is, and how much seeds matter.
* ``ensembles``: the seed ensemble (mean of the members' stored quantile forecasts,
  docs/design.md §3) scored with ``anyq.metrics.scorer.score`` on the test windows.
* ``paired``: the group against the baseline adaptive model on the same test windows.
  Seeds are pooled by comparing the two *seed ensembles* (Diebold-Mariano on the
  per-window CRPS, ``anyq.reporting.stats``): the ensemble averages the seed noise out of
  each window's forecast, so the test asks whether the variant is better as a model
  family rather than whether one lucky seed is, and its mean difference is exactly the
  difference of the two ensemble CRPS in ``ensembles``. Each seed is also paired with
  the baseline of the same seed, and the per-seed verdicts are counted in ``per_seed``
  ("2 better, 0 worse, 1 no difference"), so a verdict carried by one seed shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from anyq.metrics.ensemble import ensemble_mean
from anyq.metrics.families import headline_metric, headline_of
from anyq.metrics.functional import crps_by_horizon, pinball_by_level, reliability
from anyq.metrics.scorer import score
from anyq.reporting.stats import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    PairedTest,
    StoredForecasts,
    align,
    paired_crps_test,
    seed_summary,
)
from anyq.reporting.study import Artifacts, Study, find_parent, load_study
from anyq.tracking.baseline import BASELINE_VARIANT

#: Each run's own headline family (its ``headline`` tag, :mod:`anyq.metrics.families`) read as
#: ``headline/<name>``: the scores of the forecast the run serves.
HEADLINE_METRICS = ("headline/crps", "headline/coverage-0.9", "headline/coverage-0.95", "headline/oracle_ratio")
METRICS = (
    *HEADLINE_METRICS,
    "test/crps", "test/crps_norm", "test/coverage-0.9", "test/coverage-0.95", "test/marfe", "test/mape",
    "test/oracle_ratio", "train_seconds",
)
ENSEMBLE_SCORES = ("crps", "crps_norm", "coverage-0.9", "coverage-0.95", "marfe", "mape", "oracle_ratio")


@dataclass
class StudyComparison:
    """Everything a report shows, as plain tables; ``group`` is the variant or ``trial N``."""

    study: Study
    alpha: float
    confidence: float
    runs: pd.DataFrame  # one row per run: group, run_id, seed, METRICS
    summary: pd.DataFrame  # long: group, metric, n, mean, std, ci_low, ci_high
    ensembles: pd.DataFrame  # index group: members, ENSEMBLE_SCORES
    paired: pd.DataFrame  # index group (baseline excluded): PairedTest fields + per_seed
    members: dict[str, list[StoredForecasts]] = field(repr=False)  # aligned to the baseline's windows
    ensemble_forecasts: dict[str, StoredForecasts] = field(repr=False)
    curves: dict[str, dict[str, np.ndarray]] = field(repr=False)  # group -> reliability, crps_by_horizon, ...

    @property
    def baseline(self) -> str:
        return self.study.baseline

    @property
    def headline(self) -> str:
        """The headline metric families of the study's runs (one, unless runs differ), e.g.
        ``test_online``: what the ``headline/*`` columns score."""
        return ", ".join(dict.fromkeys(self.runs["headline"])) if len(self.runs) else "test"

    @property
    def groups(self) -> list[str]:
        return list(self.study.groups)

    def stat(self, group: str, metric: str, column: str = "mean") -> float:
        row = self.summary[(self.summary["group"] == group) & (self.summary["metric"] == metric)]
        return float(row[column].iloc[0]) if len(row) else math.nan

    def table(self) -> pd.DataFrame:
        """One row per group: seed means with CI half-widths, ensemble CRPS, the paired verdict."""
        rows = []
        for group in self.groups:
            row: dict[str, object] = {"group": group, "seeds": int(self.runs["group"].eq(group).sum())}
            for metric in METRICS:
                row[metric] = self.stat(group, metric)
                low, high = self.stat(group, metric, "ci_low"), self.stat(group, metric, "ci_high")
                row[f"{metric} ±"] = (high - low) / 2.0
            row["ensemble/crps"] = float(self.ensembles.loc[group, "crps"])
            if group in self.paired.index:
                pair = self.paired.loc[group]
                row.update({"delta/crps": pair["mean_difference"], "p_value": pair["p_value"],
                            "verdict": pair["verdict"], "per_seed": pair["per_seed"]})
            else:
                row.update({"delta/crps": 0.0, "p_value": math.nan, "verdict": "baseline", "per_seed": ""})
            rows.append(row)
        return pd.DataFrame(rows).set_index("group")

    def verdicts(self) -> list[str]:
        """The paired comparisons in plain words, one sentence per group."""
        lines = []
        for group, pair in self.paired.iterrows():
            verb = {BETTER: "is better than", WORSE: "is worse than",
                    NO_DIFFERENCE: "shows no detectable difference from"}[pair["verdict"]]
            lines.append(
                f"{group} {verb} {self.baseline}: seed-ensemble CRPS {pair['candidate_crps']:.4g} vs "
                f"{pair['reference_crps']:.4g} ({100 * pair['relative_difference']:+.2f} %), "
                f"Diebold-Mariano t = {pair['statistic']:.2f}, p = {pair['p_value']:.3g} "
                f"(alpha {self.alpha:g}, {pair['n_windows']} windows over {pair['n_periods']} origins); "
                f"per seed: {pair['per_seed']}.")
        return lines


def _run_frame(study: Study) -> pd.DataFrame:
    rows = []
    for group, run in study.runs():
        row = {"group": group, "run_id": run.info.run_id, "seed": run.data.tags.get("seed", ""),
               "variant": run.data.tags.get("variant", "")}
        row["headline"] = headline_of(run.data.tags)
        row.update({m: run.data.metrics.get(m, math.nan) for m in METRICS})
        for metric in HEADLINE_METRICS:
            value = headline_metric(run.data.tags, run.data.metrics, metric.removeprefix("headline/"))
            row[metric] = math.nan if value is None else value
        row["test/oracle_crps"] = run.data.metrics.get("test/oracle_crps", math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _tensors(f: StoredForecasts) -> tuple[torch.Tensor, ...]:
    return (torch.as_tensor(f.forecast), torch.as_tensor(f.target), torch.as_tensor(f.levels),
            torch.as_tensor(f.series_idx))


def _ensemble_scores(ensemble: StoredForecasts, oracle_crps: float, members: int) -> dict[str, float]:
    forecast, target, levels, series = _tensors(ensemble)
    scores = score(forecast, target, levels, series, ensemble.num_series)
    out = {"members": float(members), **{k: scores[k] for k in ENSEMBLE_SCORES if k in scores}}
    out["oracle_ratio"] = scores["crps"] / oracle_crps if oracle_crps and math.isfinite(oracle_crps) else math.nan
    return out


def _curves(members: list[StoredForecasts]) -> dict[str, np.ndarray]:
    """Member curves averaged over seeds (members share windows, so this is the pooled curve)."""
    acc: dict[str, list[np.ndarray]] = {"reliability": [], "crps_by_horizon": [], "pinball_by_level": []}
    for m in members:
        forecast, target, levels, _ = _tensors(m)
        acc["reliability"].append(reliability(forecast, target, levels).double().numpy())
        acc["crps_by_horizon"].append(crps_by_horizon(forecast, target, levels).double().numpy())
        acc["pinball_by_level"].append(pinball_by_level(forecast, target, levels).double().numpy())
    out = {k: np.mean(np.stack(v), axis=0) for k, v in acc.items()}
    out["levels"] = np.asarray(members[0].levels, dtype=np.float64)
    return out


def _per_seed(candidates: list[tuple[str, StoredForecasts]], baselines: dict[str, StoredForecasts],
              alpha: float) -> str:
    verdicts = [paired_crps_test(f, baselines[seed], alpha=alpha).verdict
                for seed, f in candidates if seed in baselines]
    if not verdicts:
        return "no baseline run with the same seed"
    return (f"{verdicts.count(BETTER)} better, {verdicts.count(WORSE)} worse, "
            f"{verdicts.count(NO_DIFFERENCE)} no difference")


def compare_study(study: Study, artifacts: Artifacts, *, alpha: float = 0.05,
                  confidence: float = 0.95) -> StudyComparison:
    """All the comparisons of ``study``, from the runs' metrics and stored test forecasts."""
    runs = _run_frame(study)
    summary = seed_summary(runs, "group", METRICS, confidence)
    base_runs = study.groups[study.baseline]
    reference = artifacts.forecasts(base_runs[0].info.run_id)
    members: dict[str, list[StoredForecasts]] = {}
    seeds: dict[str, list[tuple[str, StoredForecasts]]] = {}
    for group, group_runs in study.groups.items():
        aligned = [align(reference, artifacts.forecasts(r.info.run_id), f"runs {base_runs[0].info.run_id} and "
                         f"{r.info.run_id}") for r in group_runs]
        members[group] = aligned
        seeds[group] = [(r.data.tags.get("seed", ""), f) for r, f in zip(group_runs, aligned)]
    ensembles = {g: reference.with_forecast(ensemble_mean([torch.as_tensor(m.forecast) for m in ms]).numpy())
                 for g, ms in members.items()}
    oracle = runs.groupby("group", sort=False)["test/oracle_crps"].mean()
    ensemble_rows = {g: _ensemble_scores(ensembles[g], float(oracle[g]), len(members[g])) for g in members}
    baseline_by_seed = dict(seeds[study.baseline])
    paired_rows = {}
    for group in members:
        if group == study.baseline:
            continue
        test: PairedTest = paired_crps_test(ensembles[group], ensembles[study.baseline], alpha=alpha)
        paired_rows[group] = {**test.__dict__, "per_seed": _per_seed(seeds[group], baseline_by_seed, alpha)}
    paired = pd.DataFrame.from_dict(paired_rows, orient="index")
    if paired.empty:
        paired = pd.DataFrame(columns=[*PairedTest.__dataclass_fields__, "per_seed"])
    return StudyComparison(
        study=study, alpha=alpha, confidence=confidence, runs=runs, summary=summary,
        ensembles=pd.DataFrame.from_dict(ensemble_rows, orient="index"), paired=paired,
        members=members, ensemble_forecasts=ensembles,
        curves={g: _curves(ms) for g, ms in members.items()},
    )


def compare(client: MlflowClient, tracking_uri: str, artifacts: Artifacts, *, experiment: Optional[str] = None,
            study: Optional[str] = None, parent_run_id: Optional[str] = None, alpha: float = 0.05,
            baseline: str = BASELINE_VARIANT) -> StudyComparison:
    """Find the study's parent run, group its runs and compare them (the report's data)."""
    parent = find_parent(client, experiment=experiment, study=study, parent_run_id=parent_run_id)
    return compare_study(load_study(client, tracking_uri, parent, baseline=baseline), artifacts, alpha=alpha)
