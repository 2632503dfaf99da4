"""Where the project's config tree lives, where runs and reports go, and the commands that read
them back from here, for the entry points and the tests."""

from __future__ import annotations

from pathlib import Path

from anyq.training.config_tree import config_dir, project_root, work_root

__all__ = ["config_dir", "project_root", "report_hint", "ui_hint", "work_root"]


def report_hint(name: str, root: str | Path, kind: str = "experiment") -> str:
    """The command that reports the ``kind`` (``experiment`` or ``study``) ``name`` of the store
    under ``root`` (``paths.root``), typed where this command was started: with ``ANYQ_ROOT``
    when a reader started here would look elsewhere (:func:`work_root`), and the ``make`` form
    only for the checkout's store, the one ``make`` reads."""
    root = Path(root).resolve()
    command = f"anyq-report --{kind} {name}"
    if root != work_root():
        command = f"ANYQ_ROOT={root} {command}"
    if root == project_root():
        command += f"   (make report {kind.upper()}={name})"
    return command


def ui_hint(uri: str) -> str:
    """How to browse the store ``uri`` in MLflow's UI: ``make ui`` for the checkout's store,
    else MLflow's own command."""
    if uri == f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}":
        return "make ui  (http://127.0.0.1:5000)"
    return f"mlflow ui --backend-store-uri {uri}"
