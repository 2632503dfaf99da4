"""The MLflow ``python_model`` of a trained forecaster, and its input/output signature.

The model directory carries two artifacts, ``weights`` (the forecaster's ``state_dict``) and
``spec`` (its resolved config), loaded once in ``load_context``. Requests and responses
follow :mod:`anyq.serving.frames`. A request the model cannot answer raises
``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which the scoring server returns as
HTTP 400 with the one-line reason, instead of a 500 with a stack trace.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import Array, ColSpec, Schema

from anyq.errors import RequestError
from anyq.serving.bundle import ServedForecaster
from anyq.serving.frames import predict_frame

WEIGHTS_ARTIFACT = "weights"
SPEC_ARTIFACT = "spec"

SIGNATURE = ModelSignature(
    inputs=Schema([
        ColSpec("string", "unique_id"),
        ColSpec(Array("double"), "history"),
        ColSpec(Array("double"), "levels"),
        ColSpec("string", "origin", required=False),  # models with calendar inputs only
    ]),
    outputs=Schema([
        ColSpec("string", "unique_id"),
        ColSpec("long", "step"),
        ColSpec("double", "level"),
        ColSpec("double", "value"),
    ]),
)


class AnyQuantilePyfunc(mlflow.pyfunc.PythonModel):
    """Forecasts any quantile levels for history windows (layout: :mod:`anyq.serving.frames`)."""

    forecaster: ServedForecaster

    def load_context(self, context: Any) -> None:
        self.forecaster = ServedForecaster.from_files(
            context.artifacts[WEIGHTS_ARTIFACT], context.artifacts[SPEC_ARTIFACT]
        )

    # pd.DataFrame is the one hint MLflow neither warns about nor turns into a signature
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        try:
            return predict_frame(self.forecaster, frame)
        except RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
