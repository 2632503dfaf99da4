"""Forecast scores as pure torch functions (docs/design.md §3).

Shapes: ``forecast`` is ``[..., H, Q]``, ``target`` is ``[..., H]``, ``levels`` is ``[Q]`` or
broadcastable to the forecast's leading dims plus ``Q`` (``[N, Q]`` for per-window levels).
The evaluation scores below ``pinball_loss`` take ``[N, H, Q]`` forecasts on one ascending
grid ``[Q]`` and are the reference that ``ForecastScorer`` streams.
"""

from __future__ import annotations

import torch

from anyq.metrics.levels import level_bracket


def pinball_loss(forecast: torch.Tensor, target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Elementwise pinball (quantile) loss, shaped like ``forecast``.

    ``levels`` of shape ``[Q]`` apply to every window; ``[N, Q]`` gives each window its own
    levels (the training sampler's case).
    """
    if levels.dim() >= 2:
        levels = levels.unsqueeze(-2)  # [N, 1, Q]: same levels along the horizon
    diff = target.unsqueeze(-1) - forecast
    return torch.maximum(levels * diff, (levels - 1.0) * diff)


# --- evaluation scores on the fixed level grid -------------------------------------------
#
# Every score below is computed over the *scored* windows only: a window whose target holds
# any NaN (a gap, or a series that starts late) is left out entirely, never scored as 0 or
# inf. ``valid_windows`` says which windows those are; ``ForecastScorer`` counts the rest.
# Here ``forecast`` is ``[N, H, Q]``, ``target`` ``[N, H]`` and ``levels`` the grid ``[Q]``.
# Scores are returned as 0-d tensors (curves as 1-d tensors) and keep autograd intact.


def valid_windows(target: torch.Tensor) -> torch.Tensor:
    """``[N]`` mask of windows that can be scored: no NaN anywhere in their target."""
    return ~torch.isnan(torch.as_tensor(target)).any(dim=-1)


def _check(forecast: torch.Tensor, target: torch.Tensor | None, levels: torch.Tensor | None) -> None:
    if forecast.dim() != 3:
        raise ValueError(f"forecast must be [N, H, Q], got shape {tuple(forecast.shape)}")
    if target is not None and target.shape != forecast.shape[:2]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match forecast [N, H] "
                         f"= {tuple(forecast.shape[:2])}")
    if levels is not None and levels.shape != forecast.shape[-1:]:
        raise ValueError(f"levels shape {tuple(levels.shape)} does not match forecast Q = {forecast.shape[-1]}")


def _float(x) -> torch.Tensor:
    """Tensor view of array-likes; integer forecasts are promoted so means are exact shares."""
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _prepare(forecast, target, levels=None, series_idx=None):
    """Tensors on the forecast's device, shapes checked, NaN-target windows dropped."""
    f = _float(forecast)
    y = torch.as_tensor(target, dtype=f.dtype, device=f.device)
    lv = None if levels is None else torch.as_tensor(levels, dtype=f.dtype, device=f.device)
    _check(f, y, lv)
    keep = valid_windows(y)
    s = None
    if series_idx is not None:
        s = torch.as_tensor(series_idx, device=f.device).long()
        if s.shape != f.shape[:1]:
            raise ValueError(f"series_idx shape {tuple(s.shape)} does not match N = {f.shape[0]}")
        s = s[keep]
    return f[keep], y[keep], lv, s


def _forecast_only(forecast, target=None):
    """Forecast restricted to scored windows when a target is given (scores that ignore y)."""
    f = _float(forecast)
    if target is None:
        _check(f, None, None)
        return f
    return _prepare(f, target)[0]


def quantile_at(forecast: torch.Tensor, levels: torch.Tensor, value: float) -> torch.Tensor:
    """Forecast ``[..., H]`` at level ``value``: the grid's own column when ``value`` is on it,
    else linear between the neighbouring levels (see ``level_bracket``)."""
    lo, hi, w = level_bracket(levels, value)
    if lo == hi:
        return forecast[..., lo]
    return torch.lerp(forecast[..., lo], forecast[..., hi], w)


def _interval(forecast: torch.Tensor, levels: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of the central ``p`` interval, at levels ``(1-p)/2`` and ``(1+p)/2``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"interval probability p must be in (0, 1), got {p}")
    return quantile_at(forecast, levels, (1.0 - p) / 2.0), quantile_at(forecast, levels, (1.0 + p) / 2.0)


def crps(forecast, target, levels) -> torch.Tensor:
    """CRPS in data units: 2 x mean pinball over levels, windows and horizon.

    Same convention as ``scoringrules.crps_quantile`` (Berrisch & Ziel): on a fine uniform
    grid it tends to the CRPS of the predictive distribution.
    """
    f, y, lv, _ = _prepare(forecast, target, levels)
    return 2.0 * pinball_loss(f, y, lv).mean()


def crps_normalised(forecast, target, levels, series_idx) -> torch.Tensor:
    """Scale-free CRPS in %: 100 x 2 x mean over series of (mean pinball / mean |y|).

    Each series weighs the same whatever its scale or number of windows. Series with no
    scored window, or whose mean |y| is 0 (ratio undefined), are left out.
    """
    f, y, lv, s = _prepare(forecast, target, levels, series_idx)
    num = int(s.max()) + 1 if s.numel() else 0
    # Windows share H and Q, so the mean of per-window means is the series mean.
    pin_s = torch.zeros(num, dtype=f.dtype, device=f.device).index_add_(0, s, pinball_loss(f, y, lv).mean(dim=(1, 2)))
    abs_s = torch.zeros(num, dtype=f.dtype, device=f.device).index_add_(0, s, y.abs().mean(dim=1))
    keep = abs_s > 0
    return 200.0 * (pin_s[keep] / abs_s[keep]).mean()


def coverage(forecast, target, levels, p: float) -> torch.Tensor:
    """Share of targets inside the closed interval [q_(1-p)/2, q_(1+p)/2].

    Bounds off the grid (0.025 and 0.975 on the 99-level grid) are interpolated linearly
    between neighbouring levels; bounds outside the grid's span raise ``ValueError``.
    """
    f, y, lv, _ = _prepare(forecast, target, levels)
    lo, hi = _interval(f, lv, p)
    inside = (y >= lo) & (y <= hi)
    return inside.to(f.dtype).mean()


def interval_width(forecast, levels, p: float, target=None) -> torch.Tensor:
    """Mean width q_(1+p)/2 - q_(1-p)/2 (data units); with ``target``, over scored windows only."""
    f = _forecast_only(forecast, target)
    lv = torch.as_tensor(levels, dtype=f.dtype, device=f.device)
    _check(f, None, lv)
    lo, hi = _interval(f, lv, p)
    return (hi - lo).mean()


def _share_below(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Strictly below: a target equal to its forecast does not count (matters for ties, e.g. zeros)."""
    return (y.unsqueeze(-1) < f).to(f.dtype).mean(dim=(0, 1))


def reliability(forecast, target, levels) -> torch.Tensor:
    """``[Q]`` observed share of targets strictly below each level's forecast (ideal: the level)."""
    f, y, _, _ = _prepare(forecast, target, levels)
    return _share_below(f, y)


def marfe(forecast, target, levels) -> torch.Tensor:
    """Mean absolute reliability error: mean over levels of |share of targets below q's forecast - q|."""
    f, y, lv, _ = _prepare(forecast, target, levels)
    return (_share_below(f, y) - lv).abs().mean()


def _median(forecast, target, levels) -> tuple[torch.Tensor, torch.Tensor]:
    f, y, lv, _ = _prepare(forecast, target, levels)
    return quantile_at(f, lv, 0.5), y


def mape(forecast, target, levels) -> torch.Tensor:
    """MAPE (%) of the q=0.5 forecast; targets with |y| == 0 are left out (the ratio is undefined).

    The median is the grid's 0.5 column, or interpolated when the grid lacks 0.5.
    """
    fm, y = _median(forecast, target, levels)
    nz = y != 0
    return 100.0 * ((fm - y).abs()[nz] / y.abs()[nz]).mean()


def smape(forecast, target, levels) -> torch.Tensor:
    """sMAPE (%) of the q=0.5 forecast: 200 x mean |f - y| / (|f| + |y|); a 0/0 term counts as 0 (exact)."""
    fm, y = _median(forecast, target, levels)
    denom = fm.abs() + y.abs()
    ratio = torch.where(denom > 0, (fm - y).abs() / torch.where(denom > 0, denom, 1.0), 0.0)
    return 200.0 * ratio.mean()


def crossing_rate(forecast, target=None) -> torch.Tensor:
    """Share of adjacent level pairs whose forecast decreases (levels ascending along Q)."""
    f = _forecast_only(forecast, target)
    return (f[..., 1:] < f[..., :-1]).to(f.dtype).mean()


def crps_by_horizon(forecast, target, levels) -> torch.Tensor:
    """``[H]`` CRPS per horizon step: how skill decays with lead time."""
    f, y, lv, _ = _prepare(forecast, target, levels)
    return 2.0 * pinball_loss(f, y, lv).mean(dim=(0, 2))


def pinball_by_level(forecast, target, levels) -> torch.Tensor:
    """``[Q]`` mean pinball loss per level (not doubled): where in the distribution the error sits."""
    f, y, lv, _ = _prepare(forecast, target, levels)
    return pinball_loss(f, y, lv).mean(dim=(0, 1))


def per_window_crps(forecast, target, levels) -> torch.Tensor:
    """``[N]`` CRPS of each window, aligned with the input for paired tests between models.

    Windows that cannot be scored are NaN (not dropped), so two models scored on the same
    windows stay aligned; drop them with ``valid_windows`` before testing.
    """
    f = _float(forecast)
    y = torch.as_tensor(target, dtype=f.dtype, device=f.device)
    lv = torch.as_tensor(levels, dtype=f.dtype, device=f.device)
    _check(f, y, lv)
    per_window = 2.0 * pinball_loss(f, y, lv).mean(dim=(1, 2))
    return torch.where(valid_windows(y), per_window, torch.nan)
