"""Compare the groups of a study from what MLflow holds: seeds, seed ensembles, verdicts.

Three views of every group (a variant of an ablation, or one of a sweep's best trials):

* ``summary``: mean and 95 % t-interval over seeds of each run's logged test metrics
  (``METRICS``): how good a single model of the group is, and how much seeds matter.
* ``ensembles``: the seed ensemble (mean of the members' stored quantile forecasts,
  docs/design.md §3) scored with ``anyq.metrics.scorer.score`` on the test windows.
* ``paired``: the group against the baseline adaptive model on the same test windows, with
  the verdict of ``anyq.reporting.verdict``: the relative difference of the seed-mean CRPS,
  its interval from the seeds' spread and the test windows' noise together, its p-value
  Holm-corrected over the study's groups; no better/worse verdict with fewer than 3 seeds
  or for a group (or baseline) not trained enough to judge (``anyq.tracking.readiness``).
  Each seed is also paired with the baseline of the same seed (Diebold-Mariano on the test
  windows, ``anyq.reporting.stats``) and the per-seed verdicts counted in ``per_seed``
  ("2 better, 0 worse, 1 no difference"): how far the seeds agree.

Seasonal naive, scored by every run on its test windows (``test/naive_crps``), is a
reference row of ``table``.
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
from anyq.metrics.functional import crps_by_horizon, per_window_crps, pinball_by_level, reliability
from anyq.metrics.scorer import score
from anyq.reporting.numbers import significant
from anyq.reporting.stats import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    StoredForecasts,
    align,
    paired_crps_test,
    seed_summary,
)
from anyq.reporting.study_lookup import find_parent
from anyq.reporting.study_runs import Artifacts, Study, load_study
from anyq.reporting.verdict import (
    TOO_FEW_SEEDS,
    UNJUDGED,
    SeedWindowTest,
    per_origin,
    seed_window_test,
    study_verdicts,
)
from anyq.tracking.baseline import BASELINE_VARIANT
from anyq.tracking.readiness import untrained_runs

#: Each run's own headline family (its ``headline`` tag, :mod:`anyq.metrics.families`) read as
#: ``headline/<name>``: the scores of the forecast the run serves.
HEADLINE_METRICS = ("headline/crps", "headline/coverage-0.9", "headline/coverage-0.95", "headline/oracle_ratio")
METRICS = (
    *HEADLINE_METRICS,
    "test/crps", "test/crps_norm", "test/coverage-0.9", "test/coverage-0.95", "test/marfe", "test/mape",
    "test/oracle_ratio", "test/naive_ratio", "train_seconds",
)
NAIVE = "seasonal naive"  # the reference row of ``StudyComparison.table``
PAIRED_COLUMNS = (
    "relative_difference", "ci_low", "ci_high", "p_value", "p_adjusted", "verdict", "reason", "mean_difference",
    "candidate_crps", "reference_crps", "se_seeds", "se_windows", "df", "candidate_seeds", "reference_seeds",
    "paired_seeds", "n_origins", "maxlags", "per_seed",
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
    paired: pd.DataFrame  # index group (baseline excluded): PAIRED_COLUMNS
    untrained: dict[str, str]  # group (baseline included) -> why it is not trained enough to judge
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

    @property
    def naive_crps(self) -> float:
        """Seasonal naive's CRPS on the study's test windows (NaN when the runs did not log it)."""
        values = self.runs["test/naive_crps"].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else math.nan

    def table(self) -> pd.DataFrame:
        """One row per group, then seasonal naive (``NAIVE``): seed means with CI half-widths,
        ensemble CRPS, the verdict against the baseline and its interval (relative, %)."""
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
                row.update({"delta/crps": pair["mean_difference"], "delta/crps %": 100 * pair["relative_difference"],
                            "ci_low %": 100 * pair["ci_low"], "ci_high %": 100 * pair["ci_high"],
                            "p_value": pair["p_adjusted"], "verdict": pair["verdict"], "per_seed": pair["per_seed"]})
            else:
                row.update({"delta/crps": 0.0, "delta/crps %": 0.0, "ci_low %": math.nan, "ci_high %": math.nan,
                            "p_value": math.nan, "verdict": "baseline", "per_seed": ""})
            row["trained_enough"] = self.untrained.get(group, "") == ""
            rows.append(row)
        naive = {"group": NAIVE, "seeds": 0, **{m: math.nan for m in METRICS}, **{f"{m} ±": math.nan for m in METRICS},
                 "ensemble/crps": math.nan, "delta/crps": self.naive_crps - self.stat(self.baseline, "test/crps"),
                 "delta/crps %": 100 * (self.naive_crps / self.stat(self.baseline, "test/crps") - 1),
                 "ci_low %": math.nan, "ci_high %": math.nan, "p_value": math.nan, "verdict": "reference",
                 "per_seed": "", "trained_enough": True}
        naive["test/crps"] = self.naive_crps
        naive["test/naive_ratio"] = 1.0 if math.isfinite(self.naive_crps) else math.nan
        rows.append(naive)
        return pd.DataFrame(rows).set_index("group")

    def verdicts(self) -> list[str]:
        """The comparisons in plain words, one sentence per group."""
        lines = []
        for group, pair in self.paired.iterrows():
            interval = (f"{100 * pair['relative_difference']:+.2f} % "
                        f"({100 * self.confidence:g} % interval {100 * pair['ci_low']:+.2f} .. "
                        f"{100 * pair['ci_high']:+.2f} %)")
            means = f"{significant(pair['candidate_crps'])} vs {significant(pair['reference_crps'])}"
            crps = (f"seed-mean CRPS {means}, {interval}, {pair['candidate_seeds']} vs {pair['reference_seeds']} "
                    f"seeds over {pair['n_origins']} origins")
            verdict = pair["verdict"]
            if verdict in UNJUDGED:
                why = pair["reason"]  # the reasons themselves: a confirm prints no list above its verdict
                lines.append(f"{group} against {self.baseline}: no verdict, not trained enough to judge "
                             f"({why}); {crps}.")
            elif verdict == TOO_FEW_SEEDS:
                lines.append(f"{group} against {self.baseline}: too few seeds for a verdict ({pair['reason']}); "
                             f"{crps}; per seed: {pair['per_seed']}.")
            else:
                verb = {BETTER: "is better than", WORSE: "is worse than",
                        NO_DIFFERENCE: "shows no detectable difference from"}[verdict]
                lines.append(f"{group} {verb} {self.baseline}: {crps}; p = {pair['p_adjusted']:.3g} "
                             f"(Holm-adjusted over {self.judged} variants, raw {pair['p_value']:.3g}, "
                             f"alpha {self.alpha:g}); per seed: {pair['per_seed']}.")
        return lines

    @property
    def judged(self) -> int:
        """How many groups took part in the Holm correction."""
        return int(self.paired["p_adjusted"].notna().sum()) if len(self.paired) else 0


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
        row["test/naive_crps"] = run.data.metrics.get("test/naive_crps", math.nan)
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


#: The per-seed column of a pair not trained enough to judge: no better/worse words there either.
NOT_JUDGED_PER_SEED = "not judged (not trained enough)"


def _per_seed(candidates: list[tuple[str, StoredForecasts]], baselines: dict[str, StoredForecasts],
              alpha: float) -> str:
    verdicts = [paired_crps_test(f, baselines[seed], alpha=alpha).verdict
                for seed, f in candidates if seed in baselines]
    if not verdicts:
        return "no baseline run with the same seed"
    return (f"{verdicts.count(BETTER)} better, {verdicts.count(WORSE)} worse, "
            f"{verdicts.count(NO_DIFFERENCE)} no difference")


def _untrained(study: Study) -> dict[str, str]:
    """Groups with a run not trained enough to judge, and why (per seed)."""
    out = {}
    for group, runs in study.groups.items():
        found = untrained_runs(runs)
        if found:
            out[group] = "; ".join(found.values())
    return out


def _origin_losses(members: list[tuple[str, StoredForecasts]]) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Seeds, per-origin mean CRPS ``[S, T]`` of each member, windows per origin ``[T]``, overlap.

    Origins without a scored window (a gap in every target there) are left out.
    """
    first = members[0][1]
    origins = np.unique(first.origin)
    levels = torch.as_tensor(first.levels, dtype=torch.float64)
    target = torch.as_tensor(first.target, dtype=torch.float64)
    rows, counts = [], None
    for _, f in members:
        loss = per_window_crps(torch.as_tensor(f.forecast, dtype=torch.float64), target, levels).numpy()
        mean, counts = per_origin(loss, f.origin, origins)
        rows.append(mean)
    assert counts is not None
    keep = counts > 0
    steps = np.diff(origins)
    step = int(steps[steps > 0].min()) if (steps > 0).any() else 1
    overlap = max(0, math.ceil(first.forecast.shape[1] / step) - 1)
    return [s for s, _ in members], np.stack(rows)[:, keep], counts[keep], overlap


def group_test(candidate: list[tuple[str, StoredForecasts]], reference: list[tuple[str, StoredForecasts]],
               confidence: float) -> SeedWindowTest:
    """The verdict's test of a group's seeds against the baseline's, paired by seed when both
    hold the same seeds (members are aligned to the same windows)."""
    seeds_c, loss_c, weights, overlap = _origin_losses(candidate)
    seeds_r, loss_r, _, _ = _origin_losses(reference)
    paired = sorted(seeds_c) == sorted(seeds_r) and len(set(seeds_c)) == len(seeds_c)
    if paired:
        order = [seeds_r.index(s) for s in seeds_c]
        loss_r = loss_r[order]
    return seed_window_test(loss_c, loss_r, weights, paired=paired, overlap=overlap, confidence=confidence)


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
    untrained = _untrained(study)
    tests = {g: group_test(seeds[g], seeds[study.baseline], confidence)
             for g in members if g != study.baseline}
    verdicts = study_verdicts(tests, alpha, {g: r for g, r in untrained.items() if g != study.baseline},
                              untrained.get(study.baseline, ""))
    paired_rows = {}
    for group, v in verdicts.items():
        t = v.test
        paired_rows[group] = {
            **{k: getattr(t, k) for k in PAIRED_COLUMNS if hasattr(t, k)}, "p_adjusted": v.p_adjusted,
            "verdict": v.verdict, "reason": v.reason, "mean_difference": t.candidate_crps - t.reference_crps,
            "per_seed": (NOT_JUDGED_PER_SEED if v.verdict in UNJUDGED
                         else _per_seed(seeds[group], baseline_by_seed, alpha))}
    paired = pd.DataFrame.from_dict(paired_rows, orient="index")
    paired = paired[list(PAIRED_COLUMNS)] if len(paired) else pd.DataFrame(columns=list(PAIRED_COLUMNS))
    return StudyComparison(
        study=study, alpha=alpha, confidence=confidence, runs=runs, summary=summary,
        ensembles=pd.DataFrame.from_dict(ensemble_rows, orient="index"), paired=paired, untrained=untrained,
        members=members, ensemble_forecasts=ensembles,
        curves={g: _curves(ms) for g, ms in members.items()},
    )


def compare(client: MlflowClient, tracking_uri: str, artifacts: Artifacts, *, experiment: Optional[str] = None,
            study: Optional[str] = None, parent_run_id: Optional[str] = None, alpha: float = 0.05,
            baseline: str = BASELINE_VARIANT) -> StudyComparison:
    """Find the study's parent run, group its runs and compare them (the report's data)."""
    parent = find_parent(client, experiment=experiment, study=study, parent_run_id=parent_run_id)
    return compare_study(load_study(client, tracking_uri, parent, baseline=baseline), artifacts, alpha=alpha)
