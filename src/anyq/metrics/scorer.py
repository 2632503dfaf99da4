"""Streaming scorer: the section-3 scores accumulated batch by batch.

Used inside validation/test loops and on stored forecasts. ``update`` only adds into
sufficient statistics kept on the inputs' device (no ``.item()``, no host sync), so it costs
a few reductions per batch; ``compute`` does the single transfer. The results equal the
functions of ``anyq.metrics.functional`` applied to the concatenated batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from anyq.metrics.functional import pinball_loss
from anyq.metrics.levels import level_bracket


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    # float64 sums keep a long test year exact enough; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


class ForecastScorer:
    """Accumulates CRPS, normalised CRPS, coverage, width, MARFE, MAPE, sMAPE and crossing rate.

    Conventions (shared with ``anyq.metrics.functional``): windows with any NaN in their
    target are skipped and counted in ``n_skipped``; every score is over scored windows only.
    Interval bounds and the median that fall between grid levels (0.025 and 0.975 on the
    99-level grid) are interpolated linearly; bounds outside the grid raise ``ValueError``
    at construction. MAPE leaves out targets with |y| == 0; a 0/0 sMAPE term counts as 0;
    the normalised CRPS leaves out series without scored windows or with mean |y| == 0.
    Series indices are checked against ``num_series`` only for CPU inputs (checking device
    tensors would force a host sync on every batch).
    """

    def __init__(self, levels, num_series: int, coverage_levels: Sequence[float] = (0.9, 0.95)) -> None:
        grid = torch.as_tensor(levels).detach().reshape(-1).to("cpu", torch.float64)
        if grid.numel() == 0 or bool(((grid <= 0) | (grid >= 1)).any()):
            raise ValueError("levels must be a non-empty grid inside (0, 1)")
        if bool((grid[1:] <= grid[:-1]).any()):
            raise ValueError("levels must be strictly increasing (the crossing rate compares neighbours)")
        if int(num_series) < 1:
            raise ValueError(f"num_series must be >= 1, got {num_series}")
        self.levels = grid
        self.num_series = int(num_series)
        self.coverage_levels = tuple(float(p) for p in coverage_levels)
        for p in self.coverage_levels:
            if not 0.0 < p < 1.0:
                raise ValueError(f"coverage level must be in (0, 1), got {p}")
        # Levels read off the grid, in this order: interval lower bounds, upper bounds, median.
        reads = [(1.0 - p) / 2.0 for p in self.coverage_levels] + [(1.0 + p) / 2.0 for p in self.coverage_levels]
        brackets = [level_bracket(grid, v) for v in [*reads, 0.5]]
        self._read_lo = torch.tensor([b[0] for b in brackets])
        self._read_hi = torch.tensor([b[1] for b in brackets])
        self._read_w = torch.tensor([b[2] for b in brackets], dtype=torch.float64)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated (e.g. at the start of each validation epoch)."""
        self._state: dict[str, torch.Tensor] | None = None
        self._horizon: int | None = None
        self._device_constants: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def _constants_on(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Levels and read-off indices/weights on the batch's device, moved once not per batch."""
        key = (device, dtype)
        if key not in self._device_constants:
            self._device_constants[key] = (
                self.levels.to(device=device, dtype=dtype),
                self._read_lo.to(device), self._read_hi.to(device),
                self._read_w.to(device=device, dtype=dtype),
            )
        return self._device_constants[key]

    def _init_state(self, device: torch.device, horizon: int) -> None:
        dt = _accumulator_dtype(device)
        q, p, s = self.levels.numel(), len(self.coverage_levels), self.num_series

        def z(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=dt, device=device)

        self._horizon = horizon
        self._state = {
            "n_windows": z(), "n_skipped": z(),
            "pinball": z(horizon, q),  # summed over windows: gives CRPS, per-horizon and per-level curves
            "series_pinball": z(s), "series_abs": z(s),
            "below": z(q), "inside": z(p), "width": z(p),
            "ape": z(), "ape_count": z(), "sape": z(), "crossings": z(),
        }

    def update(self, forecast, target, series_idx) -> None:
        """Add one batch: ``forecast [N, H, Q]``, ``target [N, H]``, ``series_idx [N]``.

        Always in full precision: inside a mixed-precision step (Lightning's ``16-mixed`` or
        ``bf16-mixed`` wrap ``validation_step`` in ``torch.autocast``) a float32 product would
        run in half precision, and a batch's pinball sum in data units overflows float16
        (``val/crps`` inf) or keeps three digits in bfloat16.
        """
        f = torch.as_tensor(forecast).detach()
        if not torch.amp.is_autocast_available(f.device.type):  # meta tensors, for one
            return self._add(f, target, series_idx)
        with torch.autocast(f.device.type, enabled=False):
            self._add(f, target, series_idx)

    def _add(self, f: torch.Tensor, target, series_idx) -> None:
        if not f.is_floating_point():
            f = f.to(torch.get_default_dtype())
        elif f.dtype in (torch.float16, torch.bfloat16):
            f = f.float()  # per-batch sums in half precision would lose digits (mixed-precision runs)
        y = torch.as_tensor(target).detach().to(device=f.device, dtype=f.dtype)
        s = torch.as_tensor(series_idx).to(device=f.device, dtype=torch.long)
        q = self.levels.numel()
        if f.dim() != 3 or f.shape[-1] != q:
            raise ValueError(f"forecast must be [N, H, {q}], got shape {tuple(f.shape)}")
        if y.shape != f.shape[:2]:
            raise ValueError(f"target shape {tuple(y.shape)} does not match forecast [N, H] = {tuple(f.shape[:2])}")
        if s.shape != f.shape[:1]:
            raise ValueError(f"series_idx shape {tuple(s.shape)} does not match N = {f.shape[0]}")
        if s.device.type == "cpu" and s.numel() and (int(s.min()) < 0 or int(s.max()) >= self.num_series):
            raise ValueError(f"series_idx outside [0, {self.num_series})")
        if self._state is None:
            self._init_state(f.device, f.shape[1])
        if f.shape[1] != self._horizon:
            raise ValueError(f"horizon changed between batches: {self._horizon} then {f.shape[1]}")
        st = self._state
        dt = st["pinball"].dtype

        valid = ~torch.isnan(y).any(dim=-1)
        w = valid.to(dt)
        # Zero out unscored windows so their NaNs cannot leak into the sums; each statistic is
        # reduced per window first (cheap, in the input dtype) and then weighted by ``w``.
        f = torch.where(valid[:, None, None], f, 0.0)
        y = torch.where(valid[:, None], y, 0.0)
        yq = y.unsqueeze(-1)

        st["n_windows"] += w.sum()
        st["n_skipped"] += (1.0 - w).sum()
        levels, read_lo, read_hi, read_w = self._constants_on(f.device, f.dtype)
        pin = pinball_loss(f, y, levels)  # [N, H, Q]
        st["pinball"] += torch.einsum("n,nhq->hq", valid.to(f.dtype), pin).to(dt)
        st["series_pinball"].index_add_(0, s, pin.sum(dim=(1, 2)).to(dt) * w)
        st["series_abs"].index_add_(0, s, y.abs().sum(dim=1).to(dt) * w)
        st["below"] += w @ (yq < f).sum(dim=1).to(dt)

        p = len(self.coverage_levels)
        reads = torch.lerp(f[..., read_lo], f[..., read_hi], read_w)  # [N, H, 2P + 1], see level_bracket
        lo, hi, fm = reads[..., :p], reads[..., p:2 * p], reads[..., 2 * p]
        st["inside"] += w @ ((yq >= lo) & (yq <= hi)).sum(dim=1).to(dt)
        st["width"] += w @ (hi - lo).sum(dim=1).to(dt)

        err = (fm - y).abs().to(dt)
        nz = (y != 0) & valid[:, None]
        st["ape"] += torch.where(nz, err / torch.where(nz, y.abs().to(dt), 1.0), 0.0).sum()
        st["ape_count"] += nz.sum().to(dt)
        denom = (fm.abs() + y.abs()).to(dt)
        st["sape"] += w @ torch.where(denom > 0, err / torch.where(denom > 0, denom, 1.0), 0.0).sum(dim=1)
        st["crossings"] += w @ (f[..., 1:] < f[..., :-1]).sum(dim=(1, 2)).to(dt)

    def _derived(self) -> dict[str, torch.Tensor]:
        st = self._state
        q = self.levels.numel()
        cells = st["n_windows"] * self._horizon  # scored (window, step) pairs
        levels = self.levels.to(device=cells.device, dtype=cells.dtype)
        keep = st["series_abs"] > 0
        ratio = torch.where(keep, st["series_pinball"] / torch.where(keep, st["series_abs"], 1.0) / q, 0.0)
        reliability = st["below"] / cells
        return {
            "crps": 2.0 * st["pinball"].sum() / (cells * q),
            "crps_norm": 200.0 * ratio.sum() / keep.sum(),
            "coverage": st["inside"] / cells,
            "width": st["width"] / cells,
            "marfe": (reliability - levels).abs().mean(),
            "mape": 100.0 * st["ape"] / st["ape_count"],
            "smape": 200.0 * st["sape"] / cells,
            "crossing_rate": st["crossings"] / (cells * (q - 1)),
            "crps_by_horizon": 2.0 * st["pinball"].sum(dim=1) / (st["n_windows"] * q),
            "pinball_by_level": st["pinball"].sum(dim=0) / cells,
            "reliability": reliability,
        }

    def compute(self) -> dict[str, float]:
        """Scores over everything seen since ``reset``; NaN where nothing was scored."""
        keys = [f"coverage-{p:g}" for p in self.coverage_levels] + [f"width-{p:g}" for p in self.coverage_levels]
        if self._state is None:
            out = {k: float("nan") for k in ("crps", "crps_norm", *keys, "marfe", "mape", "smape", "crossing_rate")}
            return {**out, "n_windows": 0.0, "n_skipped": 0.0}
        d = self._derived()
        st = self._state
        scalars = torch.stack([d["crps"], d["crps_norm"], d["marfe"], d["mape"], d["smape"], d["crossing_rate"],
                               st["n_windows"], st["n_skipped"]])
        values = torch.cat([scalars, d["coverage"], d["width"]]).cpu().tolist()  # the one host sync
        crps_, crps_norm, marfe, mape, smape, crossing, n, skipped = values[:8]
        bands = dict(zip(keys, values[8:], strict=True))
        return {
            "crps": crps_, "crps_norm": crps_norm, **bands, "marfe": marfe, "mape": mape, "smape": smape,
            "crossing_rate": crossing, "n_windows": n, "n_skipped": skipped,
        }

    def curves(self) -> dict[str, list[float]]:
        """Per-horizon CRPS ``[H]``, per-level pinball ``[Q]`` and reliability ``[Q]`` for plots."""
        if self._state is None:
            nan_q = [float("nan")] * self.levels.numel()
            return {"crps_by_horizon": [], "pinball_by_level": nan_q, "reliability": list(nan_q)}
        d = self._derived()
        return {k: d[k].cpu().tolist() for k in ("crps_by_horizon", "pinball_by_level", "reliability")}


def score(forecast, target, levels, series_idx, num_series: int,
          coverage_levels: Sequence[float] = (0.9, 0.95)) -> dict[str, float]:
    """One-shot scores of stored forecasts, identical to streaming them through ``ForecastScorer``."""
    scorer = ForecastScorer(levels, num_series, coverage_levels)
    scorer.update(forecast, target, series_idx)
    return scorer.compute()
