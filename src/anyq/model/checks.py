"""The model's settings checked without torch: each network's constructor runs its part's
check, and config validation runs them all (:func:`check_model_config`) without building a
network, so a bad setting is refused before torch is imported. The options of the string
settings are declared here; the numeric ranges in :mod:`anyq.model.config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from anyq.errors import SettingError
from anyq.model.config import AttentionConfig, BackboneConfig, OutputConfig, SamplerConfig
from anyq.settings import check_choice, check_settings

#: ``model.backbone.conditioning``: how the level enters each block (concatenated, or FiLM).
CONDITIONINGS = ("cat", "film")
#: ``model.sampler.kind`` and ``model.sampler.signal`` (anyq.model.sampler).
KINDS = ("adaptive", "uniform")
SIGNALS = ("raw", "relative", "calibration")
#: ``model.monotone``: sort the quantiles over a grid of levels, or leave them as they come.
MONOTONE = ("rearrange", "none")
#: ``model.conformal``: none, split conformal per level, or split conformal as the seed of the
#: online calibration (anyq.model.online).
CONFORMAL = ("none", "per_level", "online")
#: ``model.scaler`` values: how each window is put on the normalised scale
#: (:func:`anyq.model.forecaster.location_scale`).
SCALERS = ("max_abs", "mean_abs", "level", "robust", "standard")


def check_model_config(model: Mapping[str, Any], history_length: int, horizon_length: int) -> None:
    """Every check :func:`forecaster_from_config` would make, without building the networks:
    unknown keys, the backbone kind, each part's ranges (the same functions the constructors
    run) and the forecaster's own settings (:func:`check_output`). ValueError naming the setting."""
    backbone, sampler, attention = checked_settings(model["backbone"], model["sampler"], model["attention"])
    check_backbone(history_length, horizon_length, **without(backbone, "kind"))
    check_sampler(**without(sampler))
    if attention.enabled:
        check_attention(history_length, horizon_length, **without(attention, "enabled", "modulation"))
    defaults = OutputConfig()  # a model section of an older config lacks the newer settings
    check_output(**{f.name: model.get(f.name, getattr(defaults, f.name)) for f in fields(OutputConfig)})


def check_output(monotone: str, monotone_grid: int, conformal: str, online_gamma: float, scaler: str) -> None:
    """The forecaster's own settings (:class:`anyq.model.config.OutputConfig`): the options of
    ``model.monotone``, ``model.conformal`` and ``model.scaler``, the ranges of
    ``model.monotone_grid`` and ``model.online_gamma``. SettingError (a ValueError) naming the key."""
    check_choice("model.monotone", monotone, MONOTONE)
    check_choice("model.conformal", conformal, CONFORMAL)
    check_choice("model.scaler", scaler, SCALERS)
    check_online_gamma(online_gamma)
    check_grid(monotone_grid)


def check_online_gamma(gamma: float) -> None:
    """SettingError (a ValueError) unless ``model.online_gamma`` lies in its declared range
    (:class:`anyq.model.config.OutputConfig`) and is a finite number."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise SettingError(f"model.online_gamma={gamma!r} must be a finite number >= 0", ("model.online_gamma",))
    check_settings(OutputConfig, {"online_gamma": gamma}, "model.", only={"online_gamma"})


def checked_settings(
    backbone: BackboneConfig | Mapping[str, Any],
    sampler: SamplerConfig | Mapping[str, Any],
    attention: AttentionConfig | Mapping[str, Any],
) -> tuple[BackboneConfig, SamplerConfig, AttentionConfig]:
    backbone_cfg = _settings(BackboneConfig, backbone, "model.backbone")
    if backbone_cfg.kind != "nbeats_aq":
        raise SettingError(f"model.backbone.kind={backbone_cfg.kind!r} is not supported; use 'nbeats_aq'",
                           ("model.backbone.kind",))
    return (backbone_cfg, _settings(SamplerConfig, sampler, "model.sampler"),
            _settings(AttentionConfig, attention, "model.attention"))


_Settings = TypeVar("_Settings", BackboneConfig, SamplerConfig, AttentionConfig)


def _settings(cls: type[_Settings], values: _Settings | Mapping[str, Any], prefix: str) -> _Settings:
    if isinstance(values, cls):
        return values
    given = dict(values)
    allowed = sorted(f.name for f in fields(cls))
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(f'{prefix}.{k}' for k in unknown)}; allowed: {allowed}")
    return cls(**given)


def without(settings: BackboneConfig | SamplerConfig | AttentionConfig, *names: str) -> dict[str, Any]:
    """The dataclass as constructor keywords, less the fields that select rather than configure."""
    return {f.name: getattr(settings, f.name) for f in fields(settings) if f.name not in names}


def check_backbone(history_length: int, horizon_length: int, num_blocks: int, num_layers: int, layer_width: int,
                   conditioning: str, dropout: float) -> None:
    """The ``model.backbone.*`` and window-length checks (ValueError naming the key); :class:`NBeatsAQ`
    runs them, and config validation runs them without building one."""
    _check_positive("data.", history_length=history_length, horizon_length=horizon_length)
    check_settings(BackboneConfig, dict(num_blocks=num_blocks, num_layers=num_layers, layer_width=layer_width,
                                        dropout=dropout), "model.backbone.", only=_BACKBONE_RANGED)
    check_choice("model.backbone.conditioning", conditioning, CONDITIONINGS)


_BACKBONE_RANGED = {"num_blocks", "num_layers", "layer_width", "dropout"}


def _check_positive(prefix: str, **values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"{prefix}{key}={value} must be a positive integer")


def check_sampler(kind: str, num_adaptive_quantiles: int, num_bins: int, momentum: float, temperature: float,
                  min_prob: float, signal: str) -> None:
    """The ``model.sampler.*`` range checks (ValueError naming the key); :class:`QuantileSampler`
    runs them, and config validation runs them without building one."""
    check_choice("model.sampler.kind", kind, KINDS)
    check_choice("model.sampler.signal", signal, SIGNALS)
    check_settings(SamplerConfig, dict(num_adaptive_quantiles=num_adaptive_quantiles, num_bins=num_bins,
                                       momentum=momentum, temperature=temperature, min_prob=min_prob),
                   "model.sampler.", only=_SAMPLER_RANGED)
    if not 0.0 <= min_prob * num_bins <= 1.0:
        raise SettingError(
            f"model.sampler.min_prob={min_prob} times model.sampler.num_bins={num_bins} must lie in [0, 1]",
            ("model.sampler.min_prob", "model.sampler.num_bins"),
        )


_SAMPLER_RANGED = {"num_adaptive_quantiles", "num_bins", "momentum", "temperature", "min_prob"}


def check_attention(
    history_length: int,
    horizon_length: int,
    patch_length: int,
    d_model: int,
    n_heads: int,
    num_blocks: int,
    d_ff: int,
    dropout: float,
    adaptive_temp: float,
) -> None:
    """The ``model.attention.*`` checks, patch length against the window lengths included
    (ValueError naming the key); :class:`AdaptiveAttention` runs them, and config validation
    runs them without building one."""
    check_settings(AttentionConfig, dict(patch_length=patch_length, d_model=d_model, n_heads=n_heads,
                                         num_blocks=num_blocks, d_ff=d_ff, dropout=dropout,
                                         adaptive_temp=adaptive_temp), "model.attention.", only=_ATTENTION_RANGED)
    if d_model % n_heads:
        raise SettingError(f"model.attention.d_model={d_model} is not divisible by model.attention.n_heads={n_heads}",
                           ("model.attention.d_model", "model.attention.n_heads"))
    for name, length in (("history_length", history_length), ("horizon_length", horizon_length)):
        if length % patch_length:
            raise SettingError(f"data.{name}={length} is not divisible by "
                               f"model.attention.patch_length={patch_length}",
                               (f"data.{name}", "model.attention.patch_length"))


_ATTENTION_RANGED = {"patch_length", "d_model", "n_heads", "num_blocks", "d_ff", "dropout", "adaptive_temp"}


def check_grid(num_levels: int) -> None:
    """``model.monotone_grid`` needs two levels at least (ValueError)."""
    if num_levels < 2:
        raise SettingError(f"model.monotone_grid={num_levels} must be >= 2", ("model.monotone_grid",))
