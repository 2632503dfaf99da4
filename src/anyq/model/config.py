"""The model's settings, declared once: the schema of ``conf/model/`` and the constructors'
defaults both come from these dataclasses (``anyq.training.schema`` builds ``ModelConfig`` from them),
and so does each numeric setting's range (:func:`anyq.settings.ranged`), which the constructors'
checks and config validation both read."""

from __future__ import annotations

from dataclasses import dataclass

from anyq.settings import ranged


@dataclass
class BackboneConfig:
    kind: str = "nbeats_aq"
    num_blocks: int = ranged(6, ge=1)
    num_layers: int = ranged(3, ge=1)
    layer_width: int = ranged(256, ge=1)
    conditioning: str = "cat"  # "cat" or "film"
    dropout: float = ranged(0.0, ge=0, lt=1)


@dataclass
class SamplerConfig:
    kind: str = "adaptive"  # "adaptive" or "uniform"
    num_adaptive_quantiles: int = ranged(3, ge=1)
    num_bins: int = ranged(100, ge=1)
    momentum: float = ranged(0.99, ge=0, lt=1)
    temperature: float = ranged(1.0, gt=0)
    min_prob: float = ranged(0.002, ge=0)  # and min_prob x num_bins <= 1 (anyq.model.checks.check_sampler)
    signal: str = "calibration"  # or "relative", or "raw" (the guide's bin loss): anyq.model.sampler, docs/experiments.md


@dataclass
class AttentionConfig:
    enabled: bool = True
    modulation: bool = True
    patch_length: int = ranged(24, ge=1)
    d_model: int = ranged(32, ge=1)  # CPU default: a step with attention costs 1.5x the backbone-only step (make bench)
    n_heads: int = ranged(4, ge=1)
    num_blocks: int = ranged(2, ge=1)
    d_ff: int = ranged(64, ge=1)
    dropout: float = ranged(0.1, ge=0, lt=1)
    adaptive_temp: float = ranged(1.0, ge=0)


#: ``model.monotone`` and ``model.monotone_grid`` defaults: rearranged over levels k / (K + 1).
MONOTONE_DEFAULT = "rearrange"
MONOTONE_GRID_DEFAULT = 99
#: ``model.conformal`` default: no split-conformal offsets.
CONFORMAL_DEFAULT = "none"
#: ``model.online_gamma`` default: the online calibration's step as a share of the residuals'
#: 90 % spread (anyq.model.online; chosen in docs/design.md, "Online calibration").
ONLINE_GAMMA_DEFAULT = 0.05
#: ``model.scaler`` default: each window divided by its max |history| (the authors' scaling).
SCALER_DEFAULT = "max_abs"


@dataclass
class OutputConfig:
    """The forecaster's own top-level settings (``model.monotone``, ``model.monotone_grid``,
    ``model.conformal``, ``model.online_gamma``, ``model.scaler``) with their ranges; the schema's ``ModelConfig``
    extends it with the variant's name and its three parts."""

    monotone: str = MONOTONE_DEFAULT  # "rearrange" (sorted grid, anyq.model.monotone) or "none"
    monotone_grid: int = ranged(MONOTONE_GRID_DEFAULT, ge=2)  # levels k / (K + 1) the rearrangement sorts over
    # "per_level": split-conformal offsets fitted on validation (anyq.model.conformal); "online":
    # those as the seed of the online calibration from earlier origins' errors (anyq.model.online)
    conformal: str = CONFORMAL_DEFAULT
    online_gamma: float = ranged(ONLINE_GAMMA_DEFAULT, ge=0)  # online step as a share of the residuals' 90 % spread
    # "max_abs" (divide by max |history|), "mean_abs" (by mean |history|), "level" (mean, mean |history|),
    # "robust" (median and MAD) or "standard" (mean and std):
    # anyq.model.forecaster.location_scale
    scaler: str = SCALER_DEFAULT
