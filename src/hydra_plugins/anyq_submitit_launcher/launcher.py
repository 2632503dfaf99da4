"""hydra-submitit-launcher's local and SLURM launchers, telling the sweep engine which trial
lost its job, and able to cancel the jobs of an interrupted sweep.

Submission is the parent's (hydra-submitit-launcher 1.2.0: the same executor parameters,
the same job callable, ``BaseSubmititLauncher.__call__``); only the wait differs. A job that
ended without a result (killed, preempted, its node lost: ``UncompletedJobError``, but not
``FailedJobError``, which carries an error raised in the job) comes back as
:class:`WorkerLost`, so the engine fails that trial, retries it once with the same
parameters, and the sweep goes on. ``sbatch`` refusing a submission still raises: then the
launcher is broken, not the trial.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from anyq.errors import first_line
from anyq.sweeping.errors import WorkerLost
from anyq.training.schema import ConfigError

log = logging.getLogger(__name__)

try:  # optional (make env-scale-out); Hydra imports every plugin module when it starts
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        BaseSubmititLauncher,
        LocalLauncher,
        SlurmLauncher,
    )
except ImportError:  # the presets that name these classes then fail to compose, saying so
    BaseSubmititLauncher = None  # type: ignore[assignment,misc]

if BaseSubmititLauncher is not None:

    class _JobsOfAnyq(BaseSubmititLauncher):
        def __init__(self, **params: Any) -> None:
            super().__init__(**params)
            self._in_flight: set[Any] = set()
            self._lock = threading.Lock()

        def __getstate__(self) -> dict:
            """Submitit pickles the launcher as the job's callable: without this side's jobs."""
            state = self.__dict__.copy()
            state.pop("_in_flight", None)
            state.pop("_lock", None)
            return state

        def _executor(self) -> Any:
            import submitit

            init_params = {"folder": self.params["submitit_folder"]}
            specific_init_keys = {"max_num_timeout"}
            init_params.update({f"{self._EXECUTOR}_{x}": y for x, y in self.params.items() if x in specific_init_keys})
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
            baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
            init_keys = specific_init_keys | {"submitit_folder"}
            executor.update_parameters(**{x if x in baseparams else f"{self._EXECUTOR}_{x}": y
                                          for x, y in self.params.items() if x not in init_keys})
            return executor

        def preflight(self, cfg: Any) -> None:
            """Before the first trial: the executor can be built here (SLURM: ``srun`` is on
            PATH). Raises ConfigError, one line."""
            try:
                self._executor()
            except RuntimeError as exc:
                raise ConfigError(f"{type(self).__name__}: {first_line(exc)}") from None

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            assert self.config is not None and len(job_overrides) > 0
            executor = self._executor()
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
            job_params: List[Any] = []
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info("Submitit '%s' job #%d : %s", self._EXECUTOR, idx, " ".join(filter_overrides(overrides)))
                job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                                   Singleton.get_state()))
            jobs = executor.map_array(self, *zip(*job_params))
            with self._lock:
                self._in_flight.update(jobs)
            return [self._result(job, overrides) for job, overrides in zip(jobs, job_overrides)]

        def _result(self, job: Any, overrides: Sequence[str]) -> JobReturn:
            from submitit.core.utils import FailedJobError, UncompletedJobError

            try:
                return job.results()[0]
            except FailedJobError:
                raise
            except UncompletedJobError as exc:
                ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
                ret.return_value = WorkerLost(f"Submitit job {job.job_id} ended without a result: "
                                              f"{first_line(exc)}")
                return ret
            finally:
                with self._lock:
                    self._in_flight.discard(job)

        def stop_jobs(self) -> None:
            """The sweep was interrupted: cancel the jobs still running."""
            with self._lock:
                jobs = list(self._in_flight)
            for job in jobs:
                job.cancel(check=False)


    class AnyqLocalLauncher(_JobsOfAnyq, LocalLauncher):
        _EXECUTOR = "local"


    class AnyqSlurmLauncher(_JobsOfAnyq, SlurmLauncher):
        _EXECUTOR = "slurm"
