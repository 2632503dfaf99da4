"""Long-format load data, the hourly panel, splits, windows and the synthetic default dataset.

Gap policy and window rules: :mod:`anyq.data.windows`. Split semantics:
:mod:`anyq.data.splits`. The synthetic generator and its oracle: :mod:`anyq.data.synthetic`.
"""

from __future__ import annotations

from anyq.lazy import lazy_attributes

# Names load on first use (PEP 562): ``anyq.errors`` and the settings that type the config
# import without pandas or torch, so a command line is checked before either loads.
_WHERE = {
    "DataError": "anyq.errors",
    "ForecastDataModule": "anyq.data.datamodule",
    "IndexBatchSampler": "anyq.data.datamodule",
    "Panel": "anyq.data.panel",
    "SplitRanges": "anyq.data.splits",
    "SyntheticData": "anyq.data.synthetic",
    "WindowDataset": "anyq.data.windows",
    "WindowSet": "anyq.data.windows",
    "fill_gaps": "anyq.data.windows",
    "generate_synthetic": "anyq.data.synthetic",
    "make_windows": "anyq.data.windows",
    "read_long_frame": "anyq.data.reader",
    "split_by_dates": "anyq.data.splits",
    "split_by_proportions": "anyq.data.splits",
    "validate_hourly": "anyq.data.reader",
}

__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
