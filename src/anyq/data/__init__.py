"""Long-format load data, the hourly panel, splits, windows and the synthetic default dataset.

Gap policy and window rules: :mod:`anyq.data.windows`. Split semantics:
:mod:`anyq.data.splits`. The synthetic generator and its oracle: :mod:`anyq.data.synthetic`.
"""

from typing import Any

from anyq.data.errors import DataError
from anyq.data.panel import Panel
from anyq.data.reader import read_long_frame, validate_hourly
from anyq.data.splits import SplitRanges, split_by_dates, split_by_proportions
from anyq.data.synthetic import SyntheticData, generate_synthetic
from anyq.data.windows import WindowDataset, WindowSet, fill_gaps, make_windows

__all__ = [
    "DataError",
    "ForecastDataModule",
    "IndexBatchSampler",
    "Panel",
    "SplitRanges",
    "SyntheticData",
    "WindowDataset",
    "WindowSet",
    "fill_gaps",
    "generate_synthetic",
    "make_windows",
    "read_long_frame",
    "split_by_dates",
    "split_by_proportions",
    "validate_hourly",
]


def __getattr__(name: str) -> Any:
    # The Lightning data module is imported on first use: importing pytorch_lightning is
    # slow and most users of the data layer (readers, metrics, references) do not need it.
    if name in ("ForecastDataModule", "IndexBatchSampler"):
        from anyq.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'anyq.data' has no attribute {name!r}")
