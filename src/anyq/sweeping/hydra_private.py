"""The parts of Hydra (pinned: hydra-core 1.3.8) and of its joblib launcher that the sweepers
need and that are not public.

Each function wraps one private name, and ``tests/test_private_apis.py`` pins what it does,
so an upgrade that moves one breaks that test, not a sweeper.

- :func:`job_error`: what a failed job raised. ``JobReturn.return_value`` re-raises it and
  writes "Error executing job ..." to stderr; the sweepers only record it.
- :func:`runs_in_process`: the launcher is Hydra's basic one (``hydra._internal``), which
  runs one job at a time in this process.
- :func:`stop_joblib_workers`: end the loky worker processes of Hydra's joblib launcher.
- :func:`config_node`: the typed node behind a config key (OmegaConf, Hydra's config
  library, 2.3), which says ``int`` even where the value is missing or None.
- :func:`command_line`: a command line read as ``@hydra.main`` reads it (its flags, then the
  overrides), so the overrides can be checked before Hydra starts.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from omegaconf import Container, Node


def job_error(result: JobReturn) -> Any:
    """The exception a FAILED job stored (its return value for any other status)."""
    return result._return_value


def runs_in_process(launcher: Launcher) -> bool:
    """True for Hydra's basic launcher: jobs run one after the other in this process."""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    return isinstance(launcher, BasicLauncher)


def is_joblib_launcher(launcher: Launcher) -> bool:
    """True for hydra-joblib-launcher's launcher, whose jobs run in loky worker processes."""
    return type(launcher).__module__.startswith("hydra_plugins.hydra_joblib_launcher")


def stop_joblib_workers() -> None:
    """Kill the worker processes of joblib's reusable executor, if it has any, and wait until
    they are dead: loky kills them from a manager thread, and until then a job could still open
    or close a run after the engine recorded its trial lost."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


def config_node(parent: Container, key: str) -> Node:
    """The node (e.g. an ``IntegerNode``) holding ``parent[key]``; the key must exist."""
    node = parent._get_node(key)
    assert isinstance(node, Node)
    return node


def command_line(argv: Sequence[str]) -> Optional[argparse.Namespace]:
    """``argv`` parsed by Hydra's own argument parser (``overrides``, ``multirun``,
    ``config_dir``, ``help``, ...); None for flags it would refuse (Hydra says so itself)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        args, unknown = parser.parse_known_args(list(argv))
    except (argparse.ArgumentError, SystemExit):
        return None
    return None if unknown else args
