"""Trials as Ray tasks: compose each trial's config here, run it on the cluster, and return
the job's ``JobReturn``; :class:`WorkerLost` when its worker, raylet or node died mid-trial;
:class:`TrialConfigError` when it asks for more than any live node has.

Ray's public API (``ray.init``, ``ray.remote``, ``ray.get``, ``ray.nodes``), not
hydra-ray-launcher, which pins ``cloudpickle<3`` against the project's constraints, always
passes ``object_store_memory`` to ``ray.init`` (refused when joining a cluster) and leaves
Ray's task retries on. Ray is imported lazily: plugin discovery works without it.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from anyq.errors import ConfigError, TrialConfigError, WorkerLost, first_line

log = logging.getLogger(__name__)
GPU_ACCELERATORS = ("gpu", "cuda")


def trial_resources(cfg: DictConfig, num_cpus: Optional[float], num_gpus: Optional[float]) -> Dict[str, float]:
    """What one trial asks Ray for: the launcher's numbers, else what its trainer will use."""
    trainer = cfg.trainer
    if num_cpus is None:
        num_cpus = float(trainer.num_threads or 1)
    if num_gpus is None:
        num_gpus = 0.0
        if str(trainer.accelerator).lower() in GPU_ACCELERATORS:
            devices = trainer.devices
            num_gpus = float(len(devices)) if OmegaConf.is_list(devices) or isinstance(devices, list) \
                else float(devices) if isinstance(devices, int) and devices > 0 else 1.0
    return {"CPU": float(num_cpus), "GPU": float(num_gpus)}


def unplaceable(request: Dict[str, float], nodes: Sequence[Dict[str, Any]]) -> Optional[str]:
    """Why no live node can hold ``request`` (one line), or None if one can."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if any(all(res.get(k, 0.0) >= v for k, v in request.items() if v > 0) for res in alive):
        return None
    largest = max(alive, key=lambda r: (r.get("CPU", 0.0), r.get("GPU", 0.0)), default={})
    return (f"no Ray node can run a trial asking for {request['CPU']:g} CPU and {request['GPU']:g} GPU "
            f"({len(alive)} live node(s), the largest has {largest.get('CPU', 0.0):g} CPU and "
            f"{largest.get('GPU', 0.0):g} GPU): lower trainer.num_threads (or hydra.launcher.num_cpus/"
            f"num_gpus), or add a node")


def anyq_trial(hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction,
               singleton_state: Dict[Any, Any]) -> JobReturn:
    """One trial on a Ray worker (the worker's process title reads ``ray::anyq_trial``)."""
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def lost_worker_errors() -> tuple[type, ...]:
    import ray.exceptions as rex

    return (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError, rex.ObjectLostError,
            rex.OutOfMemoryError)


class AnyqRayLauncher(Launcher):
    def __init__(self, address: Optional[str], num_cpus: Optional[float], num_gpus: Optional[float],
                 check_resources: bool, env_vars: List[str], init: Dict[str, Any]) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.check_resources = check_resources
        self.env_vars = list(env_vars)
        self.init_kwargs = OmegaConf.to_container(init, resolve=True) if OmegaConf.is_config(init) else dict(init)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None
        self._compose_lock = threading.Lock()
        self._in_flight: set[Any] = set()  # ObjectRefs of the tasks now running

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    # ----------------------------------------------------------------- cluster
    def connect(self) -> None:
        """Join (or start) Ray once per process. Raises ConfigError for an impossible ``init``."""
        import ray

        if ray.is_initialized():
            return
        kwargs = dict(self.init_kwargs)
        if self.address and kwargs.get("object_store_memory") is not None:
            raise ConfigError("hydra.launcher.init.object_store_memory applies only to a Ray started here "
                              "(hydra.launcher.address=null); a running cluster sets it at `ray start`")
        kwargs.pop("object_store_memory", None) if self.address else None
        env = {k: os.environ[k] for k in self.env_vars if os.environ.get(k)}
        runtime_env = dict(kwargs.pop("runtime_env", {}) or {})
        runtime_env["env_vars"] = {**env, **runtime_env.get("env_vars", {})}
        log.info("Ray: joining %s", self.address or "a new local instance")
        try:
            ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=False,
                     configure_logging=False, **kwargs)
        except ConnectionError as exc:
            raise ConfigError(f"no Ray cluster at hydra.launcher.address={self.address}: "
                              f"{first_line(exc)}") from None

    def preflight(self, cfg: DictConfig) -> None:
        """Before the first trial: the cluster answers and a node can hold a trial of ``cfg``.

        Raises ConfigError, one line."""
        import ray

        self.connect()
        if self.check_resources:
            reason = unplaceable(trial_resources(cfg, self.num_cpus, self.num_gpus), ray.nodes())
            if reason:
                raise ConfigError(reason)

    # ------------------------------------------------------------------ launch
    def _sweep_config(self, overrides: Sequence[str], idx: int) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        with self._compose_lock:  # the sweep engine launches from several threads
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
            cfg.hydra.job.num = idx
        return cfg

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        assert self.config is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        self.connect()
        refs = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            cfg = self._sweep_config(overrides, idx)
            request = trial_resources(cfg, self.num_cpus, self.num_gpus)
            if self.check_resources:
                reason = unplaceable(request, ray.nodes())
                if reason:
                    raise TrialConfigError(reason)
            log.info("Ray task #%d (%g CPU, %g GPU): %s", idx, request["CPU"], request["GPU"],
                     " ".join(filter_overrides(overrides)))
            remote = ray.remote(anyq_trial).options(num_cpus=request["CPU"], num_gpus=request["GPU"],
                                                    max_retries=0, retry_exceptions=False)
            ref = remote.remote(self.hydra_context, cfg, self.task_function, Singleton.get_state())
            self._in_flight.add(ref)
            refs.append(ref)
        return [self._result(ref, overrides) for ref, overrides in zip(refs, job_overrides)]

    def _result(self, ref: Any, overrides: Sequence[str]) -> JobReturn:
        import ray

        try:
            return ray.get(ref)
        except lost_worker_errors() as exc:
            ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
            ret.return_value = WorkerLost(first_line(exc, with_type=True))
            return ret
        finally:
            self._in_flight.discard(ref)

    def stop_jobs(self) -> None:
        """End the running trials' worker processes (the sweep was interrupted)."""
        import ray

        for ref in list(self._in_flight):
            ray.cancel(ref, force=True)
