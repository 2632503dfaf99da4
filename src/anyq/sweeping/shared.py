"""The settings every trial or cell of a study shares, checked once before anything is launched.

A study's trials differ only in the searched keys (an Optuna search space, a grid's varying
overrides); the rest (data, budget, evaluation, device, ...) is the same for all of them. A
setting of that rest that cannot work would fail every trial the same way, so it refuses the
study before a trial, a study or a parent run exists. The searched keys are each trial's own
business: a trial whose values cannot work is FAIL and the study goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf

from anyq.sweeping.hydra_private import is_joblib_launcher, runs_in_process
from anyq.training.builders import validate_config
from anyq.training.schema import ConfigError

_ABSENT = object()


def check_shared(configs: Sequence[DictConfig], searched: Iterable[str], *, here: bool) -> None:
    """Validate ``configs`` (composed points of the study: its base, a cell, each end of the
    space) and raise the first error that names only settings no trial changes.

    ``here``: the jobs run on this machine (its files and accelerator are theirs), as in
    :func:`anyq.training.builders.validate_config`. An error naming a searched setting, or
    naming no setting, is left to the trials.

    Raises:
        ConfigError: one line, from a setting every trial shares.
    """
    searched = [key.lstrip("+~") for key in searched]
    for cfg in configs:
        if any(OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT for key in searched):
            return  # a searched group outside the config's keys (e.g. experiment=): it may change anything
        try:
            validate_config(cfg, here=here)
        except ConfigError as exc:
            if exc.keys and not any(_related(key, named) for key in searched for named in exc.keys):
                raise


def _related(searched: str, named: str) -> bool:
    """``model`` covers ``model.attention.n_heads``; ``data.split`` and ``data.split.train_end`` meet."""
    return searched == named or named.startswith(searched + ".") or searched.startswith(named + ".")


def jobs_run_here(launcher: Launcher) -> bool:
    """Whether ``launcher`` runs its jobs on this machine (Hydra's basic launcher, joblib's
    processes), so that this machine's files and accelerator are the jobs'. Launchers that
    place jobs elsewhere check what they need in their own ``preflight``."""
    return runs_in_process(launcher) or is_joblib_launcher(launcher)
