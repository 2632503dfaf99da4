"""A job config composed as ``anyq-train`` composes it, for benchmarks that call the library."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def compose_job(overrides: Sequence[str], output_dir: Path):
    """The resolved job config for ``overrides`` with its outputs under ``output_dir``
    (checkpoints in ``output_dir/checkpoints``); Hydra's globals are left cleared."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from anyq.app.paths import config_dir
    from anyq.training.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.checkpoints = str(output_dir / "checkpoints")
        del cfg["hydra"]
    GlobalHydra.instance().clear()
    return cfg
