"""``anyq-confirm <sweep> [--seeds N] [--trial N] [override ...]``: does a sweep's winner beat the baseline?

Retrains the sweep's best trial under the sweep's recipe with seeds ``0 .. N-1`` at the main
job's budget, beside the baseline, as a study of its own (:mod:`anyq.app.confirm_study`). The
arguments become the config keys ``confirm.study``, ``confirm.seeds`` and ``confirm.trial``, the
rest are Hydra overrides, and the command runs ``anyq-train``'s Hydra app with them
(:func:`anyq.app.train.cli`: its command-line check, signals and exit statuses), so
``anyq-train confirm.study=<sweep>`` is the same command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import DictConfig

from anyq.app import train

if TYPE_CHECKING:
    from mlflow.entities import Run

PROG = "anyq-confirm"


def find_sweep(cfg: DictConfig) -> tuple[str, Any, "Run"]:
    """The store URI, its client and the parent run of the sweep ``confirm.study`` names, looked
    up before the confirm study's modules (torch, Lightning) load: a mistyped or wrong name is
    one line in about 3 s.

    Raises:
        ConfigError: no such sweep (the closest sweep's name, when one is near), or a study
            that is not a sweep.
        StoreNotFoundError: no store at the configured place (none is created).
    """
    from anyq.errors import ConfigError, ReportError
    from anyq.reporting.study_lookup import find_parent
    from anyq.tracking.store import open_existing_store, resolve_tracking_uri
    from anyq.tracking.study_parent import STORAGE_TAG

    sweep = str(cfg.confirm.study)
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, Path(cfg.paths.mlruns))
    client = open_existing_store(uri)  # the sweep must be there: a missing store is not created
    try:
        parent = find_parent(client, study=sweep, sweep=True)
    except ReportError as exc:
        raise ConfigError(str(exc)) from None
    if STORAGE_TAG not in parent.data.tags:
        raise ConfigError(f"study {sweep!r} is not a sweep (no Optuna study behind its parent run)")
    return uri, client, parent


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG, usage="%(prog)s <sweep> [--seeds N] [--trial N] [override ...]",
        description="Retrain a sweep's best trial under the sweep's recipe with seeds 0 .. N-1 at the main job's "
                    "budget, beside the baseline, as the study <sweep>-confirm (a rerun trains only missing seeds).",
        epilog="Further arguments are Hydra overrides of single settings (trainer.max_steps=4000); "
               "a config group (trainer=fast, model=..., experiment=...) is refused with exit 2, "
               "and so is -m/--multirun: the study trains its seeds itself.")
    parser.add_argument("sweep", help="the sweep's study name, e.g. adaptive_attention")
    parser.add_argument("--seeds", type=int, help="train seeds 0 .. N-1 (default 5)")
    parser.add_argument("--trial", type=int, help="the trial to confirm (default: the sweep's best)")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    keys = {"study": args.sweep, "seeds": args.seeds, "trial": args.trial}
    sys.argv = [PROG, *(f"confirm.{key}={value}" for key, value in keys.items() if value is not None), *overrides]
    train.cli()


if __name__ == "__main__":
    main()
