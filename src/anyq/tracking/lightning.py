"""Per-epoch metrics into an existing MLflow run, whose lifecycle the caller owns."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from pytorch_lightning.loggers import MLFlowLogger

from anyq.tracking.runs import while_store_busy
from anyq.tracking.store import tracking_uri


class AttachedMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger, minus two side effects, its writes waiting out a busy store
    and failing a full or read-only one as :class:`anyq.errors.StoreUnwritable`.

    It does not close the run at the end of ``fit`` (the run stays open for test metrics
    and deltas, and is closed FAILED or KILLED when anything after ``fit`` goes wrong:
    :mod:`anyq.tracking.runs` does that), and it does not leave its tracking URI in the
    process environment, where the next job of a sweep or a test would pick it up.
    """

    @property
    def experiment(self) -> Any:
        with tracking_uri():  # Lightning sets the process-wide URI on first use
            return super().experiment

    def finalize(self, status: str = "success") -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        while_store_busy(lambda: MLFlowLogger.log_metrics(self, metrics, step))
