"""Per-epoch metrics into an existing MLflow run, whose lifecycle the caller owns."""

from __future__ import annotations

import os
from typing import Any

import mlflow
from pytorch_lightning.loggers import MLFlowLogger


class AttachedMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger, minus two side effects.

    It does not close the run at the end of ``fit`` (the run stays open for test metrics
    and deltas, and is closed FAILED or KILLED when anything after ``fit`` goes wrong:
    :mod:`anyq.tracking.runs` does that), and it does not leave its tracking URI in the
    process environment, where the next job of a sweep or a test would pick it up.
    """

    @property
    def experiment(self) -> Any:
        if self._initialized:
            return self._mlflow_client
        before = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            return MLFlowLogger.experiment.fget(self)  # type: ignore[attr-defined]
        finally:
            mlflow.set_tracking_uri(before)

    def finalize(self, status: str = "success") -> None:
        return None
