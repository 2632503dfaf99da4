"""MLflow's own source tags, so the UI's Source column shows the entry point and git commit."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from mlflow.entities import SourceType
from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_DIRTY,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)


def entry_point() -> str:
    """The command that runs (``anyq-train``, ``anyq-report``, ...), not the interpreter."""
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "anyq"


def source_tags(commit: str) -> dict[str, str]:
    """``mlflow.source.*`` and ``mlflow.user`` for a run; ``commit`` as from
    :func:`anyq.tracking.runs.git_commit` (``<sha>[-dirty]`` or ``unknown``)."""
    tags = {
        MLFLOW_SOURCE_NAME: entry_point(),
        MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL),
        MLFLOW_USER: os.environ.get("USER") or _user(),
    }
    if commit and commit != "unknown":
        tags[MLFLOW_GIT_COMMIT] = commit.removesuffix("-dirty")
        tags[MLFLOW_GIT_DIRTY] = str(commit.endswith("-dirty")).lower()
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
