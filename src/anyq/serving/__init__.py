"""Serving trained forecasters: an MLflow pyfunc model, request checks, and batch prediction.

- :mod:`anyq.serving.bundle`   weights + model spec -> a forecaster that answers requests
- :mod:`anyq.serving.frames`   the served frame layout (history windows in, long forecasts out)
- :mod:`anyq.serving.history`  long-format series -> one history window per series
- :mod:`anyq.serving.pyfunc`   the MLflow ``python_model`` and its signature
- :mod:`anyq.serving.publish`  logging a finished run's best model to MLflow
"""

from anyq.errors import ModelFileError, RequestError
from anyq.serving.bundle import ForecasterSpec, ServedForecaster, check_levels

__all__ = ["ForecasterSpec", "ModelFileError", "RequestError", "ServedForecaster", "check_levels"]
