"""Online conformal calibration per quantile level: quantile tracking with delayed feedback.

Split conformal (:mod:`anyq.model.conformal`) fixes one offset per level on the validation
windows; when the error distribution moves after them (a new season, a noisier regime) the
offset is wrong for the rest of the test. Forecasting is a rolling job: at each origin the
errors of the earlier origins are known, so the offset can learn from them. For each level
``q_k`` of the rearrangement grid and each series, the offset ``delta`` (units of the
window's scale, like the split-conformal one) follows online subgradient descent on the
pinball loss, the quantile tracker of conformal PID control (Angelopoulos, Candes &
Tibshirani 2023, "Conformal PID Control for Time Series Prediction", eq. 2; the level-space
form is adaptive conformal inference, Gibbs & Candes 2021):

    delta_{t+1,k} = delta_{t,k} + eta_k * (q_k - c_{t,k})
    c_{t,k}       = share of the target hours of origin t with  r <= delta_{t,k}
    r             = (y - f_k(x)) / scale(x)                the window's normalised residuals
    eta           = gamma * (r50_(0.95) - r50_(0.05))

``delta_{t,k}`` is the offset the forecast issued at ``t`` used, so each origin contributes
``eta * (q - c_t)`` once its error is known. Feedback is delayed: a window issued at origin
``t`` is fully observed only at ``t + H`` (``H`` = horizon hours), so the forecast at origin
``u`` uses exactly the windows with ``t + H <= u`` (with daily origins and ``H = 48`` the
latest is ``u - 48 h``). The state starts at the split-conformal offsets (the seed) and runs
per series; ``gamma`` is dimensionless: the step as a share of the 90 % spread of the median
forecast's normalised residuals on the calibration windows (``r50``, kept beside the seed as
``conformal.spread``), so one ``gamma`` fits series of any scale and noise.
The long-run share of covered hours tends to ``q_k`` for any bounded error sequence
(Angelopoulos et al. 2023, Prop. 1), shift or not. Offsets are added before the
rearrangement, so a monotone model stays monotone.
"""

from __future__ import annotations

import torch

#: The step is a share of the median forecast's residual spread between these levels.
SPREAD_LEVELS = (0.05, 0.95)


def interpolate_offsets(grid: torch.Tensor, offsets: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Offsets ``[..., K]`` on the levels ``grid [K]`` read at levels ``q [..., Q]`` (same leading
    shape, or ``q`` broadcast against it): linear in ``Phi^-1(q)`` between grid levels, the end
    values beyond the grid. Returns ``[..., Q]``."""
    grid = grid.to(q.dtype)
    zg, zq = torch.special.ndtri(grid), torch.special.ndtri(q)
    k = grid.numel()
    hi = torch.searchsorted(zg, zq.contiguous()).clamp_(1, k - 1)
    lo = hi - 1
    weight = ((zq - zg[lo]) / (zg[hi] - zg[lo])).clamp_(0.0, 1.0)
    offsets = offsets.to(q.dtype)
    if offsets.dim() == 1:
        return offsets[lo] + weight * (offsets[hi] - offsets[lo])
    offsets = offsets.expand(*q.shape[:-1], k)
    low, high = offsets.gather(-1, lo), offsets.gather(-1, hi)
    return low + weight * (high - low)


def residual_spread(residuals: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The 90 % spread (levels :data:`SPREAD_LEVELS`) of the residuals ``[M, K]`` at the grid
    level nearest 0.5 (a scalar): the error scale the online step is a share of."""
    median = residuals[:, int(torch.argmin((grid - 0.5).abs()))].double()
    lo, hi = torch.quantile(median, torch.tensor(SPREAD_LEVELS, dtype=torch.float64, device=median.device))
    return (hi - lo).clamp_min(0.0)


@torch.no_grad()
def online_offsets(
    residual: torch.Tensor,
    series: torch.Tensor,
    origin: torch.Tensor,
    horizon: int,
    grid: torch.Tensor,
    seed: torch.Tensor,
    step: float,
) -> torch.Tensor:
    """The offsets ``[N, K]`` each window's forecast uses, from the errors of earlier windows only.

    Args:
        residual: ``[N, H, K]`` normalised residuals ``(y - f_k) / scale``; NaN where the target
            is unknown (such hours do not count; a window with none known updates nothing).
            Window ``i``'s residuals are read only once ``origin[i] + horizon`` has passed, so
            the offsets of a window do not depend on its own target or any later one.
        series: ``[N]`` series index (each series keeps its own state).
        origin: ``[N]`` issue time of each window in hours (its first target hour).
        horizon: hours until a window's target is fully observed (``H``).
        grid: ``[K]`` the levels of the offsets.
        seed: ``[K]`` the starting offsets (split conformal).
        step: ``eta`` on the normalised scale (``gamma`` times :func:`residual_spread`); 0 keeps
            the seed.

    Raises:
        ValueError: mismatched shapes, a negative or non-finite ``step``, or ``horizon < 1``.
    """
    k = grid.numel()
    if residual.dim() != 3 or residual.shape[-1] != k or seed.shape != grid.shape:
        raise ValueError(f"residual must be [N, H, K={k}] and seed [K], got "
                         f"{tuple(residual.shape)} and {tuple(seed.shape)}")
    n = residual.shape[0]
    if series.shape != (n,) or origin.shape != (n,):
        raise ValueError(f"series and origin must be [N={n}], got {tuple(series.shape)} and {tuple(origin.shape)}")
    step = float(step)
    if not 0.0 <= step < float("inf"):
        raise ValueError(f"step must be a finite number >= 0, got {step}")
    if horizon < 1:  # a window would see its own target
        raise ValueError(f"horizon must be >= 1 hour, got {horizon}")
    device = residual.device
    dtype = torch.float64
    grid64 = grid.to(device, dtype)
    seed64 = seed.to(device, dtype)
    out = seed64.expand(n, k).clone()
    if n == 0 or step == 0.0:
        return out.to(seed.dtype)
    origin_cpu = origin.detach().cpu().long()
    order_cpu = torch.argsort(origin_cpu, stable=True)
    origin_sorted = origin_cpu[order_cpu]
    order = order_cpu.to(device)
    _, slot = torch.unique(series.to(device), return_inverse=True)
    state = seed64.expand(int(slot.max()) + 1, k).clone()
    increments = torch.zeros(n, k, dtype=dtype, device=device)
    released = 0  # windows [0, released) of `order` have entered the state
    starts = torch.unique_consecutive(origin_sorted, return_counts=True)
    begin = 0
    for u, count in zip(starts[0].tolist(), starts[1].tolist()):
        # errors of windows fully observed by origin u (origin + H <= u; all issued before u)
        stop = int(torch.searchsorted(origin_sorted, torch.tensor(u - horizon), right=True))
        if stop > released:
            done = order[released:stop]
            state.index_add_(0, slot[done], increments[done])
            released = stop
        now = order[begin:begin + count]
        out[now] = state[slot[now]]
        r = residual[now].to(dtype)  # [B, H, K]
        known = torch.isfinite(r)
        covered = ((r <= out[now].unsqueeze(1)) & known).sum(dim=1).to(dtype)
        cells = known.sum(dim=1).to(dtype)
        share = torch.where(cells > 0, covered / cells.clamp_min(1.0), grid64)  # no target: no update
        increments[now] = step * (grid64 - share)
        begin += count
    return out.to(seed.dtype)
