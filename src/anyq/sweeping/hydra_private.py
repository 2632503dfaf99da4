"""The parts of Hydra (pinned: hydra-core 1.3.8) that anyq needs and that are not public.

Each function wraps one private name, and ``tests/test_private_apis.py`` pins what it does,
so an upgrade that moves one breaks that test, not a sweeper.

- :func:`job_error`: what a failed job raised. ``JobReturn.return_value`` re-raises it and
  writes "Error executing job ..." to stderr; the sweepers only record it.
- :func:`config_node`: the typed node behind a config key (OmegaConf, Hydra's config
  library, 2.3), which says ``int`` even where the value is missing or None.
- :func:`command_line`: a command line read as ``@hydra.main`` reads it (its flags, then the
  overrides), so the overrides can be checked before Hydra starts.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn
from omegaconf import Container, Node


def job_error(result: JobReturn) -> Any:
    """The exception a FAILED job stored (its return value for any other status)."""
    return result._return_value


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
