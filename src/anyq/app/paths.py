"""Where the project's config tree lives, and where runs and reports go, for the entry points and the tests."""

from __future__ import annotations

from anyq.training.config_tree import config_dir, project_root, work_root

__all__ = ["config_dir", "project_root", "work_root"]
