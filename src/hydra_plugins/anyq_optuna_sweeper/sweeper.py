"""Hydra's side of the sweep engine: config in, launcher out, MLflow parent around it.

Where the study lives: ``hydra.sweeper.storage`` if given, else ``$ANYQ_OPTUNA_STORAGE``,
else ``sqlite:///<mlruns>/optuna.db``. Where runs go: ``tracking.tracking_uri``, else
``$MLFLOW_TRACKING_URI``, else ``<mlruns>/mlflow.db``. So workers on several machines that
run the same command with the same two variables join one study under one parent run.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, List, Optional

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from anyq.reporting.progress import TrialProgress, print_trials
from anyq.sweeping.engine import StudyRunner, SweepSettings, trial_link_overrides
from anyq.sweeping.locks import study_lock
from anyq.sweeping.space import grid_of, parse_search_space, quote
from anyq.sweeping.storage import redacted, resolve_storage_url
from anyq.sweeping.summary import print_summary, record_summary, summarize
from anyq.tracking.store import artifact_root, ensure_store, get_or_create_experiment, resolve_tracking_uri
from anyq.tracking.study import open_parent_run
from anyq.tracking.trials import close_trial_runs

log = logging.getLogger(__name__)


class AnyqOptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, direction: Any, study_name: Optional[str], storage: Optional[str],
                 n_trials: int, n_jobs: int, params: Optional[DictConfig], objectives: List[str],
                 pruner: Optional[Any], experiment: Optional[str], heartbeat_interval: int,
                 grace_period: int, max_retry: int) -> None:
        self.sampler = sampler
        self.directions = [str(d) for d in direction] if isinstance(direction, (list, tuple)) or \
            OmegaConf.is_list(direction) else [str(direction)]
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.params = params
        self.objectives = list(objectives)
        self.experiment = experiment
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        if len(self.objectives) != len(self.directions):
            raise ValueError(f"hydra.sweeper.objectives {self.objectives} and direction "
                             f"{self.directions} must have the same length")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: List[str]) -> None:
        space, fixed = parse_search_space(self.params, arguments)
        mlruns = str(self.config.paths.mlruns)
        study_name = self.study_name or "anyq-study"
        settings = SweepSettings(
            study_name=study_name,
            storage_url=resolve_storage_url(self.storage, mlruns),
            directions=self.directions,
            objectives=self.objectives,
            n_trials=self.n_trials,
            n_jobs=self.n_jobs,
            sampler=self._make_sampler(space),
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
            max_retry=self.max_retry,
        )
        experiment = self.experiment or study_name
        uri = resolve_tracking_uri(self.config.tracking.get("tracking_uri"), mlruns)
        client = ensure_store(uri, mlruns)
        experiment_id = get_or_create_experiment(client, experiment, artifact_root(uri, mlruns, experiment))
        runner = StudyRunner(settings, self.launcher.launch)
        progress = TrialProgress(self.n_trials, self.objectives)
        progress.start(runner.study)  # elapsed and ETA from here; earlier runs' trials not timed
        runner.on_told = progress
        with study_lock(settings.storage_url, study_name):
            parent = open_parent_run(client, experiment_id, study_name, {
                "optuna.storage": redacted(settings.storage_url),
                "optuna.directions": ",".join(self.directions),
                "optuna.objectives": ",".join(self.objectives),
                "search_space": " ".join(f"{k}={v}" for k, v in space.items())[:4000],
            })
        shared = [f"tracking.parent_run_id={parent}", f"tracking.experiment={quote(experiment)}"]
        runner.trial_overrides = lambda t: [*trial_link_overrides(settings, t), *shared]
        # a dead worker's job cannot close its run: the worker that notices closes it
        runner.on_lost = lambda number, reason: close_trial_runs(client, parent, study_name, number, reason)
        log.info("Study %s in %s: %d trials in all, MLflow %s experiment %s, parent run %s",
                 study_name, redacted(settings.storage_url), self.n_trials, redacted(uri), experiment,
                 parent)
        try:
            study = runner.run(space, fixed)
        except BaseException:
            client.set_terminated(parent, status="KILLED")
            raise
        summary = summarize(study, self.objectives)
        record_summary(client, parent, summary)
        client.set_terminated(parent, status="FINISHED")
        print_trials(study, self.objectives)
        print_summary(summary)

    def _make_sampler(self, space: dict) -> Any:
        """Hydra has instantiated the sampler already; GridSampler arrives as a partial."""
        sampler = instantiate(self.sampler) if isinstance(self.sampler, DictConfig) else self.sampler
        if isinstance(sampler, functools.partial):
            return sampler(grid_of(space))
        return sampler
