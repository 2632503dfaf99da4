"""``anyq-predict``: quantile forecasts for the series of a long-format file.

    anyq-predict --run <run id> --input load.csv --levels 0.05,0.5,0.95 --output forecasts.csv
    anyq-predict --checkpoint outputs/.../checkpoints/best-epoch07.ckpt --input load.csv
    anyq-predict --run <run id> --input load.csv --origin "2018-06-01 00:00"

Input: ``unique_id``, ``ds``, ``y`` (CSV or Parquet, the MHLV date format or ISO 8601).
Output: ``unique_id``, ``ds``, ``level``, ``value`` (CSV), one forecast per series issued at
its origin: right after its last observation, or ``--origin`` (the first forecast hour) for
all series. A model trained with ``model.conformal=online`` calibrates from the file's earlier
hours: it replays the origins before the forecast's whose targets the file holds. A request
the model cannot answer exits with status 2 and one line on stderr.

``--run`` loads the run's logged model (``runs:/<id>/model``) from the project's store
(``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` for another). ``--checkpoint`` takes an
``anyq-train`` checkpoint and its run config: ``--config``, else the ``.hydra/config.yaml``
that Hydra wrote beside the run's ``checkpoints/`` folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from anyq.app.paths import work_root
from anyq.data.reader import read_long_frame
from anyq.errors import DataError, ModelFileError, RequestError, counted, first_line
from anyq.serving.bundle import ForecasterSpec, ServedForecaster, check_levels, checkpoint_weights
from anyq.serving.history import forecasts_to_long, history_windows

DEFAULT_LEVELS = "0.1,0.5,0.9"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="anyq-predict", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="MLflow run id whose logged model forecasts")
    source.add_argument("--checkpoint", type=Path, help="anyq-train checkpoint (.ckpt)")
    p.add_argument("--config", type=Path, help="run config for --checkpoint (default: <run dir>/.hydra/config.yaml)")
    p.add_argument("--tracking-uri", help="MLflow store for --run (default: MLFLOW_TRACKING_URI, else ./mlruns, or $ANYQ_ROOT/mlruns)")
    p.add_argument("--input", required=True, type=Path, help="long-format file: unique_id, ds, y")
    p.add_argument("--levels", default=DEFAULT_LEVELS, help=f"comma-separated levels in (0, 1) (default {DEFAULT_LEVELS})")
    p.add_argument("--origin", help="first forecast hour for every series (default: after each series' last observation)")
    p.add_argument("--output", default="-", help="output CSV (default: stdout)")
    return p.parse_args(argv)


def parse_levels(text: str) -> list[float]:
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RequestError(f"--levels {text!r}: expected comma-separated numbers in (0, 1)") from None
    return check_levels(levels).tolist()


def checkpoint_spec(checkpoint: Path, config: Optional[Path]) -> ForecasterSpec:
    """The model section of the run config that trained ``checkpoint``."""
    path = config or checkpoint.resolve().parent.parent / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"run config not found: {path} (pass --config <config.yaml>)")
    return ForecasterSpec.from_config_file(path)


def load_forecaster(args: argparse.Namespace) -> ServedForecaster:
    if args.checkpoint is not None:
        weights = checkpoint_weights(args.checkpoint)
        return ServedForecaster(checkpoint_spec(args.checkpoint, args.config), weights)
    from anyq.serving.publish import check_logged_model, load_served
    from anyq.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri, work_root() / "mlruns")
    run_id = check_logged_model(args.run, uri)  # one line for a wrong id, a study parent, no model
    return load_served(f"runs:/{run_id}/model", uri)


def predict(args: argparse.Namespace) -> None:
    levels = parse_levels(args.levels)
    frame = read_long_frame(args.input)
    forecaster = load_forecaster(args)
    windows = history_windows(frame, forecaster.spec.history_length, args.origin, where=str(args.input),
                              earlier=forecaster.reads_earlier_hours)  # online calibration, holiday hours
    forecast = forecaster.forecast(windows.history, levels, names=list(windows.ids), origins=windows.origin)
    out = forecasts_to_long(windows, forecast, levels)
    target = sys.stdout if args.output == "-" else args.output
    out.to_csv(target, index=False, date_format="%Y-%m-%d %H:%M:%S")
    if args.output != "-":  # a file: say what it now holds (stdout carries the rows themselves)
        print(f"anyq-predict: wrote {len(out)} rows ({len(windows.ids)} series x {counted(forecast.shape[1], 'hour')} x "
              f"{counted(len(levels), 'level')}) to {args.output}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = parse_args(argv)
    from mlflow.exceptions import MlflowException

    try:
        predict(args)
    except BrokenPipeError:  # `anyq-predict ... | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (RequestError, ModelFileError, DataError, FileNotFoundError, MlflowException) as exc:
        message = exc.message if isinstance(exc, MlflowException) and exc.message else exc
        print(f"anyq-predict: error: {first_line(message, limit=10_000)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
