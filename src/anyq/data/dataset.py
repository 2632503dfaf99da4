"""A data setting loaded: the panel, its split and, for synthetic data, the generator's truth.

Torch-free (pandas and NumPy only), so a sweep can read and fingerprint its data before it
loads the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from anyq.data.panel import Panel
from anyq.data.reader import read_long_frame
from anyq.data.splits import SplitRanges, split_by_dates, split_by_proportions
from anyq.data.synthetic import SyntheticData, generate_synthetic


@dataclass(frozen=True)
class Dataset:
    """A loaded panel, its split, and (synthetic data only) the generator that knows the truth."""

    name: str
    panel: Panel
    splits: SplitRanges
    synthetic: Optional[SyntheticData]

    @property
    def fingerprint(self) -> str:
        return self.panel.fingerprint()


def load_dataset(data: DictConfig) -> Dataset:
    """The ``data`` settings' panel and split.

    Raises:
        DataError: the file cannot be read as long-format hourly load, or the split is empty.
    """
    synthetic = None
    if data.source == "synthetic":
        synthetic = generate_synthetic(**OmegaConf.to_container(data.synthetic))
        panel = synthetic.panel
    else:
        panel = Panel.from_long(read_long_frame(Path(data.path)), where=str(data.path))
    split = data.split
    if split.kind == "dates":
        splits = split_by_dates(panel, split.train_end, split.val_end, split.test_end)
    else:
        splits = split_by_proportions(panel, tuple(split.proportions))
    return Dataset(name=data.name, panel=panel, splits=splits, synthetic=synthetic)
