"""Hydra launcher plugin ``anyq_ray``: each trial a Ray task, through Ray's public API only."""

from hydra_plugins.anyq_ray_launcher import config  # noqa: F401  (registers the config)
