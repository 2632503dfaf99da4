"""Is a variant better than the baseline? One verdict for reports and confirmations alike.

The question is about the *variant* (any training run of it), not about two particular trained
models, so its uncertainty has two sources: training randomness (the seeds) and the test
windows (other days would give other scores). Both enter the variance of the relative CRPS
difference (decision and measurements in docs/design.md §7):

* Statistic: ``theta = C / R - 1`` with C, R the seed means of the candidate's and the
  baseline's CRPS on the common test windows (negative = candidate better).
* Seed part: the spread of the per-seed CRPS over seeds. Same seeds in both groups: the
  sample variance of the per-seed relative differences ``c_s / r_s - 1`` over S; otherwise the
  two groups' variances, linearised (delta method). Common test windows cancel out of this
  spread, so it measures training randomness (with its seed × window interaction).
* Window part: the seed-mean loss differential per forecast origin (every series at one origin
  together), linearised for the ratio, ``z_t = w_t (C_t - (1 + theta) R_t) / mean(w R)``, and
  the HAC (Newey-West, Bartlett kernel) variance of its mean (statsmodels), lags as in the
  Diebold-Mariano test of :mod:`anyq.reporting.stats`: overlapping windows and persistent
  load errors are autocorrelated.
* The two parts add (seeds and origins are crossed factors; the interaction is counted in
  both, slightly conservative, as in Owen 2007's pigeonhole bootstrap). Reference: Student t
  with ``S - 1`` degrees of freedom (S = the smaller group's seeds), the honest figure with
  few seeds; the interval is ``theta ± t · se``, the p-value two-sided.
* Holm's step-down correction (Holm 1979; statsmodels ``multipletests``) over the variants of
  one study, before the verdict: "better"/"worse" when the adjusted p < alpha.
* Fewer than ``MIN_SEEDS`` seeds in either group: the interval, no p-value, and the verdict
  "too few seeds for a verdict". (One seed: the interval holds the window part only.)

Why not a two-stage bootstrap (seeds, then blocks of origins): with 3 to 5 seeds, resampling
seeds underestimates their spread (by (S - 1) / S, and the percentile interval has no t
tail); measured under no true difference it rejected 9-27 % of the time at alpha 0.05, this
test 0.3-7 % (``benchmarks/bench_verdict.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import statsmodels.api as sm
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from anyq.errors import counted
from anyq.reporting.stats import BETTER, NO_DIFFERENCE, WORSE, newey_west_lags

TOO_FEW_SEEDS = "too few seeds for a verdict"
NOT_TRAINED = "not trained enough to judge"
BASELINE_NOT_TRAINED = "baseline not trained enough to judge"
#: The verdicts withheld because a model of the pair is not trained enough to judge.
UNJUDGED = (NOT_TRAINED, BASELINE_NOT_TRAINED)
MIN_SEEDS = 3


@dataclass(frozen=True)
class SeedWindowTest:
    """A candidate against the reference: estimate, interval and raw p-value (module doc)."""

    relative_difference: float  # theta = C / R - 1 (< 0: candidate better)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, unadjusted; NaN with fewer than MIN_SEEDS seeds
    candidate_crps: float  # C: seed mean of the per-seed CRPS (data units)
    reference_crps: float  # R
    se_seeds: float  # standard error of theta from the seeds (0 with one seed)
    se_windows: float  # standard error of theta from the test origins
    df: int  # degrees of freedom of the t reference
    candidate_seeds: int
    reference_seeds: int
    paired_seeds: bool
    n_origins: int
    maxlags: int
    confidence: float

    @property
    def enough_seeds(self) -> bool:
        return min(self.candidate_seeds, self.reference_seeds) >= MIN_SEEDS


def _hac_variance_of_mean(z: np.ndarray, maxlags: int) -> float:
    if z.size < 3 or float(np.ptp(z)) <= 1e-15 * max(1.0, float(np.abs(z).max())):
        return 0.0
    fit = sm.OLS(z, np.ones_like(z)).fit(cov_type="HAC", cov_kwds={"maxlags": int(maxlags), "use_correction": True})
    return float(fit.bse[0]) ** 2


def seed_window_test(candidate: np.ndarray, reference: np.ndarray, weights: Optional[np.ndarray] = None, *,
                     paired: bool = False, overlap: int = 0, maxlags: Optional[int] = None,
                     confidence: float = 0.95) -> SeedWindowTest:
    """Test (module doc) of per-origin CRPS ``[S_c, T]`` against ``[S_r, T]``.

    ``candidate[s, t]`` is seed s's mean CRPS over the windows of origin t (data units), origins
    in time order and the same for both; ``weights[t]`` the number of windows at origin t
    (default 1), so that each CRPS is the per-window mean. ``paired``: row s of both arrays is
    the same seed (needs ``S_c == S_r``). ``overlap``: how many following origins share target
    hours with a window (``ceil(horizon / step) - 1``), a floor for the HAC lags.

    Raises:
        ValueError: shapes that do not match, no origin, a non-finite loss, or a reference CRPS of 0.
    """
    c = np.asarray(candidate, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if c.ndim != 2 or r.ndim != 2 or c.shape[1] != r.shape[1] or c.shape[1] == 0 or 0 in (c.shape[0], r.shape[0]):
        raise ValueError(f"per-origin CRPS must be [seeds, origins] with the same origins, got {c.shape} and {r.shape}")
    if paired and c.shape[0] != r.shape[0]:
        raise ValueError(f"paired seeds need as many candidate as reference seeds, got {c.shape[0]} and {r.shape[0]}")
    if not (np.isfinite(c).all() and np.isfinite(r).all()):
        raise ValueError("per-origin CRPS holds a non-finite value")
    n_seeds_c, n_origins = c.shape
    n_seeds_r = r.shape[0]
    w = np.ones(n_origins) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n_origins,) or not (w > 0).all():
        raise ValueError(f"weights must be [origins] = [{n_origins}] and positive, got shape {w.shape}")
    w = w / w.mean()
    per_seed_c, per_seed_r = c @ w / n_origins, r @ w / n_origins  # [S]: each seed's CRPS
    crps_c, crps_r = float(per_seed_c.mean()), float(per_seed_r.mean())
    if crps_r <= 0.0:
        raise ValueError(f"the reference CRPS is {crps_r}: a relative difference needs a positive one")
    theta = crps_c / crps_r - 1.0
    # seed part
    if paired and n_seeds_c >= 2:
        var_seeds = float(np.var(per_seed_c / per_seed_r - 1.0, ddof=1)) / n_seeds_c
    else:
        var_c = float(np.var(per_seed_c, ddof=1)) / n_seeds_c if n_seeds_c >= 2 else 0.0
        var_r = float(np.var(per_seed_r, ddof=1)) / n_seeds_r if n_seeds_r >= 2 else 0.0
        var_seeds = (var_c + (1.0 + theta) ** 2 * var_r) / crps_r ** 2
    # window part: the ratio linearised per origin
    z = w * (c.mean(axis=0) - (1.0 + theta) * r.mean(axis=0)) / crps_r
    lags = newey_west_lags(n_origins, overlap) if maxlags is None else int(maxlags)
    var_windows = _hac_variance_of_mean(z, lags)
    seeds = min(n_seeds_c, n_seeds_r)
    df = seeds - 1 if seeds >= 2 else max(1, n_origins - 1)
    se = math.sqrt(var_seeds + var_windows)
    quantile = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, df))
    if seeds < MIN_SEEDS:
        p_value = math.nan
    elif se == 0.0:
        p_value = 1.0 if theta == 0.0 else 0.0
    else:
        p_value = float(2.0 * scipy_stats.t.sf(abs(theta) / se, df))
    return SeedWindowTest(
        relative_difference=theta, ci_low=theta - quantile * se, ci_high=theta + quantile * se, p_value=p_value,
        candidate_crps=crps_c, reference_crps=crps_r, se_seeds=math.sqrt(var_seeds),
        se_windows=math.sqrt(var_windows), df=int(df), candidate_seeds=int(n_seeds_c), reference_seeds=int(n_seeds_r),
        paired_seeds=bool(paired), n_origins=int(n_origins), maxlags=int(lags), confidence=float(confidence))


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (Holm 1979, via statsmodels), NaN entries left out and kept NaN."""
    names = [k for k, p in p_values.items() if math.isfinite(p)]
    out = {k: math.nan for k in p_values}
    if names:
        adjusted = multipletests([p_values[k] for k in names], method="holm")[1]
        out.update({k: float(p) for k, p in zip(names, adjusted)})
    return out


def decide(relative_difference: float, p_adjusted: float, alpha: float, *, enough_seeds: bool = True,
           trained_enough: bool = True) -> str:
    """The verdict in words: judged only for trained models with enough seeds."""
    if not trained_enough:
        return NOT_TRAINED
    if not enough_seeds or not math.isfinite(p_adjusted):
        return TOO_FEW_SEEDS
    if p_adjusted < alpha:
        return BETTER if relative_difference < 0 else WORSE
    return NO_DIFFERENCE


@dataclass(frozen=True)
class Verdict:
    """One candidate's verdict against the study's baseline."""

    test: SeedWindowTest
    p_adjusted: float  # Holm over the study's judged candidates; NaN when not tested
    verdict: str
    alpha: float
    reason: str  # why no better/worse verdict could be given ("" when judged)


def study_verdicts(tests: Mapping[str, SeedWindowTest], alpha: float = 0.05,
                   not_trained: Optional[Mapping[str, str]] = None, baseline_reason: str = "") -> dict[str, Verdict]:
    """Verdicts for every candidate of one study, Holm-corrected across those that are judged.

    ``not_trained`` maps a candidate to why it is not trained enough to judge; a non-empty
    ``baseline_reason`` (the baseline is not) withholds every verdict. Untrained candidates and
    those with too few seeds take no part in the correction.
    """
    not_trained = dict(not_trained or {})
    judged = {g: t.p_value for g, t in tests.items()
              if not baseline_reason and g not in not_trained and t.enough_seeds}
    adjusted = holm(judged)
    out = {}
    for group, test in tests.items():
        own = not_trained.get(group, "")
        reason = "; ".join(r for r in (own, baseline_reason and f"the baseline is not trained enough to judge: "
                                                              f"{baseline_reason}") if r)
        p_adj = adjusted.get(group, math.nan)
        verdict = decide(test.relative_difference, p_adj, alpha, enough_seeds=test.enough_seeds,
                         trained_enough=not reason)
        if baseline_reason and not own:  # the candidate is trained enough: the label says whose training is not
            verdict = BASELINE_NOT_TRAINED
        if verdict == TOO_FEW_SEEDS:
            seeds = min(test.candidate_seeds, test.reference_seeds)
            reason = f"{counted(seeds, 'seed')}; a verdict needs {MIN_SEEDS} or more in both groups"
        out[group] = Verdict(test, p_adj, verdict, alpha, reason)
    return out


def per_origin(loss: np.ndarray, origin: np.ndarray, origins: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean per-window loss at each of ``origins`` and the number of scored windows there.

    ``loss`` ``[N]`` (NaN for an unscored window) and ``origin`` ``[N]``; an origin without a
    scored window gets mean NaN and count 0.
    """
    loss = np.asarray(loss, dtype=np.float64)
    ok = np.isfinite(loss)
    position = np.searchsorted(np.asarray(origins), np.asarray(origin)[ok])
    sums = np.bincount(position, weights=loss[ok], minlength=len(origins))
    counts = np.bincount(position, minlength=len(origins)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts, counts
