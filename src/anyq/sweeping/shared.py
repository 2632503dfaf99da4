"""The settings every trial or cell of a study shares, checked once before anything is launched.

A study's trials differ only in the searched keys (an Optuna search space, a grid's varying
overrides); the rest (data, budget, evaluation, device, ...) is the same for all of them. A
setting of that rest that cannot work would fail every trial the same way, so it refuses the
study before a trial, a study or a parent run exists. The searched keys are each trial's own
business: a trial whose values cannot work is FAIL and the study goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Optional

from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf

from anyq.errors import ConfigError
from anyq.interrupts import forward_to_children

_ABSENT = object()


def check_shared(configs: Sequence[DictConfig], searched: Iterable[str], *,
                 here: bool) -> Optional[list[Optional[ConfigError]]]:
    """Validate ``configs`` (composed points of the study: its base, a cell, each end of the
    space) and raise the first error that names only settings no trial changes.

    ``here``: the jobs run on this machine (its files and accelerator are theirs), as in
    :func:`anyq.training.validation.validate_config`. An error naming a searched setting, or
    naming no setting, is left to the trials.

    Returns:
        Per config, the error left to its trial (None: a valid config); None when a searched
        key is a config group, which may change anything (then no config is judged).
    Raises:
        ConfigError: one line, from a setting every trial shares.
    """
    from anyq.training.validation import validate_config  # the model's checks: not at Hydra's plugin scan

    searched = [key.lstrip("+~") for key in searched]
    left: list[Optional[ConfigError]] = []
    for cfg in configs:
        if any(OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT for key in searched):
            return None  # a searched group outside the config's keys (e.g. experiment=): it may change anything
        try:
            validate_config(cfg, here=here)
            left.append(None)
        except ConfigError as exc:
            if exc.keys and not any(_related(key, named) for key in searched for named in exc.keys):
                raise
            left.append(exc)
    return left


def _related(searched: str, named: str) -> bool:
    """``model`` covers ``model.attention.n_heads``; ``data.split`` and ``data.split.train_end`` meet."""
    return searched == named or named.startswith(searched + ".") or searched.startswith(named + ".")


def launcher_choice(config: DictConfig) -> str:
    """The ``hydra/launcher`` option the sweep runs with (``basic``, ``joblib``, ``anyq_ray``, ...)."""
    return str(OmegaConf.select(config, "hydra.runtime.choices", default={}).get("hydra/launcher", "basic"))


def runs_in_process(config: DictConfig) -> bool:
    """Hydra's basic launcher: one job at a time, in this process."""
    return launcher_choice(config) == "basic"


def runs_in_joblib(config: DictConfig) -> bool:
    """hydra-joblib-launcher: jobs in loky worker processes of this machine."""
    return launcher_choice(config) == "joblib"


def jobs_run_here(config: DictConfig) -> bool:
    """Whether the launcher runs its jobs on this machine (Hydra's basic launcher, joblib's
    processes), so that this machine's files and accelerator are the jobs'. Launchers that
    place jobs elsewhere check what they need in their own ``preflight``."""
    return launcher_choice(config) in ("basic", "joblib")


def stop_jobs(launcher: Launcher, config: DictConfig) -> None:
    """A signal's hook (:func:`anyq.interrupts.on_request`: it only sends signals): pass the
    stop on to the jobs ``launcher`` runs in other processes. joblib's workers get the signal
    and stop their jobs at a safe point (:func:`anyq.interrupts.forward_to_children`); anyq's
    Ray and Submitit launchers cancel theirs (``stop_jobs``). A job of this process stops at
    its own next safe point."""
    stop = getattr(launcher, "stop_jobs", None)
    if callable(stop):
        stop()
    elif runs_in_joblib(config):
        forward_to_children()
