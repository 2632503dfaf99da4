"""Where the project's config tree lives, for the entry points and the tests."""

from __future__ import annotations

from anyq.training.config_tree import config_dir, project_root

__all__ = ["config_dir", "project_root"]
