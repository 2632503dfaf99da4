"""Grid studies (ablations): every cell once, under one parent run; reruns add only new cells.

A cell is identified by its sorted override list. Cells with a FINISHED run under the
study's parent are skipped, so ``seed=0,1,2,3,4`` after a 3-seed study trains only the
new seeds. Baseline cells run first so that the others find them instead of training
their own.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, List, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from anyq.errors import ConfigError, DataError, StudyFailed, SweepRefused, first_line
from anyq.interrupts import forward_to_children, on_request, stop_if_requested
from anyq.sweeping.hydra_private import job_error
from anyq.sweeping.shared import check_shared, jobs_run_here, runs_in_joblib, runs_in_process
from anyq.sweeping.space import parent_link_overrides, quote

log = logging.getLogger(__name__)


def cell_key(overrides: List[str]) -> str:
    return " ".join(sorted(overrides))


def choices(override: Override) -> List[str]:
    """``key=value`` for each value of a choice sweep (``seed=0,1,2``), or the one value."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [f"{key}={override.get_value_element_as_str()}"]
    if not override.is_discrete_sweep():
        raise ConfigError(f"{key}: a grid study takes lists of values (a,b,c), not ranges or intervals")
    return [f"{key}={value}" for value in override.sweep_string_iterator()]


class AnyqGridSweeper(Sweeper):
    def __init__(self, study_name: str, experiment: Optional[str], params: Optional[DictConfig],
                 max_batch_size: Optional[int], first: Optional[str], fresh: bool = False) -> None:
        self.study_name = study_name
        self.experiment = experiment or study_name
        self.params = params or {}
        self.max_batch_size = max_batch_size
        self.first = first
        self.fresh = fresh

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def cells(self, arguments: List[str]) -> List[List[str]]:
        # the command line replaces the file's entry for a key; every combination is a cell
        cells = [list(c) for c in itertools.product(*(choices(o) for o in self._overrides(arguments).values()))]
        return sorted(cells, key=lambda c: self.first not in c)  # stable: baseline cells first

    def varying_keys(self, arguments: List[str]) -> List[str]:
        """The keys whose value differs between cells (``model``, ``seed``)."""
        return [key for key, o in self._overrides(arguments).items() if len(choices(o)) > 1]

    def _overrides(self, arguments: List[str]) -> dict[str, Override]:
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        return {o.get_key_element(): o for o in OverridesParser.create().parse_overrides(lines)}

    def sweep(self, arguments: List[str]) -> Any:
        """Run every cell not yet FINISHED under the study's parent run.

        Raises :class:`SweepRefused` (exit 2 in ``anyq-train``) when the grid cannot be read,
        a setting every cell shares cannot work or the data cannot be read, before the parent
        run is opened, or the study's parent was run on other data;
        :class:`StudyFailed` (exit 1) when cells ran and none finished, with the parent run
        closed FAILED.
        """
        from anyq.data.dataset import load_dataset  # pandas
        from anyq.tracking.study_parent import data_identity

        try:
            cells = self.cells(arguments)
            some = self._some_cell(cells)
            varying = self.varying_keys(arguments)
            check_shared(some, varying, here=jobs_run_here(self.config))
            # the cells' data read once, a bad file refused before any run; a grid over data has no one identity
            same_data = some and not any(key == "data" or key.startswith(("data.", "data_")) for key in varying)
            identity = data_identity(load_dataset(some[0].data)) if same_data else {}
            self._sweep(arguments, cells, some[0] if some else None, identity)
        except (ConfigError, DataError) as exc:
            raise SweepRefused(exc) from exc

    def _some_cell(self, cells: List[List[str]]) -> List[DictConfig]:
        """The first cell that composes (one that does not fails as its own job)."""
        for cell in cells:
            try:
                return [self.hydra_context.config_loader.load_sweep_config(self.config, list(cell))]
            except (ConfigCompositionException, OverrideParseException):
                continue
        return []

    def _sweep(self, arguments: List[str], cells: List[List[str]], cell: Optional[DictConfig],
               identity: dict[str, str]) -> None:
        # MLflow and rich load here, not when Hydra's plugin scan imports this module
        from anyq.app.paths import report_hint
        from anyq.reporting.study_progress import CellProgress
        from anyq.reporting.table import print_runs
        from anyq.tracking.readiness import record_study_readiness, untrained_runs
        from anyq.tracking.recipe_tags import record_recipe
        from anyq.tracking.runs import git_commit
        from anyq.tracking.source import source_tags
        from anyq.tracking.study_parent import CELL_TAG, STUDY_KIND_TAG, child_runs, open_study_parent

        tags = {STUDY_KIND_TAG: "grid", **source_tags(git_commit(self.config.paths.root))}
        study = open_study_parent(self.config.tracking.get("tracking_uri"), str(self.config.paths.mlruns),
                                  self.experiment, self.study_name, tags, fresh=self.fresh, identity=identity)
        client, parent = study.client, study.run_id
        done = {r.data.tags.get(CELL_TAG) for r in child_runs(client, study.run(), "FINISHED")}
        todo = [c for c in cells if cell_key(c) not in done]
        log.info("Study %s: %d cells to run, %d already finished (parent run %s)",
                 self.study_name, len(todo), len(done), parent)
        shared = parent_link_overrides(parent, self.experiment)
        # in-process launchers run one job at a time anyway: one per batch reports each cell
        sequential = runs_in_process(self.config)
        batch_size = self.max_batch_size or (1 if sequential else len(todo)) or 1
        progress = CellProgress(self.study_name, len(todo) + len(done), len(done))
        common = set.intersection(*(set(c) for c in todo)) if len(todo) > 1 else set()
        failures: list[str] = []
        # joblib's workers hear of a signal this process got, and stop their jobs at a safe point
        forward = forward_to_children if runs_in_joblib(self.config) else lambda: None
        with study.lifecycle() as parent_run, on_request(forward):  # KILLED on a signal
            if cell is not None:  # a cell's recipe (a grid over recipe keys: each run carries its own)
                record_recipe(client, parent, cell)
            for start in range(0, len(todo), batch_size):
                stop_if_requested()  # between batches: no cell is cut half-way
                batch = todo[start:start + batch_size]
                jobs = [[*c, *shared, f"++tracking.tags.{CELL_TAG}={quote(cell_key(c))}"] for c in batch]
                for cell, result in zip(batch, self.launcher.launch(jobs, initial_job_idx=start)):
                    ok = result.status == JobStatus.COMPLETED
                    label = " ".join(o for o in cell if o not in common)
                    if not ok:
                        error = first_line(job_error(result), with_type=True)
                        failures.append(f"cell {label or cell_key(cell)}: {error}")
                        log.warning("cell %s failed: %s", cell_key(cell), error)
                    progress.cell_done(label, ok)
            stop_if_requested()  # a signal that stopped the last batch's cells stops the study too
            nothing = bool(todo) and len(failures) == len(todo)
            error = (f"study {self.study_name!r}: none of the {len(todo)} cells run finished; {failures[0]}"
                     if nothing else f"{len(failures)} of {len(todo)} cells failed; {failures[0]}" if failures
                     else None)
            parent_run.conclude("FAILED" if failures else "FINISHED", error)
        log.info("Study %s: %d cells run, %d failed", self.study_name, len(todo), len(failures))
        if nothing:
            raise StudyFailed(first_line(error))
        runs = sorted(child_runs(client, study.run(), "FINISHED"),
                      key=lambda r: (r.info.start_time, r.info.run_id))
        record_study_readiness(client, parent, untrained_runs(runs))
        print_runs(runs, title=f"Study {self.study_name!r} (experiment {self.experiment!r}, parent run "
                               f"{parent}): test split")
        print(f"MLflow store: {study.uri}\nReport: {report_hint(self.study_name, self.config.paths.root, 'study')}",
              flush=True)
