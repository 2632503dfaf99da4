"""``anyq-train``: the Hydra application (single runs, sweeps with -m, ablations)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from anyq.app.confirm import run_confirm
from anyq.app.job import run_job
from anyq.app.paths import config_dir
from anyq.app.signals import exit_on_signals
from anyq.data.errors import DataError
from anyq.sweeping.errors import StudyFailed, SweepRefused
from anyq.training.schema import ConfigError, register_configs

log = logging.getLogger("anyq")
register_configs()
if not sys.stdout.isatty():  # MLflow's per-artifact download bars are noise in a log file
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message=".*treespec.*")  # Lightning vs. torch 2.13 deprecation


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> Any:
    try:
        if cfg.confirm.study:  # a mode of its own: retrain a sweep's winner over seeds
            return run_confirm(cfg)
        summary = run_job(cfg)
    except (ConfigError, DataError, FileNotFoundError) as exc:
        if HydraConfig.get().mode == RunMode.RUN:  # a single run: one clear line, exit 2
            log.error("%s", exc)
            print(f"anyq-train: error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise  # in a sweep the engine records the trial as failed and goes on
    log.info("test/crps=%.6g run_id=%s", summary.get("test/crps", float("nan")), summary.get("run_id"))
    return summary


def cli() -> None:
    """The ``anyq-train`` command: :func:`main`, plus exit statuses Hydra cannot give.

    A signal ends it with 128 + the signal number once runs and trials are closed
    (:mod:`anyq.app.signals`); a sweep refused before its first trial (a search space that
    does not fit the config or the stored study, a setting every trial shares that cannot
    work, a launcher that cannot place a trial) is one line and exit 2, like a single run's
    config error; a study whose trials or cells all failed is one line and exit 1.
    """
    try:
        with exit_on_signals():
            main()
    except SweepRefused as exc:
        log.error("%s", exc.error)
        print(f"anyq-train: error: {exc.error}", file=sys.stderr)
        sys.exit(2)
    except StudyFailed as exc:
        log.error("%s", exc.reason)
        print(f"anyq-train: error: {exc.reason}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
