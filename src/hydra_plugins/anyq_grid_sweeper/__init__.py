"""Hydra sweeper plugin ``anyq_grid``: ablation studies as an extendable grid under one MLflow parent."""

from hydra_plugins.anyq_grid_sweeper import config  # noqa: F401  (registers the config)
