"""``anyq-train``: the Hydra application (single runs, sweeps with -m, ablations; confirm
studies, which ``anyq-confirm`` runs through it, :mod:`anyq.app.confirm`).

Only what checks the command line is imported up front: the overrides are checked
(:mod:`anyq.app.overrides`) before Hydra, torch, Lightning and MLflow load, so a typo costs
a second, not the start-up of the whole stack.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import warnings
from typing import Any, NoReturn

import hydra
from omegaconf import DictConfig

from anyq.app.console import FILE_ONLY
from anyq.app.overrides import check_command_line, confirm_store
from anyq.app.paths import config_dir
from anyq.errors import ConfigError, OverrideError, StudyFailed, SweepRefused
from anyq.training.schema import register_configs

log = logging.getLogger("anyq")
EXIT_STORE_UNWRITABLE = os.EX_IOERR  # 74 (sysexits.h): the store or the disk cannot be written
register_configs()
if not sys.stdout.isatty():  # MLflow's per-artifact download bars are noise in a log file
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
warnings.filterwarnings("ignore", message=".*treespec.*")  # Lightning vs. torch 2.13 deprecation


def _quiet_optuna() -> None:
    """Optuna's log records through Hydra's handlers, and its warnings once each, through
    logging: the TPE settings of hydra-optuna-sweeper's vocabulary that Optuna deprecates, its
    experimental features, and the heartbeat it wants from Study.optimize (the engine asks and
    tells itself). Hydra's logging config keeps them, and Optuna's "A new study created" lines,
    off the console and in the log file (:mod:`anyq.app.console`)."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    warnings.filterwarnings("once", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("once", category=FutureWarning, module=r"optuna\.")
    warnings.filterwarnings("once", message="Heartbeat of storage is supposed to be used", category=UserWarning)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """One job: ``cfg`` validated (:func:`anyq.training.validation.validate_config`, without
    torch, so a bad setting is refused in about a second), then :func:`anyq.app.job.run_job`,
    imported only then (it loads torch, Lightning and MLflow).

    Raises:
        ConfigError: a setting that cannot work, before any data is read.
    """
    from anyq.training.validation import validate_config

    validate_config(cfg)
    from anyq.app.job import run_job as pipeline

    return pipeline(cfg)


def run_confirm(cfg: DictConfig) -> dict[str, Any]:
    """The sweep looked up (:func:`anyq.app.confirm.find_sweep`, MLflow only), then
    :func:`anyq.app.confirm_study.run_confirm`, imported only then (torch, Lightning)."""
    from anyq.app.confirm import find_sweep

    found = find_sweep(cfg)
    from anyq.app.confirm_study import run_confirm as confirm

    return confirm(cfg, *found)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> Any:
    """One job: a single run, a sweep's trial, an ablation's cell, or a confirm study.

    In a launcher's worker process (``hydra/launcher=joblib``: a ``multiprocessing`` child,
    with no ``anyq-train`` watching for signals around the job) the worker watches for
    signals itself (:func:`anyq.interrupts.watch_worker_process`), and a job stopped by one
    fails as :class:`~anyq.errors.JobStopped` (its run closed KILLED), so that the
    launcher collects every job's result while the parent stops.
    """
    from anyq.errors import JobStopped, Terminated
    from anyq.interrupts import in_worker_process, watch_worker_process, watching

    if multiprocessing.parent_process() is None or (watching() and not in_worker_process()):
        return run_main(cfg)
    watch_worker_process()
    try:
        return run_main(cfg)
    except Terminated as exc:
        raise JobStopped(str(exc)) from None


def run_main(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from anyq.errors import DataError

    _quiet_optuna()
    try:
        if cfg.confirm.study:  # anyq-confirm: retrain a sweep's winner over seeds
            return run_confirm(cfg)
        summary = run_job(cfg)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        if HydraConfig.get().mode == RunMode.RUN:  # a single run: one clear line, exit 2
            fail(exc, 2)
        raise  # in a sweep the engine records the trial as failed and goes on
    log.info("test/crps=%.6g run_id=%s", summary.get("test/crps", float("nan")), summary.get("run_id"))
    if HydraConfig.get().mode == RunMode.RUN and summary.get("run_id") and cfg.task == "train":
        from anyq.app.job import print_comparison

        print_comparison(cfg, summary["run_id"])  # a single run: its baseline beside it, as `make run` shows
    return summary


def fail(message: object, status: int) -> NoReturn:
    """End the command with ``<command>: error: <message>`` on stderr and exit ``status``; the
    job's log file keeps the line too (``FILE_ONLY``: the console shows it once, as the error line)."""
    log.error("%s", message, extra=FILE_ONLY)
    print(f"{command()}: error: {message}", file=sys.stderr)
    sys.exit(status)


def command() -> str:
    """The command's name in its error lines: ``anyq-confirm`` when that command runs this app."""
    from anyq.app.confirm import PROG

    return PROG if sys.argv[0] == PROG else "anyq-train"


def cli() -> None:
    """The ``anyq-train`` command: :func:`main`, plus exit statuses Hydra cannot give.

    An override that does not parse or compose (a misspelled key, an unknown option of a
    config group, a value of the wrong type) is one line and exit 2, before anything heavy
    loads (:mod:`anyq.app.overrides`). A signal (SIGTERM, SIGINT) stops the work at its next safe
    point and ends it with 128 + the signal number once runs and trials are closed
    (:mod:`anyq.interrupts`); a sweep refused before its first
    trial (a search space that does not fit the config or the stored study, a launcher that
    cannot place a trial, a setting every trial shares that cannot work) is one line and exit 2, like a single run's config error; so is a
    confirm command whose store does not exist, before anything is created. A store or a disk
    that cannot be written (full, read-only) is one line and exit 74, after the open run is
    closed FAILED (or, when even that write failed, left to the next command that opens the
    store).
    A study whose trials or cells all failed is one line and exit 1.
    """
    try:
        check_command_line(sys.argv[1:], config_dir())
        store = confirm_store(sys.argv[1:], config_dir())
        if store is not None:  # before Hydra creates the run's folder under paths.root
            from anyq.tracking.store import open_existing_store

            open_existing_store(store)
    except (OverrideError, FileNotFoundError) as exc:
        print(f"{command()}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    from anyq.interrupts import stop_on_signals
    from anyq.errors import StoreUnwritable, Terminated

    _quiet_optuna()
    try:
        with stop_on_signals():
            main()
    except Terminated as exc:  # exit 128 + the signal, after one line saying what is left
        log.warning("%s", exc, extra=FILE_ONLY)
        print(f"{command()}: {exc}: the runs it had open are closed KILLED; the same command continues "
              "(a study trains what it lacks; a single run: add resume=last)", file=sys.stderr)
        raise
    except SweepRefused as exc:
        fail(exc.error, 2)
    except StoreUnwritable as exc:
        logging.raiseExceptions = False  # a log file on the full disk must not bury the line
        fail(exc, EXIT_STORE_UNWRITABLE)
    except StudyFailed as exc:
        fail(exc.reason, 1)


if __name__ == "__main__":
    cli()
