"""Seed statistics and paired tests between models scored on the same test windows.

Two questions a study asks, answered here without any MLflow code:

* How much do the numbers move between seeds? ``mean_ci``: mean and Student-t interval.
* Is model A better than model B on *these* windows? ``paired_crps_test``: a
  Diebold-Mariano test on the per-window CRPS differences.

The Diebold-Mariano test (decision recorded here so every report states the same thing):

* Loss: the CRPS of each window (``anyq.metrics.functional.per_window_crps``) on the common
  level grid; windows whose target has a gap are dropped from both models.
* Time axis: the test panel holds several series per forecast origin. The differences are
  averaged over series at each origin first (one value per day of the test period), so
  that the correlation between series at the same origin does not count as independent
  evidence, and the remaining series of the test are the time series the test is about.
  With every series present at every origin the mean of that series equals the
  difference of the two models' CRPS.
* Variance: ordinary least squares of the differential on a constant, with a HAC
  (Newey-West, Bartlett kernel) covariance from statsmodels, small-sample corrected, and
  a Student-t reference distribution (T - 1 degrees of freedom). The lag truncation is
  the larger of the overlap of consecutive windows (``ceil(horizon / step) - 1`` origins,
  the h - 1 of Diebold and Mariano) and Newey-West's rule ``floor(4 (T / 100)^(2/9))``,
  so persistent loss differences are covered as well as the overlap.
* Verdict (two-sided, level ``alpha``): "better" when A's CRPS is lower and p < alpha,
  "worse" when higher and p < alpha, otherwise "no detectable difference".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
import torch
from scipy import stats as scipy_stats

from anyq.errors import WindowMismatchError
from anyq.metrics.functional import per_window_crps

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference"


# --- seed statistics ---------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with its two-sided Student-t confidence interval (NaN bounds for n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    std: float


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and t-interval over the finite values (seeds are few: the t quantile, not 1.96)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, math.nan)
    std = float(x.std(ddof=1))
    if std == 0.0:
        return Interval(mean, mean, mean, n, 0.0)
    low, high = scipy_stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Interval(mean, float(low), float(high), n, std)


def seed_summary(runs: pd.DataFrame, by: str, metrics: Sequence[str], confidence: float = 0.95) -> pd.DataFrame:
    """Long table: one row per (group, metric) with n, mean, std, ci_low, ci_high.

    ``runs`` holds one row per run; a metric missing from a run (NaN) is left out of that
    metric's statistics only.
    """
    rows = []
    for group, frame in runs.groupby(by, sort=False):
        for metric in metrics:
            values = frame[metric] if metric in frame else pd.Series(dtype=float)
            ci = mean_ci(values.to_numpy(dtype=np.float64), confidence)
            rows.append({by: group, "metric": metric, "n": ci.n, "mean": ci.mean, "std": ci.std,
                         "ci_low": ci.low, "ci_high": ci.high})
    return pd.DataFrame(rows, columns=[by, "metric", "n", "mean", "std", "ci_low", "ci_high"])


# --- forecasts on identified windows ------------------------------------------------------


@dataclass(frozen=True)
class StoredForecasts:
    """Test forecasts as a run stores them: ``[N, H, Q]`` on ``levels``, windows named by
    ``(series_idx, origin)`` (``origin`` = time index of the first target hour)."""

    forecast: np.ndarray
    target: np.ndarray
    series_idx: np.ndarray
    origin: np.ndarray
    levels: np.ndarray
    series_ids: tuple[str, ...] = ()  # names of the series (``series_idx`` indexes it); () when not stored
    index_start: Optional[str] = None  # ISO timestamp of hour 0 of ``origin``; None when not stored

    def __post_init__(self) -> None:
        n, h, q = self.forecast.shape
        if self.target.shape != (n, h) or self.series_idx.shape != (n,) or self.origin.shape != (n,) \
                or self.levels.shape != (q,):
            raise ValueError(f"inconsistent stored forecasts: forecast {self.forecast.shape}, target "
                             f"{self.target.shape}, series_idx {self.series_idx.shape}, origin "
                             f"{self.origin.shape}, levels {self.levels.shape}")

    @classmethod
    def from_arrays(cls, arrays) -> "StoredForecasts":
        names = getattr(arrays, "files", arrays)
        ids = tuple(str(i) for i in np.asarray(arrays["series_ids"]).tolist()) if "series_ids" in names else ()
        start = str(np.asarray(arrays["index_start"]).item()) if "index_start" in names else None
        return cls(np.asarray(arrays["forecast"]), np.asarray(arrays["target"]),
                   np.asarray(arrays["series_idx"]).astype(np.int64), np.asarray(arrays["origin"]).astype(np.int64),
                   np.asarray(arrays["levels"]), ids, start)

    def series_name(self, series: int) -> str:
        """The series' id as the data names it (``#<n>``, its position, for runs that stored none)."""
        return self.series_ids[series] if 0 <= series < len(self.series_ids) else f"#{series}"

    def timestamp(self, hour: int) -> Optional[pd.Timestamp]:
        """The time of ``origin`` value ``hour``, or None for runs that stored no start."""
        return None if self.index_start is None else pd.Timestamp(self.index_start) + pd.Timedelta(hours=int(hour))

    @property
    def num_series(self) -> int:
        return int(self.series_idx.max()) + 1 if self.series_idx.size else 1

    def take(self, order: np.ndarray) -> "StoredForecasts":
        return StoredForecasts(self.forecast[order], self.target[order], self.series_idx[order],
                               self.origin[order], self.levels, self.series_ids, self.index_start)

    def with_forecast(self, forecast: np.ndarray) -> "StoredForecasts":
        return StoredForecasts(np.asarray(forecast), self.target, self.series_idx, self.origin, self.levels,
                               self.series_ids, self.index_start)


def _sorted_keys(f: StoredForecasts) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((f.origin, f.series_idx))
    keys = np.stack([f.series_idx[order], f.origin[order]], axis=1)
    if keys.shape[0] > 1 and bool((keys[1:] == keys[:-1]).all(axis=1).any()):
        raise WindowMismatchError("stored forecasts name the same (series_idx, origin) window twice")
    return order, keys


def align(reference: StoredForecasts, other: StoredForecasts, what: str = "forecasts") -> StoredForecasts:
    """``other`` reordered window by window to ``reference``'s order.

    Raises ``WindowMismatchError`` unless both hold exactly the same ``(series_idx, origin)``
    windows with the same targets and levels: a paired comparison of different windows,
    or of the same windows on different data, would be meaningless.
    """
    ref_order, ref_keys = _sorted_keys(reference)
    oth_order, oth_keys = _sorted_keys(other)
    if ref_keys.shape != oth_keys.shape or not np.array_equal(ref_keys, oth_keys):
        ref_set = {tuple(k) for k in ref_keys.tolist()}
        oth_set = {tuple(k) for k in oth_keys.tolist()}
        raise WindowMismatchError(
            f"{what} are not on the same test windows: {len(ref_set - oth_set)} (series_idx, origin) "
            f"windows only in the first, {len(oth_set - ref_set)} only in the second")
    if reference.forecast.shape[1:] != other.forecast.shape[1:] or not np.allclose(reference.levels, other.levels):
        raise WindowMismatchError(f"{what} differ in horizon or level grid: {reference.forecast.shape[1:]} "
                                  f"vs {other.forecast.shape[1:]}")
    position = np.empty_like(ref_order)
    position[ref_order] = np.arange(ref_order.size)
    aligned = other.take(oth_order[position])
    if not np.allclose(aligned.target, reference.target, equal_nan=True, rtol=1e-6, atol=0.0):
        raise WindowMismatchError(f"{what} name the same windows but their targets differ: not the same data")
    return aligned


# --- the paired test ---------------------------------------------------------------------


@dataclass(frozen=True)
class PairedTest:
    """Candidate minus reference CRPS on common windows, and the Diebold-Mariano verdict."""

    mean_difference: float  # candidate CRPS - reference CRPS (data units; < 0: candidate better)
    relative_difference: float  # mean_difference / reference CRPS
    candidate_crps: float
    reference_crps: float
    statistic: float
    p_value: float
    verdict: str
    n_windows: int
    n_periods: int  # origins: the length of the tested series
    maxlags: int
    alpha: float


def newey_west_lags(n_periods: int, overlap: int = 0) -> int:
    """Lag truncation: window overlap or Newey-West's ``floor(4 (T/100)^(2/9))``, whichever is larger."""
    rule = int(math.floor(4.0 * (max(n_periods, 1) / 100.0) ** (2.0 / 9.0)))
    return max(0, min(max(overlap, rule), n_periods - 2))


def diebold_mariano(differential: np.ndarray, maxlags: int, alpha: float = 0.05) -> tuple[float, float, str]:
    """(statistic, two-sided p-value, verdict) for ``mean(differential) == 0``; negative = first better.

    The mean of the loss differential regressed on a constant, HAC standard error
    (statsmodels ``cov_type="HAC"``), t reference distribution. A differential that is
    exactly constant has no sampling variance: zero means no difference, anything else a
    difference beyond doubt.
    """
    d = np.asarray(differential, dtype=np.float64).reshape(-1)
    if d.size < 3:
        raise ValueError(f"a Diebold-Mariano test needs at least 3 periods, got {d.size}")
    spread = float(np.ptp(d))
    if spread <= 1e-12 * max(1.0, float(np.abs(d).max())):
        mean = float(d.mean())
        if mean == 0.0:
            return 0.0, 1.0, NO_DIFFERENCE
        return math.copysign(math.inf, mean), 0.0, BETTER if mean < 0 else WORSE
    fit = sm.OLS(d, np.ones_like(d)).fit(cov_type="HAC", cov_kwds={"maxlags": int(maxlags), "use_correction": True},
                                         use_t=True)
    statistic, p_value = float(fit.tvalues[0]), float(fit.pvalues[0])
    if p_value < alpha:
        return statistic, p_value, BETTER if statistic < 0 else WORSE
    return statistic, p_value, NO_DIFFERENCE


def origin_differential(loss_a: np.ndarray, loss_b: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-origin mean of ``loss_a - loss_b`` over the windows scored by both, origins ascending."""
    diff = np.asarray(loss_a, np.float64) - np.asarray(loss_b, np.float64)
    ok = np.isfinite(diff)
    origins, inverse = np.unique(np.asarray(origin)[ok], return_inverse=True)
    sums = np.bincount(inverse, weights=diff[ok], minlength=origins.size)
    counts = np.bincount(inverse, minlength=origins.size)
    return origins, sums / counts


def paired_crps_test(candidate: StoredForecasts, reference: StoredForecasts, *, alpha: float = 0.05,
                     maxlags: Optional[int] = None) -> PairedTest:
    """Diebold-Mariano test of candidate vs reference CRPS on the same test windows (see module doc)."""
    other = align(candidate, reference, "candidate and reference forecasts")
    levels = torch.as_tensor(candidate.levels, dtype=torch.float64)
    loss_c = per_window_crps(torch.as_tensor(candidate.forecast, dtype=torch.float64),
                             torch.as_tensor(candidate.target, dtype=torch.float64), levels).numpy()
    loss_r = per_window_crps(torch.as_tensor(other.forecast, dtype=torch.float64),
                             torch.as_tensor(other.target, dtype=torch.float64), levels).numpy()
    origins, d = origin_differential(loss_c, loss_r, candidate.origin)
    if maxlags is None:
        steps = np.diff(origins)
        step = int(steps[steps > 0].min()) if steps.size and (steps > 0).any() else 1
        overlap = max(0, math.ceil(candidate.forecast.shape[1] / step) - 1)
        maxlags = newey_west_lags(origins.size, overlap)
    statistic, p_value, verdict = diebold_mariano(d, maxlags, alpha)
    scored = np.isfinite(loss_c) & np.isfinite(loss_r)
    crps_c, crps_r = float(loss_c[scored].mean()), float(loss_r[scored].mean())
    return PairedTest(
        mean_difference=crps_c - crps_r,
        relative_difference=(crps_c - crps_r) / crps_r if crps_r else math.nan,
        candidate_crps=crps_c, reference_crps=crps_r,
        statistic=statistic, p_value=p_value, verdict=verdict,
        n_windows=int(scored.sum()), n_periods=int(origins.size), maxlags=int(maxlags), alpha=float(alpha),
    )
