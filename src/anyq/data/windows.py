"""Forecast windows on a panel: which (series, origin) pairs exist, and fetching them fast.

A window is ``history_length`` hours before ``origin`` and ``horizon_length`` hours from
``origin`` on (the target). Windows are index arrays computed once for a whole split; a
batch is gathered in one numpy call, never built window by window.

Gap policy (documented here once):

- Targets are never filled: a window whose target has any missing hour is left out (and
  counted), so a missing target is never scored as 0 or inf.
- History gaps are filled by per-series linear interpolation between the neighbouring
  observations (edges carry the first/last observation outwards), computed once for the
  whole panel by :func:`fill_gaps`. A window whose history has more than
  ``max_history_gap`` of its hours missing, or starts before the series' first
  observation, is left out (and counted): its input would be mostly made up.
- A window whose target lies entirely before a series' first or after its last
  observation is not a window of that series at all (the series did not exist then); it
  is counted separately as ``n_outside_span`` so that late-starting MHLV series do not
  inflate the skipped counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.utils.data import Dataset

from anyq.data.panel import Panel


def fill_gaps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN along the last axis; returns ``(filled float32, observed bool)``.

    Interior gaps are interpolated linearly between the observations on either side;
    leading/trailing gaps take the first/last observation. All-NaN rows stay NaN.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"fill_gaps expects [n_series, n_steps], got shape {values.shape}")
    observed = ~np.isnan(values)
    n, t = values.shape
    steps = np.arange(t, dtype=np.int64)
    prev = np.maximum.accumulate(np.where(observed, steps, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(observed, steps, t)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(n)[:, None]
    v = values.astype(np.float64)
    left = v[rows, np.clip(prev, 0, t - 1)]
    right = v[rows, np.clip(nxt, 0, t - 1)]
    weight = (steps - prev) / np.maximum(nxt - prev, 1)
    interior = left + weight * (right - left)
    filled = np.where(
        observed, v, np.where((prev >= 0) & (nxt < t), interior, np.where(prev >= 0, left, right))
    )
    return filled.astype(np.float32), observed


@dataclass(frozen=True, eq=False)
class WindowSet:
    """The windows of one split as index arrays, plus what was left out and why.

    ``origin`` is the time index of the first target hour. The counts satisfy
    ``n_candidates == len(self) + n_skipped_target_gaps + n_skipped_history_gaps +
    n_outside_span``.
    """

    series_idx: np.ndarray
    origin: np.ndarray
    history_length: int
    horizon_length: int
    n_candidates: int = 0
    n_skipped_target_gaps: int = 0
    n_skipped_history_gaps: int = 0
    n_outside_span: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "series_idx", np.asarray(self.series_idx, dtype=np.int64))
        object.__setattr__(self, "origin", np.asarray(self.origin, dtype=np.int64))
        if self.series_idx.shape != self.origin.shape or self.origin.ndim != 1:
            raise ValueError("series_idx and origin must be 1-d arrays of equal length")

    def __len__(self) -> int:
        return int(self.origin.shape[0])

    def counts(self) -> dict[str, int]:
        return {
            "windows": len(self),
            "candidates": self.n_candidates,
            "skipped_target_gaps": self.n_skipped_target_gaps,
            "skipped_history_gaps": self.n_skipped_history_gaps,
            "outside_span": self.n_outside_span,
        }


#: A split that loses more than this share of its candidate windows to gaps says so in a log line.
GAP_NOTICE_SHARE = 0.1


def gap_notice(split: str, windows: WindowSet, ids: Sequence[str]) -> Optional[str]:
    """One line when gaps leave out more than :data:`GAP_NOTICE_SHARE` of ``split``'s candidate
    windows, naming up to three series left with under half the windows of the fullest one;
    None otherwise (the counts are in every run's ``evaluation/data_summary.json``)."""
    gaps = windows.n_skipped_target_gaps + windows.n_skipped_history_gaps
    if gaps <= GAP_NOTICE_SHARE * windows.n_candidates:
        return None
    per_series = np.bincount(windows.series_idx, minlength=len(ids))
    thin = [f"{ids[i]} {per_series[i]}" for i in np.argsort(per_series, kind="stable")
            if per_series[i] < per_series.max() / 2][:3]
    where = f"; fewest windows: {', '.join(thin)}, against {per_series.max()} for the fullest series" if thin else ""
    return (f"{split} split: {gaps} of {windows.n_candidates} windows left out for gaps "
            f"({windows.n_skipped_target_gaps} missing a target hour, {windows.n_skipped_history_gaps} "
            f"missing too much history){where}")


def empty_series_notice(split: str, windows: WindowSet, ids: Sequence[str]) -> Optional[str]:
    """One line when some of the panel's series have no window in ``split`` (their data do not
    reach its hours, or gaps leave none), so that its scores, or its training, cover the other
    series only; None when every series has one (a split without any window is an error of
    :class:`anyq.data.datamodule.ForecastDataModule`)."""
    per_series = np.bincount(windows.series_idx, minlength=len(ids))
    empty = [str(ids[i]) for i in np.flatnonzero(per_series == 0)]
    if not empty or len(empty) == len(ids):
        return None
    names = ", ".join(empty[:3]) + (", ..." if len(empty) > 3 else "")
    return (f"{split} split: {len(empty)} of {len(ids)} series without a window ({names}: their data do not "
            f"reach the split's hours, or gaps leave no complete window); the split covers the other "
            f"{len(ids) - len(empty)} only")


def candidate_origins(
    panel: Panel,
    target_range: tuple[int, int],
    history_length: int,
    horizon_length: int,
    step: int,
    origin_hour: int | None = None,
) -> np.ndarray:
    """Origins on the grid whose target lies in ``target_range`` and history in the panel.

    Without ``origin_hour`` the grid starts at the first feasible origin; with it, at the
    first feasible origin at that hour of day (``step`` must then be a multiple of 24 so
    every origin keeps that hour).
    """
    if history_length < 1 or horizon_length < 1 or step < 1:
        raise ValueError("history_length, horizon_length and step must be >= 1")
    start, stop = int(target_range[0]), min(int(target_range[1]), panel.n_steps)
    first = max(start, history_length)
    if origin_hour is not None:
        if not 0 <= origin_hour <= 23:
            raise ValueError(f"origin_hour must be in 0..23, got {origin_hour}")
        if step % 24:
            raise ValueError(f"with origin_hour set, step must be a multiple of 24, got {step}")
        first += (origin_hour - (panel.index[0].hour + first)) % 24
    return np.arange(first, stop - horizon_length + 1, step, dtype=np.int64)


def make_windows(
    panel: Panel,
    target_range: tuple[int, int],
    history_length: int,
    horizon_length: int,
    step: int,
    origin_hour: int | None = None,
    max_history_gap: float = 0.25,
) -> WindowSet:
    """All usable windows of ``panel`` whose target hours lie in ``target_range``.

    Vectorised over series x origins with cumulative NaN counts. Windows are ordered by
    series, then origin.
    """
    if not 0.0 <= max_history_gap <= 1.0:
        raise ValueError(f"max_history_gap must be in [0, 1], got {max_history_gap}")
    origins = candidate_origins(panel, target_range, history_length, horizon_length, step, origin_hour)
    missing = np.isnan(panel.values)
    n, t = missing.shape
    nan_count = np.zeros((n, t + 1), dtype=np.int32)
    np.cumsum(missing, axis=1, out=nan_count[:, 1:])
    observed = ~missing
    first_obs = observed.argmax(axis=1)[:, None]
    last_obs = (t - 1 - observed[:, ::-1].argmax(axis=1))[:, None]

    o = origins[None, :]
    target_missing = nan_count[:, origins + horizon_length] - nan_count[:, origins]
    history_missing = nan_count[:, origins] - nan_count[:, origins - history_length]
    outside = (o + horizon_length - 1 < first_obs) | (o > last_obs)
    target_gap = ~outside & (target_missing > 0)
    history_gap = (
        ~outside
        & ~target_gap
        & ((o - history_length < first_obs) | (history_missing > max_history_gap * history_length))
    )
    keep = ~(outside | target_gap | history_gap)
    series, which = np.nonzero(keep)
    return WindowSet(
        series_idx=series.astype(np.int64),
        origin=origins[which],
        history_length=history_length,
        horizon_length=horizon_length,
        n_candidates=int(n * origins.size),
        n_skipped_target_gaps=int(target_gap.sum()),
        n_skipped_history_gaps=int(history_gap.sum()),
        n_outside_span=int(outside.sum()),
    )


class WindowDataset(Dataset):
    """Windows of a gap-filled panel as tensors; a whole batch is one numpy gather.

    ``__getitems__`` (and ``__getitem__`` with a sequence of indices) returns a dict of
    ``history`` [B, L] float32, ``target`` [B, H] float32, ``series_idx`` [B] int64 and
    ``origin`` [B] int64, plus ``calendar`` [B, L + H, F] float32 when calendar features
    are given (``(shared [T, S], holiday [n_series, T] or None)``, F = S + 1 with the holiday
    flag, else S; :mod:`anyq.data.calendar`);
    ``__getitem__`` with an int returns the same keys unbatched. The calendar is gathered
    through strided views like the values: no copy of the panel per window or epoch.
    ``history_values`` (the panel's shape; default ``filled_values``) is what ``history`` is
    gathered from, ``target`` always from ``filled_values``: a history input with holiday hours
    replaced (:mod:`anyq.data.holiday_history`) leaves the targets real.
    """

    def __init__(
        self,
        filled_values: np.ndarray,
        windows: WindowSet,
        calendar: tuple[np.ndarray, np.ndarray | None] | None = None,
        history_values: np.ndarray | None = None,
    ) -> None:
        values = np.ascontiguousarray(filled_values, dtype=np.float32)
        if np.isnan(values).any():
            raise ValueError("WindowDataset needs gap-filled values (see anyq.data.windows.fill_gaps)")
        self.values = values
        history = values if history_values is None else np.ascontiguousarray(history_values, dtype=np.float32)
        if history.shape != values.shape or (history is not values and np.isnan(history).any()):
            raise ValueError("history_values must be gap-filled values of the panel's shape")
        self.windows = windows
        self.history_length = windows.history_length
        self.horizon_length = windows.horizon_length
        width = self.history_length + self.horizon_length
        if len(windows) and (
            windows.origin.min() < self.history_length
            or windows.origin.max() + self.horizon_length > values.shape[1]
        ):
            raise ValueError("a window reaches outside the panel")
        # [n_series, n_steps - width + 1, width]: row o - L of series s is window (s, o).
        self._view = sliding_window_view(values, width, axis=1) if values.shape[1] >= width else None
        self._history_view = (self._view if history is values or self._view is None
                              else sliding_window_view(history, self.history_length, axis=1))  # [n, T - L + 1, L]
        self._shared_view = self._holiday_view = None
        if calendar is not None:
            shared = np.ascontiguousarray(calendar[0], dtype=np.float32)
            holiday = None if calendar[1] is None else np.ascontiguousarray(calendar[1], dtype=np.float32)
            if shared.shape[0] != values.shape[1] or (holiday is not None and holiday.shape != values.shape):
                raise ValueError("calendar features do not match the panel's hours and series")
            if self._view is not None:
                self._shared_view = sliding_window_view(shared, width, axis=0)  # [T - w + 1, S, w]
                if holiday is not None:
                    self._holiday_view = sliding_window_view(holiday, width, axis=1)  # [n, T - w + 1, w]

    def __len__(self) -> int:
        return len(self.windows)

    def _block(self, indices: np.ndarray) -> np.ndarray:
        series = self.windows.series_idx[indices]
        start = self.windows.origin[indices] - self.history_length
        return self._view[series, start]

    def _histories(self, indices: np.ndarray) -> np.ndarray:
        """``[B, L]`` view of the history inputs of windows ``indices``."""
        series = self.windows.series_idx[indices]
        start = self.windows.origin[indices] - self.history_length
        return self._history_view[series, start][:, : self.history_length]

    def __getitems__(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        block = self._block(idx)
        # Split with numpy: a torch copy here would start its thread pool for a tiny job.
        item = {
            "history": torch.from_numpy(np.ascontiguousarray(self._histories(idx))),
            "target": torch.from_numpy(np.ascontiguousarray(block[:, self.history_length :])),
            "series_idx": torch.from_numpy(self.windows.series_idx[idx]),
            "origin": torch.from_numpy(self.windows.origin[idx]),
        }
        if self._shared_view is not None:
            start = self.windows.origin[idx] - self.history_length
            shared = self._shared_view[start].transpose(0, 2, 1)  # [B, w, S]
            if self._holiday_view is None:
                item["calendar"] = torch.from_numpy(np.ascontiguousarray(shared))
            else:
                holiday = self._holiday_view[self.windows.series_idx[idx], start]  # [B, w]
                item["calendar"] = torch.from_numpy(np.concatenate([shared, holiday[..., None]], axis=-1))
        return item

    def __getitem__(self, index: int | Sequence[int] | np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.dim() == 0):
            item = self.__getitems__([int(index)])
            return {key: value[0] for key, value in item.items()}
        return self.__getitems__(index)

    def history_array(self) -> np.ndarray:
        """History inputs of all windows, float32 [n_windows, L] (evaluation-sized splits only)."""
        if not len(self):
            return np.empty((0, self.history_length), dtype=np.float32)
        return self._histories(np.arange(len(self))).copy()

    def target_array(self) -> np.ndarray:
        """Targets of all windows, float32 [n_windows, H] (evaluation-sized splits only)."""
        return self._all()[:, self.history_length :].copy()

    def _all(self) -> np.ndarray:
        if not len(self):
            return np.empty((0, self.history_length + self.horizon_length), dtype=np.float32)
        return self._block(np.arange(len(self)))
