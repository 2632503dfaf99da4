"""Lightning data module: train/val/test windows of one panel, fetched a batch at a time.

Loading choice: ``DataLoader(dataset, batch_size=None, sampler=IndexBatchSampler(...))``.
The sampler yields whole index arrays and the loader hands each to
``WindowDataset.__getitem__``, which gathers the batch in one numpy call; there is no
per-item fetch and no collate step. (The alternative, ``batch_sampler=`` with
``__getitems__``, needs a pass-through ``collate_fn`` and is no faster.) Lightning calls
``set_epoch`` on the sampler, so the shuffle of epoch ``e`` is a function of
``(seed, e)`` only: reproducible, and the same after resuming from a checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Optional, Protocol

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Sampler

from anyq.data.panel import Panel
from anyq.data.splits import SPLIT_NAMES, SplitRanges
from anyq.data.holiday_history import replace_holidays
from anyq.data.windows import WindowDataset, WindowSet, empty_series_notice, fill_gaps, gap_notice, make_windows
from anyq.errors import DataError

log = logging.getLogger(__name__)
_SAID: set[str] = set()  # the split notices this process has logged


class WindowSettings(Protocol):
    """The ``data.*`` settings the data module reads; their defaults and checks live in the
    schema (``anyq.training.schema.DataConfig``), which is what a job passes."""

    history_length: int
    horizon_length: int
    train_step: int
    eval_step: int
    origin_hour: Optional[int]
    max_history_gap: float
    train_batch_size: int
    eval_batch_size: int
    num_workers: int


class IndexBatchSampler(Sampler[np.ndarray]):
    """Batches of dataset indices, shuffled per epoch from ``(seed, epoch)`` when asked."""

    def __init__(
        self, n: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle = int(n), int(batch_size), shuffle
        self.seed, self.drop_last, self.epoch = int(seed), drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        self.epoch += 1  # a plain loop without set_epoch still gets a new order each pass
        stop = len(self) * self.batch_size if self.drop_last else self.n
        for start in range(0, stop, self.batch_size):
            yield order[start : start + self.batch_size]

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full if self.drop_last else full + (rest > 0)


class ForecastDataModule(pl.LightningDataModule):
    """Windows of ``panel`` for each split; raises DataError if a split has no complete window.

    Gaps are filled once for the whole panel (policy in :mod:`anyq.data.windows`);
    training windows every ``train_step`` hours from any hour, validation/test windows
    every ``eval_step`` hours issued at ``origin_hour``. ``history_holidays`` (bool
    ``[n_series, T]``, or None) marks hours the history input reads from a week before
    (:mod:`anyq.data.holiday_history`): ``history_values`` is then the gap-filled panel with
    those hours replaced, computed once; targets and ``filled_values`` stay the real values.
    """

    def __init__(
        self,
        panel: Panel,
        splits: SplitRanges,
        settings: WindowSettings,
        seed: int,
        calendar: tuple[np.ndarray, np.ndarray | None] | None = None,
        history_holidays: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.calendar = calendar  # (shared [T, S], holiday [n_series, T] or None) or None: anyq.data.calendar
        self.panel, self.splits = panel, splits
        history_length, horizon_length = settings.history_length, settings.horizon_length
        self.history_length, self.horizon_length = history_length, horizon_length
        self.train_batch_size, self.eval_batch_size = settings.train_batch_size, settings.eval_batch_size
        self.num_workers, self.seed = settings.num_workers, seed
        self.filled_values, self.observed_mask = fill_gaps(panel.values)
        self.history_values = (self.filled_values if history_holidays is None
                               else replace_holidays(self.filled_values, history_holidays))
        common = dict(
            history_length=history_length, horizon_length=horizon_length, max_history_gap=settings.max_history_gap
        )
        origin_hour = settings.origin_hour
        self.train_windows = make_windows(panel, splits.train, step=settings.train_step, **common)
        self.val_windows = make_windows(panel, splits.val, step=settings.eval_step, origin_hour=origin_hour, **common)
        self.test_windows = make_windows(panel, splits.test, step=settings.eval_step, origin_hour=origin_hour, **common)
        for name in SPLIT_NAMES:
            windows = self.windows(name)
            if not len(windows):
                raise DataError(
                    f"split {name!r} ({splits.describe(name, panel.index)}) has no complete window "
                    f"with history_length={history_length}, horizon_length={horizon_length}: "
                    f"{windows.n_candidates} candidates, "
                    f"{windows.n_skipped_target_gaps} with target gaps, "
                    f"{windows.n_skipped_history_gaps} with history gaps, "
                    f"{windows.n_outside_span} outside their series' span"
                )
            for notice in (gap_notice(name, windows, panel.ids), empty_series_notice(name, windows, panel.ids)):
                if notice and notice not in _SAID:  # once a process: a job's baseline reads the same data
                    _SAID.add(notice)
                    log.warning("%s", notice)
        self._datasets: dict[str, WindowDataset] = {}

    def windows(self, split: str) -> WindowSet:
        if split not in SPLIT_NAMES:
            raise KeyError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, f"{split}_windows")

    def dataset(self, split: str) -> WindowDataset:
        if split not in self._datasets:
            self._datasets[split] = WindowDataset(self.filled_values, self.windows(split), self.calendar,
                                                  history_values=self.history_values)
        return self._datasets[split]

    def summary(self) -> dict[str, dict[str, int | str]]:
        """Per split: its date range, window count and what was left out (for logs and runs)."""
        return {
            name: {"range": self.splits.describe(name, self.panel.index), **self.windows(name).counts()}
            for name in SPLIT_NAMES
        }

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        sampler = IndexBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=self.seed)
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.train_batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
