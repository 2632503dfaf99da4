"""The training recipe: how a model is trained, apart from what a study compares or searches.

One recipe runs through the whole loop: the main job's preset (``experiment=cpu_demo``, what
``make run`` trains) is also the recipe of every sweep trial, ablation cell and confirm run
unless ``experiment=<other>`` is given, so a sweep's winner, an ablation's verdict and the
main job's table are measured alike. Every run and every study's parent run records it as a
name (the preset, :func:`recipe_name`) and a short hash of the settings below
(:func:`recipe_hash`); the parent also keeps the settings themselves (``recipe.json``).

The recipe is, declared once here (:data:`RECIPE_KEYS`):

- ``optim.*``: learning rate, warm-up, schedule, weight decay, the last step's share of lr;
- ``data.train_batch_size`` and ``data.calendar.*``, except ``data.calendar.inputs``, which a
  run fills in from the inputs its training range covers (the data's, not the recipe's);
- ``model.conformal``, ``model.online_gamma``, ``model.monotone``, ``model.monotone_grid``,
  ``model.scaler``: how each window is normalised, how
  forecasts are calibrated and kept monotone;
- the trainer's settings that do not depend on the budget: ``ema_decay``, ``early_stopping.*``
  (patience counts validations), ``gradient_clip_val``, ``accumulate_grad_batches``,
  ``precision``, ``deterministic``.

Not in it: the model's variant and sizes (what studies vary), the data and its windows, the
seed, the budget (:data:`BUDGET_KEYS`: a sweep cuts it, confirm restores it) and settings that
change the speed, not the numbers (``trainer.num_threads``, devices, progress, logging).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

#: The recipe's settings: a key names a setting or a whole section (``optim``: every key of it).
RECIPE_KEYS: tuple[str, ...] = (
    "optim",
    "data.train_batch_size",
    "data.calendar",
    "model.conformal",
    "model.online_gamma",
    "model.monotone",
    "model.monotone_grid",
    "model.scaler",
    "trainer.ema_decay",
    "trainer.early_stopping",
    "trainer.gradient_clip_val",
    "trainer.accumulate_grad_batches",
    "trainer.precision",
    "trainer.deterministic",
)
#: Inside a recipe section, but filled in per run from the data (anyq.training.run.settle_calendar).
DERIVED_KEYS: tuple[str, ...] = ("data.calendar.inputs",)
#: The budget: how long a recipe trains and how often it is validated.
BUDGET_KEYS: tuple[str, ...] = ("trainer.max_epochs", "trainer.max_steps", "trainer.val_check_interval")
#: The recipe's name when no preset is chosen: conf/config.yaml's own defaults.
DEFAULT_NAME = "default"
_ABSENT = object()


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    else:
        out[prefix] = value


def recipe_settings(cfg: DictConfig) -> dict[str, Any]:
    """The recipe of ``cfg`` as ``{dotted key: value}`` (resolved, sorted by key); a key the
    config lacks is left out."""
    out: dict[str, Any] = {}
    for key in RECIPE_KEYS:
        node = OmegaConf.select(cfg, key, default=_ABSENT)
        if node is _ABSENT:
            continue
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        _flatten(key, value, out)
    for key in DERIVED_KEYS:
        out.pop(key, None)
    return dict(sorted(out.items()))


def recipe_hash(cfg: DictConfig) -> str:
    """10 hex digits of SHA-256 over :func:`recipe_settings` as sorted JSON: equal for two
    configs exactly when their recipes are."""
    text = json.dumps(recipe_settings(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def recipe_name(choices: Optional[Mapping[str, Any]]) -> str:
    """The preset a config was composed with: Hydra's choice of the ``experiment`` group
    (``hydra.runtime.choices``), :data:`DEFAULT_NAME` when none was chosen."""
    chosen = (choices or {}).get("experiment")
    return str(chosen) if chosen else DEFAULT_NAME
