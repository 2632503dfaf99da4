"""hydra-submitit-launcher's local and SLURM launchers, telling the sweep engine which trial
lost its job.

Everything is the parent's (hydra-submitit-launcher 1.2.0): the executor, its parameters,
the job callable, ``launch`` itself. The sweep engine launches one trial per call, so what
``launch`` raises is that trial's: a job that ended without a result (killed, preempted,
its node lost: ``UncompletedJobError``, but not ``FailedJobError``, which carries an error
raised in the job) comes back as :class:`WorkerLost`, so the engine fails that trial,
retries it with the same parameters, and the sweep goes on. ``sbatch`` refusing a
submission still raises: then the launcher is broken, not the trial.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus

from anyq.errors import ConfigError, WorkerLost, first_line

try:  # optional (make env-scale-out); Hydra imports every plugin module when it starts
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
except ImportError:  # the presets that name these classes then fail to compose, saying so
    LocalLauncher = SlurmLauncher = None  # type: ignore[assignment,misc]


class _TrialJobs:
    """What anyq's two Submitit launchers add to upstream's (mixed in before it)."""

    _EXECUTOR: str

    def preflight(self, cfg: Any) -> None:
        """Before the first trial: Submitit has this executor here (SLURM: ``srun`` is on
        PATH). Raises ConfigError, one line."""
        import submitit

        try:
            submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster=self._EXECUTOR)  # type: ignore[attr-defined]
        except RuntimeError as exc:
            raise ConfigError(f"{type(self).__name__}: {first_line(exc)}") from None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        try:
            return super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]
        except FailedJobError:
            raise
        except UncompletedJobError as exc:
            (overrides,) = job_overrides  # one trial per call
            lost = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
            lost.return_value = WorkerLost(f"Submitit job ended without a result: {first_line(exc)}")
            return [lost]

    def stop_jobs(self) -> None:
        """The sweep got a signal: SIGTERM to the local job controllers (this process's
        children), which forward it to their jobs. SLURM jobs are the cluster's: ``scancel``."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # the process ended meanwhile
            if parent == os.getpid():
                try:
                    os.kill(int(stat.parent.name), signal.SIGTERM)
                except ProcessLookupError:
                    pass


if LocalLauncher is not None:

    class AnyqLocalLauncher(_TrialJobs, LocalLauncher):
        pass

    class AnyqSlurmLauncher(_TrialJobs, SlurmLauncher):
        pass
