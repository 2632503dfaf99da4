"""Config of the ``anyq_ray`` launcher (``hydra/launcher=anyq_ray``; presets in conf/hydra/launcher/).

- ``address``: what ``ray.init`` joins: ``auto`` (the cluster ``ray start`` made on this
  machine), ``host:port`` (a head elsewhere), or null (start a Ray of this machine only).
- ``num_cpus`` / ``num_gpus``: what one trial asks for; null derives them from the trial's
  config: ``trainer.num_threads`` CPUs (1 when unset; Ray then sets ``OMP_NUM_THREADS=1``)
  and ``trainer.devices`` GPUs when ``trainer.accelerator`` is ``gpu``/``cuda`` (else 0).
- ``check_resources``: refuse, in one line, a trial no live node can hold (Ray itself
  would wait forever); off for an autoscaling cluster that adds nodes on demand.
- ``env_vars``: variables handed from this shell to every task when set (the study storage,
  the tracking server, libpq's password file), so remote workers need no exports.
- ``init``: more ``ray.init`` keyword arguments (e.g. ``num_cpus`` for a Ray started here).

Ray's own task retries are always off (``max_retries=0``): a trial whose worker dies is
retried by anyq's sweep engine, with the same parameters, once per loss.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class AnyqRayLauncherConf:
    _target_: str = "hydra_plugins.anyq_ray_launcher.launcher.AnyqRayLauncher"
    address: Optional[str] = "auto"
    num_cpus: Optional[float] = None
    num_gpus: Optional[float] = None
    check_resources: bool = True
    env_vars: List[str] = field(default_factory=lambda: [
        "MLFLOW_TRACKING_URI", "ANYQ_OPTUNA_STORAGE", "PGPASSFILE", "ANYQ_ROOT"])
    init: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/launcher", name="anyq_ray_base", node=AnyqRayLauncherConf,
                             provider="anyq")
