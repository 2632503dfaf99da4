"""The embedded default dataset: a synthetic MHLV-like panel whose true forecast is known.

Generative model, per series ``i`` and hour ``t`` (all parameters drawn from
``default_rng([seed, i])``, so series ``i`` is the same whatever ``n_series`` or ``size``)::

    y_t = m_t + e_t
    m_t = level_i * trend_i(t) * daily_i(hour) * weekly_i(weekday) * annual_i(day of year)
                  * holiday_i(date)
    e_t = phi_i * e_{t-1} + sigma_t * z_t,        z_t ~ N(0, 1) i.i.d.
    sigma_t = r_i * sqrt(1 - phi_i^2) * hod_i(hour) * m_t

- ``level_i``: 300 MW to 30 000 MW, spread log-uniformly over the series (a
  low-discrepancy sequence, so any 8 consecutive series cover the range), like the
  countries of MHLV.
- ``daily_i``: two harmonics (an evening and a morning peak) with series-specific
  amplitudes and phases; ``weekly_i``: Saturday and Sunday drops (4-10 % and 8-16 %);
  ``annual_i``: one harmonic, winter peak for most series and summer peak for some
  (amplitude 5-18 %); ``trend_i``: -1 to +2 % per year.
- ``holiday_i``: the whole day drops by 5-10 % on 1 Jan, Easter Monday, 1 May, 25-26 Dec
  and one national day per series (a handful a year, kept modest because a model that
  sees only the history cannot know the calendar).
- Noise: AR(1) with ``phi_i`` in [0.85, 0.95]; the marginal standard deviation is about
  ``r_i`` (1.5-3.5 %) of ``m_t``, larger in the daytime (``hod_i``) and proportional to the
  load level, i.e. heteroscedastic in hour of day and level.

The oracle. Because ``m`` is known to the generator and ``e`` is a Markov chain, the true
distribution of ``y_{o+h}`` given the history ``y_{o-L} .. y_{o-1}`` depends only on the
last OBSERVED noise value ``e_tau`` (``tau`` < ``o``, a missing ``y_{o-1}`` is skipped):
Gaussian with mean ``m_t + phi^(t - tau) e_tau`` and variance
``sum_{s = tau+1}^{t} phi^(2 (t - s)) sigma_s^2 = V_t - phi^(2 (t - tau)) V_tau``, where
``V_t`` is the marginal variance of ``e_t`` (computed once per series with a linear
filter, the chain starting stationary). With no observation in the history the
distribution is the marginal one, ``N(m_t, V_t)``. Quantiles are ``norm.ppf``, vectorised
over windows, horizon and levels.

``gaps=True`` makes the panel exercise the data checks: every 8th series (index 7, 15, ...)
starts about 30 % into the span, and a few gaps of 1 to 48 hours are cut out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from dateutil.easter import easter
from scipy.signal import lfilter
from scipy.stats import norm

from anyq.data.panel import Panel
from anyq.data.splits import SplitRanges, split_by_dates, split_by_proportions

_GAP_STREAM = 1_000_003  # a seed-sequence key distinct from any series index
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


class SyntheticData:
    """A generated panel plus what the generator knows: mean, noise and its variance."""

    name = "synthetic"

    def __init__(
        self,
        panel: Panel,
        mean: np.ndarray,
        phi: np.ndarray,
        innovation_sd: np.ndarray,
        marginal_var: np.ndarray,
        params: dict[str, np.ndarray],
    ) -> None:
        self.panel = panel
        self.mean = mean  # m_t, float64 [N, T]
        self.phi = phi  # [N]
        self.innovation_sd = innovation_sd  # sigma_t, float64 [N, T]
        self.marginal_var = marginal_var  # V_t, float64 [N, T]
        self.params = params
        values = panel.values.astype(np.float64)
        #: day of year of each series' national holiday, by series id (the calendar inputs use it)
        self.national_days = {sid: int(day) for sid, day in zip(panel.ids, params["national_day"])}
        self._noise_obs = values - mean  # e_t where observed, NaN elsewhere
        steps = np.arange(panel.n_steps)
        self._last_obs = np.maximum.accumulate(np.where(np.isnan(values), -1, steps), axis=1)

    def quantiles(
        self,
        series_idx: np.ndarray,
        origin: np.ndarray,
        levels: np.ndarray,
        history_length: int,
        horizon_length: int = 48,
    ) -> np.ndarray:
        """True conditional quantiles of the horizon given the history, float32 [B, H, Q]."""
        s = np.asarray(series_idx, dtype=np.int64).reshape(-1)
        o = np.asarray(origin, dtype=np.int64).reshape(-1)
        z = norm.ppf(np.asarray(levels, dtype=np.float64).reshape(-1))
        if s.shape != o.shape:
            raise ValueError("series_idx and origin must have the same length")
        if o.size and (o.min() < history_length or o.max() + horizon_length > self.panel.n_steps):
            raise ValueError("a window reaches outside the synthetic panel")
        t = o[:, None] + np.arange(horizon_length)  # [B, H]
        last = self._last_obs[s, o - 1]
        seen = last >= o - history_length
        tau = np.where(seen, last, 0)
        lag = t - tau[:, None]
        phi = self.phi[s][:, None]
        carry = np.where(seen, self._noise_obs[s, tau], 0.0)[:, None] * phi**lag
        forgotten = np.where(seen, self.marginal_var[s, tau], 0.0)[:, None] * phi ** (2 * lag)
        mean = self.mean[s[:, None], t] + carry
        sd = np.sqrt(np.maximum(self.marginal_var[s[:, None], t] - forgotten, 0.0))
        return (mean[..., None] + sd[..., None] * z).astype(np.float32)

    def default_split(self) -> SplitRanges:
        """All but the last year for training; the last year's halves for validation and test.

        For the default 3 years from 2015: train 2015-2016, validation 2017-01-01 to
        2017-06-30, test 2017-07-01 to 2017-12-31. Under two years: 70/15/15 by time.
        """
        index = self.panel.index
        last_year = index[-1] - pd.DateOffset(years=1) + pd.Timedelta(hours=1)
        if last_year - index[0] < pd.Timedelta(days=365):
            return split_by_proportions(self.panel, (0.7, 0.15, 0.15))
        half = last_year + pd.DateOffset(months=6)
        hour = pd.Timedelta(hours=1)
        return split_by_dates(self.panel, last_year - hour, half - hour, index[-1])


def generate_synthetic(
    seed: int = 0,
    size: int = 1,
    n_series: int = 8,
    start: str = "2015-01-01",
    years: int = 3,
    gaps: bool = True,
) -> SyntheticData:
    """Generate the default dataset (see the module docstring); deterministic given the seed."""
    if size < 1 or n_series < 1 or years < 1:
        raise ValueError("size, n_series and years must be >= 1")
    first = pd.Timestamp(start).normalize()
    index = pd.date_range(first, first + pd.DateOffset(years=years), freq="h", inclusive="left")
    n = n_series * size
    p = _draw_parameters(seed, n)
    mean = _mean_load(index, p)
    sigma = p["noise_ratio"][:, None] * np.sqrt(1 - p["phi"][:, None] ** 2) * _hour_factor(index, p) * mean
    noise, marginal_var = _ar1(seed, sigma, p["phi"])
    values = mean + noise
    if gaps:
        values[_gap_mask(seed, n, len(index), index)] = np.nan
    panel = Panel(ids=tuple(f"S{i:02d}" for i in range(n)), index=index, values=values.astype(np.float32))
    return SyntheticData(panel, mean, p["phi"], sigma, marginal_var, p)


def synthetic_national_days(seed: int, n: int) -> dict[str, int]:
    """Day of year of each series' national holiday, by series id (``S00``, ``S01``, ...),
    without generating the panel: what the calendar inputs need to know of the generator."""
    days = _draw_parameters(seed, n)["national_day"]
    return {f"S{i:02d}": int(day) for i, day in enumerate(days)}


def _draw_parameters(seed: int, n: int) -> dict[str, np.ndarray]:
    rows = []
    for i in range(n):  # one generator per series: series i does not depend on n
        rng = np.random.default_rng([seed, i])
        u = rng.uniform(size=16)
        rows.append(
            {
                "level": 10 ** (2.5 + 2.0 * ((i * _GOLDEN + 0.1 * u[0]) % 1.0)),
                "trend": -0.01 + 0.03 * u[1],
                "daily_amp1": 0.08 + 0.10 * u[2],
                "daily_peak1": 14.0 + 5.0 * u[3],
                "daily_amp2": 0.03 + 0.05 * u[4],
                "daily_peak2": 8.0 + 3.0 * u[5],
                "saturday_drop": 0.04 + 0.06 * u[6],
                "sunday_drop": 0.08 + 0.08 * u[7],
                "annual_amp": 0.05 + 0.13 * u[8],
                "annual_peak": 15.0 + 30.0 * u[9] if u[10] < 0.75 else 190.0 + 30.0 * u[9],
                "holiday_drop": 0.05 + 0.05 * u[11],
                "national_day": 1 + int(364 * u[12]),
                "phi": 0.85 + 0.10 * u[13],
                "noise_ratio": 0.015 + 0.02 * u[14],
                "hour_noise_amp": 0.2 + 0.2 * u[15],
            }
        )
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


def _mean_load(index: pd.DatetimeIndex, p: dict[str, np.ndarray]) -> np.ndarray:
    hour = index.hour.to_numpy()[None, :]
    doy = index.dayofyear.to_numpy()[None, :]
    weekday = index.weekday.to_numpy()[None, :]
    col = {k: v[:, None] for k, v in p.items()}
    years = ((index - index[0]) / pd.Timedelta(days=365.25)).to_numpy()[None, :]
    daily = (
        1.0
        + col["daily_amp1"] * np.cos(2 * np.pi * (hour - col["daily_peak1"]) / 24)
        + col["daily_amp2"] * np.cos(4 * np.pi * (hour - col["daily_peak2"]) / 24)
    )
    weekly = 1.0 - col["saturday_drop"] * (weekday == 5) - col["sunday_drop"] * (weekday == 6)
    annual = 1.0 + col["annual_amp"] * np.cos(2 * np.pi * (doy - col["annual_peak"]) / 365.25)
    holiday = 1.0 - col["holiday_drop"] * synthetic_holidays(index, p["national_day"])
    return col["level"] * (1.0 + col["trend"] * years) * daily * weekly * annual * holiday


def synthetic_holidays(index: pd.DatetimeIndex, national_day: np.ndarray) -> np.ndarray:
    """Bool [N, T]: the generator's holiday calendar — 1 Jan, Easter Monday, 1 May, 25-26 Dec
    and each series' national day (day of year ``national_day[i]``) — at the hours of ``index``."""
    dates = index.normalize()
    month_day = index.month * 100 + index.day
    common = np.isin(month_day, [101, 501, 1225, 1226])
    easter_mondays = [pd.Timestamp(easter(y)) + pd.Timedelta(days=1) for y in index.year.unique()]
    common |= np.isin(dates, pd.DatetimeIndex(easter_mondays))
    national = index.dayofyear.to_numpy()[None, :] == national_day[:, None]
    return common[None, :] | national


def _hour_factor(index: pd.DatetimeIndex, p: dict[str, np.ndarray]) -> np.ndarray:
    """Noise multiplier by hour of day (daytime noisier), mean square 1 over the day."""
    hours = np.arange(24)
    shape = 1.0 + p["hour_noise_amp"][:, None] * np.cos(2 * np.pi * (hours - 13) / 24)
    shape /= np.sqrt((shape**2).mean(axis=1, keepdims=True))
    return shape[:, index.hour.to_numpy()]


def _ar1(seed: int, sigma: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AR(1) noise started from its stationary law, and its exact marginal variance."""
    noise = np.empty_like(sigma)
    var = np.empty_like(sigma)
    for i in range(sigma.shape[0]):  # lfilter per series: phi differs by series
        rng = np.random.default_rng([seed, i, 1])
        z = rng.standard_normal(sigma.shape[1] + 1)
        stationary = sigma[i, 0] ** 2 / (1 - phi[i] ** 2)
        e_before = np.sqrt(stationary) * z[0]
        noise[i] = lfilter([1.0], [1.0, -phi[i]], sigma[i] * z[1:], zi=[phi[i] * e_before])[0]
        var[i] = lfilter([1.0], [1.0, -phi[i] ** 2], sigma[i] ** 2, zi=[phi[i] ** 2 * stationary])[0]
    return noise, var


def _gap_mask(seed: int, n: int, t: int, index: pd.DatetimeIndex) -> np.ndarray:
    """Late starts for every 8th series and a few gaps (about 6 per 8 series, one of 48 h)."""
    rng = np.random.default_rng([seed, _GAP_STREAM])
    mask = np.zeros((n, t), dtype=bool)
    late = int(np.flatnonzero(index.hour == 0)[np.searchsorted(np.flatnonzero(index.hour == 0), 0.3 * t)])
    mask[7::8, :late] = True
    n_gaps = max(1, (6 * n) // 8)
    series = rng.integers(0, n, n_gaps)
    starts = rng.integers(t // 10, t - 48, n_gaps)
    lengths = np.where(rng.uniform(size=n_gaps) < 0.2, 48, rng.integers(1, 7, n_gaps))
    lengths[0] = 48  # at least one gap long enough to knock out whole evaluation targets
    steps = np.arange(t)[None, :]
    for k in range(n_gaps):
        mask[series[k]] |= (steps[0] >= starts[k]) & (steps[0] < starts[k] + lengths[k])
    return mask
