"""The recipe a run or a study trained under (:mod:`anyq.training.recipe`), as MLflow tags.

Every run carries ``recipe`` (the preset's name) and ``recipe_hash``; a study's parent run
carries both too and keeps the settings in ``recipe.json``, so a report, ``make confirm``
and a reader of the MLflow UI can tell which recipe a number came from.
"""

from __future__ import annotations

from typing import Optional

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from anyq.tracking.runs import while_store_busy
from anyq.training.recipe import recipe_hash, recipe_name, recipe_settings

RECIPE_TAG = "recipe"  # the preset's name (experiment=...), "default" without one
RECIPE_HASH_TAG = "recipe_hash"  # anyq.training.recipe.recipe_hash
RECIPE_ARTIFACT = "recipe.json"


def hydra_choices(cfg: Optional[DictConfig] = None) -> dict[str, Optional[str]]:
    """Hydra's group choices: ``cfg.hydra.runtime.choices`` when ``cfg`` holds them (a sweeper's
    composed config), else the running job's; empty outside a Hydra app."""
    if cfg is not None and "hydra" in cfg:
        return dict(cfg.hydra.runtime.choices)
    from hydra.core.hydra_config import HydraConfig

    try:
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:
        return {}


def recipe_tags(cfg: DictConfig, name: Optional[str] = None) -> dict[str, str]:
    """``recipe`` and ``recipe_hash`` of ``cfg``. The name: ``name``, else the one
    ``tracking.tags.recipe`` states (a confirm run keeps its sweep's), else the preset Hydra chose."""
    stated = OmegaConf.select(cfg, f"tracking.tags.{RECIPE_TAG}", default=None)
    return {RECIPE_TAG: name or stated or recipe_name(hydra_choices(cfg)), RECIPE_HASH_TAG: recipe_hash(cfg)}


def record_recipe(client: MlflowClient, run_id: str, cfg: DictConfig, name: Optional[str] = None) -> dict[str, str]:
    """Tag ``run_id`` (a study's parent) with the recipe of ``cfg`` and log its settings as
    ``recipe.json``; returns the tags."""
    tags = recipe_tags(cfg, name)
    for key, value in tags.items():
        while_store_busy(lambda: client.set_tag(run_id, key, value))
    client.log_dict(run_id, {"name": tags[RECIPE_TAG], "hash": tags[RECIPE_HASH_TAG],
                             "settings": recipe_settings(cfg)}, RECIPE_ARTIFACT)
    return tags
