"""Hydra sweeper plugin ``anyq_optuna``: anyq's Optuna engine under hydra-optuna-sweeper's vocabulary."""

from hydra_plugins.anyq_optuna_sweeper import config  # noqa: F401  (registers the config)
