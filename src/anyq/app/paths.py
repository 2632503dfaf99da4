"""Where the project's config tree lives, for the entry points and the tests."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout holding ``conf/``: ``ANYQ_ROOT`` if set, else the source tree's root."""
    if os.environ.get("ANYQ_ROOT"):
        return Path(os.environ["ANYQ_ROOT"]).resolve()
    return Path(__file__).resolve().parents[3]


def config_dir() -> str:
    return str(Path(os.environ.get("ANYQ_CONFIG_DIR", project_root() / "conf")).resolve())
