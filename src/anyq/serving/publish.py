"""Log a finished run's best model as an MLflow pyfunc model (``runs:/<run id>/model``).

The model holds the best checkpoint's forecaster weights (no optimiser state) and the
resolved model config, so ``mlflow models serve`` and ``anyq-predict --run`` need neither
the training data nor the checkpoint files. A run without a best checkpoint (a fast dev
run saves none) logs no model.

``Model.log`` is what ``mlflow.pyfunc.log_model`` calls; it is called directly because it
takes the run id, so the job's run is never made the process-wide active run (ending an
active run would close the job's run before its own end).
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
import yaml
from mlflow.models import Model
from omegaconf import DictConfig

from anyq.errors import ModelFileError, first_line
import anyq
from anyq.serving.bundle import ForecasterSpec, ServedForecaster
from anyq.serving.frames import example_request
from anyq.serving.pyfunc import SIGNATURE, SPEC_ARTIFACT, WEIGHTS_ARTIFACT, AnyQuantilePyfunc
from anyq.tracking.store import resolve_tracking_uri, tracking_uri

if TYPE_CHECKING:
    from anyq.tracking.runs import RunRecord
    from anyq.training.run import TrainOutcome

log = logging.getLogger(__name__)
MODEL_NAME = "model"


def _not_validation_progress(record: logging.LogRecord) -> bool:
    """MLflow announces on its own stderr handler that it checks the input example against the
    signature; the check still runs, and a mismatch raises (recorded as ``model_error``)."""
    return not record.getMessage().startswith("Validating input example against model signature")


logging.getLogger("mlflow.pyfunc").addFilter(_not_validation_progress)
MODEL_CODE = Path(__file__).with_name("model_code.py")  # not imported: it registers a model


def requirements() -> list[str]:
    """Pinned to the training environment; given explicitly so logging never spawns a
    subprocess to infer them. ``anyq`` itself must be installed where the model is served."""
    return [
        f"anyq=={anyq.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
        f"pyyaml=={yaml.__version__}",
    ]


def log_forecaster_model(run: "RunRecord", cfg: DictConfig, outcome: "TrainOutcome") -> Optional[str]:
    """Log the run's best checkpoint as ``runs:/<run id>/model``; returns the model URI.

    A failure is recorded on the run as the tag ``model_error`` and logged as a warning: the
    trained and scored run stands without its served form.
    """
    if not outcome.best_checkpoint:
        log.info("run %s has no best checkpoint (fast dev run?): no model logged", run.run_id)
        return None
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, Path(cfg.paths.mlruns))
    try:
        return log_checkpoint_model(run.run_id, uri, outcome.best_checkpoint, ForecasterSpec.from_config(cfg))
    except Exception as exc:  # noqa: BLE001 - the run's results stand without the model
        log.warning("logging the model of run %s failed: %s", run.run_id, exc)
        run.set_tags({"model_error": first_line(exc, with_type=True)})
        return None


def log_checkpoint_model(run_id: str, uri: str, checkpoint: str | Path, spec: ForecasterSpec) -> str:
    """Log ``checkpoint``'s forecaster under ``run_id`` in the store at ``uri``."""
    served = ServedForecaster.from_checkpoint(checkpoint, spec)
    with tempfile.TemporaryDirectory() as tmp, tracking_uri(uri):
        weights, spec_file = served.save(tmp)
        # created explicitly in the run's experiment: left to itself, MLflow files a model
        # logged without an active run under the default experiment, where runs:/ misses it
        experiment_id = mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id
        logged = mlflow.initialize_logged_model(
            name=MODEL_NAME, source_run_id=run_id, experiment_id=experiment_id,
            model_type="anyq-forecaster", tags={"variant": spec.variant},
        )
        Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=str(MODEL_CODE),
            artifacts={WEIGHTS_ARTIFACT: str(weights), SPEC_ARTIFACT: str(spec_file)},
            signature=SIGNATURE,
            input_example=example_request(spec.history_length),
            pip_requirements=requirements(),
            metadata={"variant": spec.variant, "history_length": spec.history_length,
                      "horizon_length": spec.horizon_length, "checkpoint": Path(checkpoint).name},
        )
    return f"runs:/{run_id}/{MODEL_NAME}"


def load_served(model_uri: str, uri: Optional[str] = None) -> ServedForecaster:
    """The forecaster inside a logged model (``runs:/<id>/model`` or a model directory)."""
    def load() -> Any:
        return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()

    if uri is None:
        python_model = load()
    else:
        with tracking_uri(uri):
            python_model = load()
    if not isinstance(python_model, AnyQuantilePyfunc):
        raise ValueError(f"{model_uri} is not an anyq forecaster model ({type(python_model).__name__})")
    return python_model.forecaster


def check_logged_model(run_id: str, uri: str) -> str:
    """What ``make serve`` and ``anyq-predict --run`` check before loading: ``run_id`` (a full
    id, or a prefix of one, as the tables print 8 characters) names one run of the store
    ``uri``, and that run logged a model (its ``MLmodel`` file is read, not the weights).
    Returns the full run id.

    Raises:
        ModelFileError: one line naming the run and why it cannot be served (none or several
            runs with that id or prefix, a study's parent run, no model logged).
    """
    from mlflow.exceptions import MlflowException

    from anyq.tracking.store import open_existing_store
    from anyq.tracking.study_parent import ROLE_TAG, STUDY_TAG

    client = open_existing_store(uri)  # a missing store is said so, not created
    try:
        run = client.get_run(run_id)
    except MlflowException:
        found = [] if not re.fullmatch(r"[0-9a-f]{1,31}", run_id) else client.search_runs(
            [e.experiment_id for e in client.search_experiments()], f"attributes.run_id LIKE '{run_id}%'",
            max_results=10)
        if not found:
            raise ModelFileError(f"no run {run_id!r} in {uri} (run ids: anyq-compare, or `make ui`)") from None
        if len(found) > 1:
            raise ModelFileError(f"run id {run_id!r} begins {len(found)} runs' ids in {uri} "
                                 f"({', '.join(r.info.run_id for r in found[:3])}, ...): give more of it") from None
        run = found[0]
    full = run.info.run_id
    if run.data.tags.get(ROLE_TAG) == "study":
        study = run.data.tags.get(STUDY_TAG, "?")
        raise ModelFileError(f"run {full} is the parent run of study {study!r}, which logs no model; its runs "
                             f"do (the best one: anyq-report --study {study})")
    with tracking_uri(uri):
        try:
            mlflow.models.get_model_info(f"runs:/{full}/{MODEL_NAME}")
        except MlflowException:
            raise ModelFileError(f"run {full} logged no model (a fast dev run, a run without a best "
                                 f"checkpoint or one with tracking.log_model=false logs none)") from None
    return full


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m anyq.serving.publish <run id or prefix>``: the run's full id on stdout, or
    one line and exit 2 when the run cannot be served (:func:`check_logged_model`; the store:
    ``MLFLOW_TRACKING_URI``, which ``make serve`` sets, else the ``mlruns`` of
    :func:`anyq.training.config_tree.work_root`)."""
    import os
    import sys

    from anyq.errors import StoreNotFoundError
    from anyq.training.config_tree import work_root

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m anyq.serving.publish <run id>")
    try:
        print(check_logged_model(args[0], resolve_tracking_uri(None, work_root() / "mlruns")))  # the full id, for make
    except (ModelFileError, StoreNotFoundError) as exc:
        print(f"make serve: error: {first_line(exc)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
