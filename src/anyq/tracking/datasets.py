"""The run's data as an MLflow dataset input, so the UI's Dataset column and filters work.

MLflow's ``mlflow.log_input(dataset, context)`` logs a ``DatasetInput`` made of the dataset's
fields (``dataset.to_dict()``) and ``InputTag("mlflow.data.context", context)`` on the fluent
API's active run; anyq's runs are opened through a client (each job may write to its own store), so :func:`log_dataset` makes
the same ``log_inputs`` call on that client. The digest is the panel's fingerprint (the
``data_fingerprint`` tag), so equal data shows as the same dataset in every experiment.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ColSpec, Schema
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from anyq.data.panel import Panel

# The long format every reader returns (anyq.data.reader): one row per series and hour.
LONG_SCHEMA = Schema([ColSpec("string", "unique_id"), ColSpec("datetime", "ds"), ColSpec("double", "y")])


class PanelSource(DatasetSource):
    """Where the panel came from: a file path, or ``synthetic`` with the generator's settings."""

    def __init__(self, uri: str, settings: Optional[dict[str, Any]] = None) -> None:
        self.uri = uri
        self.settings = settings or {}

    @staticmethod
    def _get_source_type() -> str:
        return "anyq"

    def load(self, **kwargs: Any) -> str:
        return self.uri

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> "PanelSource":
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, **({"settings": self.settings} if self.settings else {})}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> "PanelSource":
        return cls(source_dict["uri"], source_dict.get("settings"))


class PanelDataset(MetaDataset):
    """A :class:`MetaDataset` (name, digest, source, schema) plus the panel's shape as profile."""

    def __init__(self, source: PanelSource, name: str, digest: str, profile: dict[str, Any]) -> None:
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest, schema=LONG_SCHEMA)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def panel_dataset(name: str, panel: Panel, fingerprint: str, data_cfg: Any) -> PanelDataset:
    """The MLflow dataset of a loaded panel; ``data_cfg`` is the run's ``data`` config."""
    if data_cfg.source == "synthetic":
        settings = {k: data_cfg.synthetic[k] for k in data_cfg.synthetic}
        source = PanelSource("synthetic", settings)
    else:
        source = PanelSource(str(data_cfg.path))
    profile = {"num_series": panel.n_series, "num_hours": int(len(panel.index)),
               "start": str(panel.index[0]), "end": str(panel.index[-1])}
    return PanelDataset(source, name, fingerprint, profile)


def log_dataset(client: MlflowClient, run_id: str, dataset: PanelDataset, context: str = "training") -> None:
    """What ``mlflow.log_input(dataset, context=context)`` logs, on ``client``'s store."""
    fields = dataset.to_dict()  # what MLflow's own Dataset -> entity conversion reads
    entity = DatasetInput(
        DatasetEntity(name=fields["name"], digest=fields["digest"], source_type=fields["source_type"],
                      source=fields["source"], schema=fields.get("schema"), profile=fields.get("profile")),
        [InputTag(MLFLOW_DATASET_CONTEXT, context)],
    )
    for attempt in range(3):  # parallel jobs race to insert the same dataset row (select, then insert)
        try:
            client.log_inputs(run_id, datasets=[entity])
            return
        except MlflowException:
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))  # the retry finds the winner's row and only links it
