"""The model's settings, declared once: the schema of ``conf/model/`` and the constructors'
defaults both come from these dataclasses (``anyq.training.schema`` builds ``ModelConfig`` from them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BackboneConfig:
    kind: str = "nbeats_aq"
    num_blocks: int = 6
    num_layers: int = 3
    layer_width: int = 256
    conditioning: str = "cat"  # "cat" or "film"
    dropout: float = 0.0


@dataclass
class SamplerConfig:
    kind: str = "adaptive"  # "adaptive" or "uniform"
    num_adaptive_quantiles: int = 3
    num_bins: int = 100
    momentum: float = 0.99
    temperature: float = 1.0
    min_prob: float = 0.002
    signal: str = "calibration"  # or "relative", or "raw" (the guide's bin loss): anyq.model.sampler, docs/experiments.md


@dataclass
class AttentionConfig:
    enabled: bool = True
    modulation: bool = True
    patch_length: int = 24
    d_model: int = 32  # CPU default: attention costs 1.7x the backbone (benchmarks/bench_model.py)
    n_heads: int = 4
    num_blocks: int = 2
    d_ff: int = 64
    dropout: float = 0.1
    adaptive_temp: float = 1.0


#: ``model.monotone`` and ``model.monotone_grid`` defaults: rearranged over levels k / (K + 1).
MONOTONE_DEFAULT = "rearrange"
MONOTONE_GRID_DEFAULT = 99
#: ``model.conformal`` default: no split-conformal offsets.
CONFORMAL_DEFAULT = "none"
#: ``model.online_gamma`` default: the online calibration's step as a share of the residuals'
#: 90 % spread (anyq.model.online; chosen in docs/design.md, "Online calibration").
ONLINE_GAMMA_DEFAULT = 0.05
