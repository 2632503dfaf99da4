"""Config of the ``anyq_optuna`` sweeper: hydra-optuna-sweeper's vocabulary plus a few keys.

Same keys as the plugin: ``sampler`` (its ``hydra/sweeper/sampler`` options: tpe, random,
cmaes, nsgaii, motpe, grid), ``direction``, ``study_name``, ``storage``, ``n_trials``,
``n_jobs``, ``params``. Added: ``objectives`` (which job results are optimised, one per
direction), ``pruner`` (an instantiable Optuna pruner, or null), ``experiment`` (MLflow),
``heartbeat_interval``/``grace_period`` (dead-worker detection: Optuna's heartbeats) and
``max_retry`` (how often a lost trial is retried with the same parameters).
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

import hydra_plugins.hydra_optuna_sweeper.config  # noqa: F401  (registers the sampler options)


@dataclass
class AnyqOptunaSweeperConf:
    _target_: str = "hydra_plugins.anyq_optuna_sweeper.sweeper.AnyqOptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING  # filled by the sampler default (tpe); None would mask it
    direction: Any = "minimize"
    study_name: Optional[str] = None
    storage: Optional[str] = None  # default: $ANYQ_OPTUNA_STORAGE, else sqlite:///<mlruns>/optuna.db
    n_trials: int = 20
    n_jobs: int = 1
    params: Optional[Dict[str, str]] = None
    objectives: List[str] = field(default_factory=lambda: ["val/crps"])
    pruner: Optional[Any] = None
    experiment: Optional[str] = None  # MLflow experiment; default: the study name
    heartbeat_interval: int = 10
    grace_period: int = 120  # seconds without a heartbeat before a trial counts as lost
    max_retry: int = 2


ConfigStore.instance().store(group="hydra/sweeper", name="anyq_optuna", node=AnyqOptunaSweeperConf,
                             provider="anyq")
