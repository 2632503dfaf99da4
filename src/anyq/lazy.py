"""Package attributes that load their module on first use (PEP 562).

``anyq.data``, ``anyq.metrics`` and ``anyq.model`` name their public classes and functions this
way, so that the settings which type the config (and so the command-line check of
``anyq-train``) import without pandas or torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``where[name]`` and returns its
    ``name``; AttributeError for a name ``where`` does not hold."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return __getattr__
