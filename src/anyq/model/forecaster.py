"""Any-quantile forecaster: NBEATS-AQ backbone, quantile sampler, optional adaptive attention.

The named variants (``conf/model/*.yaml``, read by ``anyq.training.config_tree``) differ only
in two switches (sampler kind, attention and its modulation), so every ablation changes
exactly one thing (docs/design.md §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from anyq.metrics.functional import pinball_loss
from anyq.model.attention import AdaptiveAttention
from anyq.model.backbone import NBeatsAQ
from anyq.model.checks import check_output, checked_settings, without
from anyq.model.config import (
    CONFORMAL_DEFAULT,
    MONOTONE_DEFAULT,
    MONOTONE_GRID_DEFAULT,
    ONLINE_GAMMA_DEFAULT,
    SCALER_DEFAULT,
    AttentionConfig,
    BackboneConfig,
    SamplerConfig,
)
from anyq.model.conformal import ConformalOffsets
from anyq.model.monotone import (
    interpolate_sorted,
    is_grid,
    rearrangement_grid,
    sort_levels,
)
from anyq.model.online import interpolate_offsets
from anyq.model.sampler import QuantileSampler

#: A window whose history is all zeros keeps scale 1 (as the authors' code does) rather than a
#: tiny epsilon, which would blow the normalised target, and hence the loss, up.
_MIN_SCALE = 1e-12
#: MAD / this is the normal's standard deviation (the robust scaler's fallback for a flat window).
_MAD_TO_STD = 0.6744897501960817

#: ``(window, level)`` rows per network call when evaluating on the CPU (``forward_normalised``):
#: 1,024 measured fastest of 256-51,200 for both variants on 39 and 99 levels.
EVAL_CHUNK_ROWS = 1024


def location_scale(history: torch.Tensor, scaler: str = SCALER_DEFAULT) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window location and scale ``([N, 1], [N, 1])`` of ``history [N, L]`` (data units).

    ``max_abs`` (the authors'): location 0, scale max ``|history|``. ``mean_abs``: location 0,
    scale the mean of ``|history|`` (the window's level; one spike moves it by its share of the
    window, where it sets ``max_abs`` alone). ``level``: location the mean, scale the mean of
    ``|history|``, so the networks read the window as deviations from its mean in shares of its
    level (scale-equivariant, not shift-equivariant; a spike moves the scale by its share of the
    window, where it moves ``standard``'s by its square). ``robust`` (neuralforecast's
    ``robust`` scaler, ``robust_statistics``): location the median, scale the median absolute
    deviation from it, or the standard deviation x 0.6745 where the MAD is 0. ``standard``
    (neuralforecast's ``standard`` scaler, ``std_statistics``): location the mean, scale the
    standard deviation (Bessel-corrected, as ``torch.std``). Every scale is 1 where it would be 0
    (an all-zero or flat window).
    """
    if scaler == "standard":
        loc = history.mean(dim=-1, keepdim=True)
        scale = history.std(dim=-1, keepdim=True)
    elif scaler == "level":
        loc = history.mean(dim=-1, keepdim=True)
        scale = history.abs().mean(dim=-1, keepdim=True)
    elif scaler == "mean_abs":
        loc = torch.zeros_like(history[..., :1])
        scale = history.abs().mean(dim=-1, keepdim=True)
    elif scaler == "robust":
        loc = history.median(dim=-1, keepdim=True).values
        scale = (history - loc).abs().median(dim=-1, keepdim=True).values
        scale = torch.where(scale > _MIN_SCALE, scale, history.std(dim=-1, keepdim=True) * _MAD_TO_STD)
    else:
        loc = torch.zeros_like(history[..., :1])
        scale = history.abs().amax(dim=-1, keepdim=True)
    return loc, torch.where(scale > _MIN_SCALE, scale, torch.ones_like(scale))


class AnyQuantileForecaster(nn.Module):
    """Forecasts any set of levels per window; data units in, data units out.

    Each window is put on a normalised scale before the networks see it, ``(history - loc) /
    scale`` (``model.scaler``: ``max_abs``, the authors', divides by max ``|history|``; ``level``
    centres on the mean and divides by the mean ``|history|``; ``robust``
    centres on the median and divides by the MAD, ``standard`` on the mean and divides by the
    standard deviation: :func:`location_scale`), and the forecast is
    mapped back. The training loss is computed on that normalised scale: it is the pinball loss
    relative to the window's scale (like the authors' ``MQNLoss``), so large series do not
    dominate the gradient and the sampler's bin losses are comparable across series.

    ``monotone="rearrange"`` (:mod:`anyq.model.monotone`) makes every forecast
    non-decreasing in the level: ``forward`` reads the rearranged curve of a fixed grid of
    ``monotone_grid`` levels at the requested levels, and ``training_loss`` sorts the
    forecasts of each window's drawn levels. ``monotone="none"`` forecasts each level as the
    networks do (they may cross).

    ``conformal="per_level"`` adds split-conformal offsets (:mod:`anyq.model.conformal`),
    fitted after training on validation windows, to the networks' forecasts before the
    rearrangement; ``calibrated=False`` in ``forward`` leaves them out. ``conformal="online"``
    fits the same offsets as the seed of the online calibration (:mod:`anyq.model.online`,
    step ``online_gamma``), whose per-window offsets ``[N, K]`` on the rearrangement grid are
    passed to ``forward`` as ``grid_offsets``; without them it forecasts as ``per_level``.
    """

    def __init__(
        self,
        backbone: NBeatsAQ,
        sampler: QuantileSampler,
        attention: AdaptiveAttention | None = None,
        monotone: str = MONOTONE_DEFAULT,
        monotone_grid: int = MONOTONE_GRID_DEFAULT,
        conformal: str = CONFORMAL_DEFAULT,
        online_gamma: float = ONLINE_GAMMA_DEFAULT,
        scaler: str = SCALER_DEFAULT,
    ) -> None:
        super().__init__()
        check_output(monotone, monotone_grid, conformal, online_gamma, scaler)
        self.backbone = backbone
        self.sampler = sampler
        self.attention = attention
        self.monotone = monotone
        self.register_buffer("monotone_levels", rearrangement_grid(monotone_grid), persistent=False)
        self.conformal = ConformalOffsets(self.monotone_levels) if conformal != "none" else None
        self.conformal_mode = conformal
        self.online_gamma = float(online_gamma)
        self.scaler = scaler

    def scale_of(self, history: torch.Tensor) -> torch.Tensor:
        """Per-window scale ``[N, 1]`` of ``history [N, L]`` (:func:`location_scale`)."""
        return location_scale(history, self.scaler)[1]

    def normalise(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x [N, L], loc [N, 1], scale [N, 1])``: the history on the normalised scale,
        ``x = (history - loc) / scale``, and what maps a forecast back (:meth:`denormalise`)."""
        loc, scale = location_scale(history, self.scaler)
        return (history - loc) / scale, loc, scale

    @staticmethod
    def denormalise(out: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """A normalised forecast ``[N, H, Q]`` in data units: ``out * scale + loc``."""
        return out * scale.unsqueeze(-1) + loc.unsqueeze(-1)

    @property
    def calendar_features(self) -> int:
        """Per-hour calendar features the model takes (0: none; :mod:`anyq.data.calendar`)."""
        return self.backbone.calendar_features

    def forward_normalised(
        self, x: torch.Tensor, q: torch.Tensor, calendar: torch.Tensor | None = None,
        chunk_rows: int | None = EVAL_CHUNK_ROWS,
    ) -> torch.Tensor:
        """Forecast ``[N, H, Q]`` on the normalised scale from a normalised history ``x [N, L]``
        (and the window's calendar ``[N, L + H, F]`` if the model takes one), each level as the
        networks give it (no rearrangement).

        Evaluated without gradients on the CPU, the windows go through the networks in chunks of
        about ``chunk_rows`` ``(window, level)`` rows (:data:`EVAL_CHUNK_ROWS`; None: one call):
        every row is computed on its own, so the forecast is the same, and activations that fit
        the CPU's caches make a 99-level pass over 512 windows 1.7-2.3x faster (docs/design.md,
        "Evaluation in chunks").
        """
        n, num_q = q.shape
        step = n if chunk_rows is None else max(1, chunk_rows // max(1, num_q))
        recording = self.attention is not None and self.attention.record_attention
        if n <= step or torch.is_grad_enabled() or x.device.type != "cpu" or recording:
            return self._networks(x, q, calendar)
        chunks = range(0, n, step)
        return torch.cat([self._networks(x[i:i + step], q[i:i + step],
                                         None if calendar is None else calendar[i:i + step]) for i in chunks])

    def _networks(self, x: torch.Tensor, q: torch.Tensor, calendar: torch.Tensor | None) -> torch.Tensor:
        """The backbone's forecast plus the attention's correction, ``[N, H, Q]`` (normalised)."""
        base = self.backbone(x, q, calendar)
        if self.attention is None:
            return base
        w = self.sampler.importance(q)
        return base + self.attention(x, base, q, w, calendar)

    def offsets(
        self, q: torch.Tensor, calibrated: bool = True, grid_offsets: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Conformal offsets ``[N, 1, Q]`` (normalised scale) to add at levels ``q [N, Q]``:
        ``grid_offsets [N, K]`` (per window, on the rearrangement grid; the online calibration's)
        when given, else the fitted ones; None without either or when ``calibrated`` is False."""
        if not calibrated:
            return None
        if grid_offsets is not None:
            return interpolate_offsets(self.monotone_levels, grid_offsets, q).unsqueeze(-2)
        if self.conformal is None:
            return None
        return self.conformal.at(q).unsqueeze(-2)

    def rearranged_normalised(
        self, x: torch.Tensor, q: torch.Tensor, calendar: torch.Tensor | None = None, calibrated: bool = True,
        grid_offsets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(monotone forecast, raw forecast at q or None)`` on the normalised scale.

        The raw forecast (the networks' own, uncalibrated) comes for free when ``q`` is the
        rearrangement grid (then the monotone one is its sort); otherwise it is not computed.
        """
        grid = self.monotone_levels.to(x.dtype)
        on_grid_q = is_grid(q, grid)
        raw = self.forward_normalised(x, q if on_grid_q else grid.expand(x.shape[0], -1), calendar)
        shifted = raw
        offsets = self.offsets(grid.expand(x.shape[0], -1), calibrated, grid_offsets)
        if offsets is not None:
            shifted = raw + offsets
        ordered = shifted.sort(dim=-1).values
        if on_grid_q:
            return ordered, raw
        return interpolate_sorted(ordered, grid, q), None

    def forward(
        self,
        history: torch.Tensor,
        q: torch.Tensor,
        calendar: torch.Tensor | None = None,
        raw: bool = False,
        calibrated: bool = True,
        grid_offsets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``history [N, L]``, ``q [N, Q]`` (``calendar [N, L + H, F]`` for a model with calendar
        inputs) -> forecast ``[N, H, Q]``, in data units.

        Monotone in ``q`` and conformally calibrated (where the model has a calibration, or
        with per-window ``grid_offsets [N, K]``) unless the model was built without them,
        ``calibrated`` is False, or ``raw`` asks for the networks' own forecast of each level.
        """
        x, loc, scale = self.normalise(history)
        if raw:
            out = self.forward_normalised(x, q, calendar)
        elif self.monotone == "none":
            out = self.forward_normalised(x, q, calendar)
            offsets = self.offsets(q, calibrated, grid_offsets)
            if offsets is not None:
                out = out + offsets
        else:
            out = self.rearranged_normalised(x, q, calendar, calibrated, grid_offsets)[0]
        return self.denormalise(out, loc, scale)

    def forward_with_raw(
        self, history: torch.Tensor, q: torch.Tensor, calendar: torch.Tensor | None = None, calibrated: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forecast, raw forecast)`` in data units: what ``forward`` returns, and the networks'
        own per-level forecast (one evaluation when ``q`` is the rearrangement grid)."""
        x, loc, scale = self.normalise(history)
        if self.monotone == "none":
            raw = self.forward_normalised(x, q, calendar)
            offsets = self.offsets(q, calibrated)
            out = raw if offsets is None else raw + offsets
        else:
            out, raw = self.rearranged_normalised(x, q, calendar, calibrated)
            if raw is None:
                raw = self.forward_normalised(x, q, calendar)
        return self.denormalise(out, loc, scale), self.denormalise(raw, loc, scale)

    def calibrate_raw(self, history: torch.Tensor, raw: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The calibrated forecast ``[N, H, Q]`` (data units) from the raw forecast at ``q`` —
        without running the networks again; ``q`` must be the rearrangement grid for a
        monotone model."""
        scale = self.scale_of(history).unsqueeze(-1)
        offsets = self.offsets(q)
        out = raw if offsets is None else raw + offsets * scale
        if self.monotone == "none":
            return out
        if not is_grid(q, self.monotone_levels.to(q.dtype)):
            raise ValueError("calibrate_raw of a monotone model needs the rearrangement grid")
        return out.sort(dim=-1).values

    @property
    def keys_with_defaults(self) -> tuple[str, ...]:
        """State-dict keys this model fills in itself when a checkpoint lacks them (the
        calibration's buffers, :attr:`ConformalOffsets.DEFAULTED`)."""
        if self.conformal is None:
            return ()
        return tuple(f"conformal.{name}" for name in ConformalOffsets.DEFAULTED)

    @property
    def online_step(self) -> float:
        """The online calibration's step ``eta`` (normalised scale): ``online_gamma`` times the
        fitted residual spread; 0 without a fitted calibration."""
        if self.conformal is None:
            return 0.0
        return self.online_gamma * float(self.conformal.spread)

    def shift_normalised(self, raw: torch.Tensor, grid_offsets: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The calibrated forecast ``[N, H, Q]`` (normalised scale) from the raw forecast on the
        rearrangement grid ``raw [N, H, K]`` and per-window offsets ``grid_offsets [N, K]``, read
        at levels ``q [N, Q]``: shifted, then rearranged (monotone model). ValueError for a
        model with ``monotone=none`` asked for levels off the grid (its raw forecast there is
        not in ``raw``)."""
        grid = self.monotone_levels.to(raw.dtype)
        shifted = raw + grid_offsets.to(raw.dtype).unsqueeze(-2)
        if is_grid(q, grid):
            return shifted if self.monotone == "none" else shifted.sort(dim=-1).values
        if self.monotone == "none":
            raise ValueError("a model with monotone=none is calibrated online on its grid levels only")
        return interpolate_sorted(shifted.sort(dim=-1).values, grid, q)

    @torch.no_grad()
    def grid_forecasts(self, batches) -> dict[str, torch.Tensor]:
        """The networks' own forecasts on the rearrangement grid for every window of ``batches``
        (dicts with ``history [B, L]``, ``target [B, H]``, ``series_idx``, ``origin`` and, for a
        calendar model, ``calendar``), in batch order: ``raw [N, H, K]`` and ``residual [N, H, K]``
        (``(target - loc) / scale - raw``, NaN where the target is) on the normalised scale, ``loc
        [N, 1]`` and ``scale [N, 1]`` (:meth:`denormalise`), ``target [N, H]``, ``series_idx [N]``, ``origin [N]``. Empty input: N = 0."""
        was_training = self.training
        self.eval()
        grid = self.monotone_levels
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("raw", "residual", "loc", "scale", "target",
                                                                "series_idx", "origin")}
        for batch in batches:
            history, target = batch["history"], batch["target"]
            x, loc, scale = self.normalise(history)
            raw = self.forward_normalised(x, grid.to(history.dtype).expand(history.shape[0], -1),
                                          batch.get("calendar"))
            parts["raw"].append(raw)
            parts["residual"].append(((target - loc) / scale).unsqueeze(-1) - raw)
            parts["loc"].append(loc)
            parts["scale"].append(scale)
            parts["target"].append(target)
            parts["series_idx"].append(batch["series_idx"])
            parts["origin"].append(batch["origin"])
        self.train(was_training)
        if not parts["raw"]:
            k = grid.numel()
            return {"raw": torch.zeros(0, 0, k), "residual": torch.zeros(0, 0, k), "loc": torch.zeros(0, 1), "scale": torch.zeros(0, 1),
                    "target": torch.zeros(0, 0), "series_idx": torch.zeros(0, dtype=torch.long),
                    "origin": torch.zeros(0, dtype=torch.long)}
        return {k: torch.cat(v) for k, v in parts.items()}

    @torch.no_grad()
    def fit_conformal(self, batches) -> torch.Tensor:
        """Fit the conformal offsets on calibration windows: ``batches`` yields dicts with
        ``history [B, L]``, ``target [B, H]`` (and ``calendar``); windows with a NaN target are
        left out. Returns the offsets ``[K]``; ValueError for a model without ``conformal``."""
        if self.conformal is None:
            raise ValueError("this model was built with model.conformal=none")
        was_training = self.training
        self.eval()
        grid = self.monotone_levels
        residuals = []
        for batch in batches:
            history, target = batch["history"], batch["target"]
            keep = torch.isfinite(target).all(dim=1)
            if not keep.any():
                continue
            history, target = history[keep], target[keep]
            calendar = batch.get("calendar")
            calendar = calendar[keep] if calendar is not None else None
            x, loc, scale = self.normalise(history)
            raw = self.forward_normalised(x, grid.to(history.dtype).expand(history.shape[0], -1), calendar)
            residuals.append((((target - loc) / scale).unsqueeze(-1) - raw).reshape(-1, grid.numel()))
        self.train(was_training)
        if not residuals:
            raise ValueError("no calibration window with a complete target")
        return self.conformal.fit(torch.cat(residuals))

    def training_loss(
        self,
        history: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
        calendar: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw levels, forecast, score, and feed the per-level losses back to the sampler.

        Returns ``(loss, q [N, Q], per_level_loss [N, Q])``: the scalar to back-propagate,
        the drawn levels (sorted per window when monotone) and the detached pinball loss per
        (window, level), averaged over the horizon on the normalised scale. The sampler also
        receives the share of target hours below each forecast (its calibration signal).
        """
        q = self.sampler.sample(history.shape[0], generator=generator).to(history.dtype)
        x, loc, scale = self.normalise(history)
        forecast = self.forward_normalised(x, q, calendar)
        if self.monotone != "none":
            q, forecast = sort_levels(q, forecast)
        y = ((target - loc) / scale).unsqueeze(-1)
        per_level = pinball_loss(forecast, y.squeeze(-1), q).mean(dim=-2)
        per_level_detached = per_level.detach()
        below = (y < forecast.detach()).to(forecast.dtype).mean(dim=-2)
        self.sampler.update(q, per_level_detached, below)
        return per_level.mean(), q, per_level_detached


def build_forecaster(
    history_length: int,
    horizon_length: int,
    backbone: BackboneConfig | Mapping[str, Any],
    sampler: SamplerConfig | Mapping[str, Any],
    attention: AttentionConfig | Mapping[str, Any],
    monotone: str = MONOTONE_DEFAULT,
    monotone_grid: int = MONOTONE_GRID_DEFAULT,
    calendar_features: int = 0,
    conformal: str = CONFORMAL_DEFAULT,
    online_gamma: float = ONLINE_GAMMA_DEFAULT,
    calendar_holiday: bool = True,
    scaler: str = SCALER_DEFAULT,
) -> AnyQuantileForecaster:
    """Assemble a forecaster from the ``model.backbone``, ``model.sampler`` and
    ``model.attention`` settings (dataclasses of :mod:`anyq.model.config`, or mappings, plain
    or OmegaConf, whose missing keys take the dataclass defaults) and ``model.monotone``.

    ValueError for a key the dataclass does not declare or a backbone kind other than
    ``nbeats_aq`` (and the networks' own range checks).
    """
    backbone_cfg, sampler_cfg, attention_cfg = checked_settings(backbone, sampler, attention)
    module = None
    if attention_cfg.enabled:
        module = AdaptiveAttention(history_length, horizon_length, calendar_features=calendar_features,
                                   **without(attention_cfg, "enabled"))
    return AnyQuantileForecaster(
        backbone=NBeatsAQ(history_length, horizon_length, calendar_features=calendar_features,
                          calendar_holiday=calendar_holiday, **without(backbone_cfg, "kind")),
        sampler=QuantileSampler(**without(sampler_cfg)),
        attention=module,
        monotone=monotone,
        monotone_grid=monotone_grid,
        conformal=conformal,
        online_gamma=online_gamma,
        scaler=scaler,
    )


def forecaster_from_config(
    model: Mapping[str, Any], history_length: int, horizon_length: int, calendar_features: int = 0,
    calendar_holiday: bool = True,
) -> AnyQuantileForecaster:
    """The forecaster of a ``model`` config section (``backbone``, ``sampler``, ``attention``,
    ``monotone``, ``monotone_grid``, ``conformal``, ``online_gamma``, ``scaler``; ``variant`` is a name only): the one place
    training (``anyq.training.builders``) and serving (``anyq.serving.bundle``) build it.
    ``calendar_features`` per-hour calendar inputs, the last the holiday flag when
    ``calendar_holiday`` (``CalendarSpec.network_inputs``)."""
    return build_forecaster(
        history_length,
        horizon_length,
        backbone=model["backbone"],
        sampler=model["sampler"],
        attention=model["attention"],
        monotone=model.get("monotone", MONOTONE_DEFAULT),
        monotone_grid=model.get("monotone_grid", MONOTONE_GRID_DEFAULT),
        calendar_features=calendar_features,
        conformal=model.get("conformal", CONFORMAL_DEFAULT),
        online_gamma=model.get("online_gamma", ONLINE_GAMMA_DEFAULT),
        calendar_holiday=calendar_holiday,
        scaler=model.get("scaler", SCALER_DEFAULT),
    )
