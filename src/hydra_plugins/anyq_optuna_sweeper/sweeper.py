"""Hydra's side of the sweep engine: config in, launcher out, MLflow parent around it.

Where the study lives: ``hydra.sweeper.storage`` if given, else ``$ANYQ_OPTUNA_STORAGE``,
else ``sqlite:///<mlruns>/optuna.db``. Where runs go: ``tracking.tracking_uri``, else
``$MLFLOW_TRACKING_URI``, else ``<mlruns>/mlflow.db``. So workers on several machines that
run the same command with the same two variables join one study under one parent run.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, List, Optional

from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from anyq.errors import ConfigError, DataError, SpaceError, StudyFailed, SweepRefused, first_line
from anyq.interrupts import on_request, stop_if_requested
from anyq.sweeping.engine import (
    JobObjective,
    SweepSettings,
    check_space_matches,
    check_sweep_settings,
    nothing_finished,
    open_study,
    run_study,
    trial_link_overrides,
    trials_left,
)
from anyq.sweeping.locks import study_lock
from anyq.sweeping.shared import check_shared, jobs_run_here, runs_in_process, stop_jobs
from anyq.sweeping.space import (
    corner_overrides,
    fit_space_to_config,
    grid_of,
    parent_link_overrides,
    parse_search_space,
    representative_overrides,
)
from anyq.sweeping.storage import redacted, resolve_storage_url
from anyq.sweeping.summary import summarize

log = logging.getLogger(__name__)
#: The most combinations of a search space's values composed to see that none can run (each
#: takes about 0.1 s); a larger space that cannot run fails trial by trial.
CORNERS = 64


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
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: List[str]) -> None:
        """Check the space, open the study and its parent run, run this worker's trials.

        Raises :class:`SweepRefused` (exit 2 in ``anyq-train``) when the sweeper's settings,
        the space, the settings every trial shares or the launcher cannot work, before any
        study, trial or run exists; :class:`StudyFailed` (exit 1) when trials ran and none
        finished, with the parent run closed FAILED; :class:`~anyq.errors.Terminated`
        after a signal, once the launcher's jobs are stopped, this worker's running trials
        FAIL and retried and the parent run KILLED; any other error fails the parent run.
        """
        try:
            self._sweep(arguments)
        except (ConfigError, DataError) as exc:
            raise SweepRefused(exc) from exc

    def _sweep(self, arguments: List[str]) -> None:
        # MLflow and rich load here, not when Hydra's plugin scan imports this module
        from anyq.app.paths import report_hint
        from anyq.reporting.study_progress import TrialProgress, print_summary, print_trials
        from anyq.tracking.recipe_tags import record_recipe
        from anyq.tracking.study_parent import (
            DIRECTIONS_TAG,
            OBJECTIVES_TAG,
            STORAGE_TAG,
            open_study_parent,
            record_summary,
        )
        from anyq.data.dataset import load_dataset
        from anyq.tracking.study_parent import data_identity
        from anyq.tracking.trial_runs import close_trial_runs

        check_sweep_settings({name: getattr(self, name) for name in
                              ("n_trials", "n_jobs", "heartbeat_interval", "grace_period", "max_retry")})
        space, fixed = parse_search_space(self.params, arguments)
        space, base = self._checked_space(space, fixed)
        mlruns = str(self.config.paths.mlruns)
        study_name = self.study_name or "anyq-study"
        n_jobs = self.n_jobs
        if n_jobs > 1 and runs_in_process(self.config):
            log.warning("hydra.sweeper.n_jobs=%d needs a parallel launcher (hydra/launcher=joblib, anyq_ray, "
                        "anyq_submitit_local, anyq_slurm); running one trial at a time", n_jobs)
            n_jobs = 1
        settings = SweepSettings(
            study_name=study_name,
            storage_url=resolve_storage_url(self.storage, mlruns),
            directions=self.directions,
            objectives=self.objectives,
            n_trials=self.n_trials,
            n_jobs=n_jobs,
            sampler=self._make_sampler(space),
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
            max_retry=self.max_retry,
        )
        dataset = load_dataset(base.data)  # the trials' data read once: a bad file refused before any study
        check_space_matches(open_study(settings), space)  # refused before a parent run exists
        tags = {
            STORAGE_TAG: redacted(settings.storage_url),
            DIRECTIONS_TAG: ",".join(self.directions),
            OBJECTIVES_TAG: ",".join(self.objectives),
            "search_space": " ".join(f"{k}={v}" for k, v in space.items())[:4000],
        }
        study_parent = open_study_parent(self.config.tracking.get("tracking_uri"), mlruns,
                                         self.experiment or study_name, study_name, tags,
                                         identity=data_identity(dataset),
                                         lock=study_lock(settings.storage_url, study_name))
        client, parent, experiment = study_parent.client, study_parent.run_id, study_parent.experiment
        # a lost trial's job could not close its runs: the worker that notices closes them
        on_lost = functools.partial(close_trial_runs, client, parent, study_name)
        study = open_study(settings, on_lost)
        shared = parent_link_overrides(parent, experiment)
        objective = JobObjective(self.launcher, settings, space, fixed, on_lost=on_lost,
                                 links=lambda trial: [*trial_link_overrides(settings, trial), *shared])
        progress = TrialProgress(self.n_trials, self.objectives)
        progress.start(study)  # elapsed and ETA from here; earlier runs' trials not timed
        told = threading.Lock()  # Optuna calls back from each of its threads

        def print_progress(study: Any, trial: Any) -> None:
            with told:
                progress(study, trial.number, trial.state)

        # the parent closes KILLED on a signal (once every trial of this worker is told), FAILED on an error
        with study_parent.lifecycle() as parent_run, \
                on_request(functools.partial(stop_jobs, self.launcher, self.config)):
            record_recipe(client, parent, base)  # the base config's: what the trials share
            log.info("Study %s in %s: %d trials in all, MLflow %s experiment %s, parent run %s",
                     study_name, redacted(settings.storage_url), self.n_trials, redacted(study_parent.uri),
                     experiment, parent)
            left = trials_left(study, self.n_trials)  # retries of lost trials included
            self._print_cost(base, left, settings.n_jobs, client, dataset)
            run_study(study, objective, callbacks=[print_progress])
            stop_if_requested()
            summary = summarize(study, self.objectives)
            record_summary(client, parent, summary)
            failed = nothing_finished(study)
            if failed and left <= 0:  # an earlier command's failed trials used up the total
                failed = (f"study {study_name!r} had no trial left to run: its {self.n_trials} trials "
                          f"(hydra.sweeper.n_trials) all ran before and none finished; raise "
                          f"hydra.sweeper.n_trials or start a new study (hydra.sweeper.study_name=<new name>). "
                          f"{failed}")
            parent_run.conclude("FAILED" if failed else "FINISHED", failed)
        print_trials(study, self.objectives)
        print_summary(summary)
        if failed:
            raise StudyFailed(failed)
        confirm = (f"; its best trial over seeds: anyq-confirm {study_name} --seeds 5"
                   if summary.get("best") or summary.get("pareto_front") else "; no trial completed to confirm")
        print(f"Report: {report_hint(study_name, self.config.paths.root, 'study')}{confirm}", flush=True)

    def _print_cost(self, base: DictConfig, left: int, slots: int, client: Any, dataset: Any) -> None:
        """The cost estimate of the ``left`` trials left (:mod:`anyq.sweeping.cost`), before the
        first one starts; an estimate that cannot be made is a warning, never the sweep's end."""
        from anyq.sweeping.cost import estimate  # torch and Lightning

        if left <= 0:
            return
        try:
            cost = estimate(base, left, slots, client, dataset)
        except Exception as exc:  # noqa: BLE001 - the sweep does not depend on its estimate
            log.warning("no cost estimate: %s", first_line(exc))
            return
        for line in cost.lines():
            print(line, flush=True)

    # ------------------------------------------------------------------ checks
    def _compose(self, overrides: List[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def _checked_space(self, space: dict, fixed: List[str]) -> tuple[dict, DictConfig]:
        """Before the study hands out a trial: the space fits the schema (an int key gets
        integers), every choice and both ends of every range compose, the settings no trial
        changes are valid (:func:`anyq.sweeping.shared.check_shared`), and the launcher can
        place a job of this config. Returns the space and the base config (the fixed
        overrides only). Raises :class:`SpaceError` or :class:`ConfigError`."""
        base = self._compose(fixed)
        space = fit_space_to_config(space, base)
        points = [base]
        for overrides in representative_overrides(space) or [[]]:
            try:
                points.append(self._compose([*fixed, *overrides]))
            except (ConfigCompositionException, OverrideParseException) as exc:
                cause = f" ({first_line(exc.__cause__)})" if exc.__cause__ else ""
                raise SpaceError(f"search space: {first_line(exc)}{cause}") from None
        left = check_shared(points, space, here=jobs_run_here(self.config))
        if left and len(left) > 1 and all(left[1:]):  # every point tried fails: is any valid?
            self._refuse_impossible(space, fixed, left[1])
        preflight = getattr(self.launcher, "preflight", None)
        if callable(preflight):
            preflight(base)
        return space, base

    def _refuse_impossible(self, space: dict, fixed: List[str], first: ConfigError) -> None:
        """Raise :class:`SpaceError` when no combination of every choice and both ends of every
        range (at most :data:`CORNERS` of them) is a valid config: every trial would fail the
        same way. A space with more combinations is left to its trials."""
        corners = corner_overrides(space, CORNERS)
        if corners is None:
            return
        for overrides in corners:
            left = check_shared([self._compose([*fixed, *overrides])], space, here=jobs_run_here(self.config))
            if not left or left[0] is None:
                return
        raise SpaceError(f"search space: no trial could run: none of its {len(corners)} combinations of every "
                         f"choice and both ends of every range is a valid config; {first_line(first)}")

    def _make_sampler(self, space: dict) -> Any:
        """Hydra has instantiated the sampler already; GridSampler arrives as a partial."""
        sampler = instantiate(self.sampler) if isinstance(self.sampler, DictConfig) else self.sampler
        if isinstance(sampler, functools.partial):
            return sampler(grid_of(space))
        return sampler
