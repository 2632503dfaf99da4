"""Config of the ``anyq_grid`` sweeper: Hydra's basic-sweeper ``params`` plus a study name."""

from dataclasses import dataclass
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore

from anyq.training.config_tree import BASELINE_VARIANT


@dataclass
class AnyqGridSweeperConf:
    _target_: str = "hydra_plugins.anyq_grid_sweeper.sweeper.AnyqGridSweeper"
    study_name: str = "ablation"
    experiment: Optional[str] = None  # MLflow experiment; default: the study name
    params: Optional[Dict[str, str]] = None
    max_batch_size: Optional[int] = None
    first: Optional[str] = f"model={BASELINE_VARIANT}"  # cells run first (the others compare to them)
    fresh: bool = False  # a new parent run each time (the main job) instead of resuming the study


ConfigStore.instance().store(group="hydra/sweeper", name="anyq_grid", node=AnyqGridSweeperConf,
                             provider="anyq")
