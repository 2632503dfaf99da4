"""Gap filling, window selection, batched fetching and the Lightning data module."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from anyq.data import DataError, ForecastDataModule, Panel, SplitRanges, WindowDataset, fill_gaps, make_windows
from anyq.data.datamodule import IndexBatchSampler
from anyq.data.windows import empty_series_notice, gap_notice
from anyq.training.schema import DataConfig


def _panel(values: np.ndarray, start: str = "2021-03-01 00:00") -> Panel:
    index = pd.date_range(start, periods=values.shape[1], freq="h")
    return Panel(ids=tuple(f"s{i}" for i in range(values.shape[0])), index=index, values=values)


def test_fill_gaps_interpolates_inside_and_carries_edges():
    nan = np.nan
    values = np.array([[nan, 2.0, nan, nan, 8.0, nan], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [nan] * 6])
    filled, observed = fill_gaps(values)
    np.testing.assert_allclose(filled[0], [2, 2, 4, 6, 8, 8])
    np.testing.assert_allclose(filled[1], 1.0)
    assert np.isnan(filled[2]).all()
    np.testing.assert_array_equal(observed[0], [False, True, False, False, True, False])
    assert filled.dtype == np.float32
    # the same as pandas' linear interpolation with edge values carried out
    reference = pd.DataFrame(values[:2].T).interpolate(limit_direction="both").to_numpy().T
    np.testing.assert_allclose(filled[:2], reference)


def test_eval_windows_on_hand_made_panel():
    # 2 series x 5 days starting 05:00; history 24, horizon 12, one window a day at midnight
    values = np.arange(2 * 120, dtype=np.float64).reshape(2, 120)
    values[1, 70] = np.nan  # in a target of series 1
    panel = _panel(values, start="2021-03-01 05:00")
    ws = make_windows(panel, (0, 120), history_length=24, horizon_length=12, step=24, origin_hour=0)
    # midnights at 19, 43, 67, 91, 115; history needs origin >= 24; target needs origin <= 108
    np.testing.assert_array_equal(ws.origin, [43, 67, 91, 43, 91])
    np.testing.assert_array_equal(ws.series_idx, [0, 0, 0, 1, 1])
    assert (panel.index[ws.origin].hour == 0).all()
    assert ws.n_candidates == 6 and ws.n_skipped_target_gaps == 1 and ws.n_skipped_history_gaps == 0
    # the target range restricts where the TARGET lies; history may come from before it
    ws = make_windows(panel, (60, 100), history_length=24, horizon_length=12, step=24, origin_hour=0)
    np.testing.assert_array_equal(ws.origin, [67])
    assert ws.n_candidates == 2 and ws.n_skipped_target_gaps == 1


def test_train_windows_and_history_rules():
    values = np.ones((3, 100))
    values[0, 10:16] = np.nan  # 6 missing hours in some histories of series 0
    values[2, :30] = np.nan  # series 2 starts late, at t = 30
    panel = _panel(values)
    ws = make_windows(panel, (0, 100), history_length=20, horizon_length=5, step=1, max_history_gap=0.25)
    origins = np.arange(20, 96)
    assert ws.n_candidates == 3 * origins.size
    # series 0: origins 16..21 hold target NaN? no (NaN at 10..15 < 20); history of o covers o-20..o-1:
    # it holds min(6, overlap) NaN; > 5 NaN (25 % of 20) only when all six are inside: o in 20..30
    s0 = ws.origin[ws.series_idx == 0]
    np.testing.assert_array_equal(s0, np.arange(31, 96))
    # series 2: targets before t=30 are outside its span (o + 4 < 30 -> o <= 25), targets
    # touching t < 30 have target gaps (o = 26..29), histories before t = 30 are refused (o < 50)
    s2 = ws.origin[ws.series_idx == 2]
    np.testing.assert_array_equal(s2, np.arange(50, 96))
    assert ws.n_outside_span == 6
    assert ws.n_skipped_target_gaps == 4
    assert ws.n_skipped_history_gaps == 11 + 20
    assert ws.n_candidates == len(ws) + ws.n_skipped_target_gaps + ws.n_skipped_history_gaps + ws.n_outside_span
    # with a step of 4 the grid starts at the first feasible origin
    np.testing.assert_array_equal(make_windows(panel, (0, 100), 20, 5, step=4).origin[:3], [32, 36, 40])
    np.testing.assert_array_equal(make_windows(panel, (0, 100), 20, 5, step=4).origin[-3:], [84, 88, 92])
    shifted = make_windows(panel, (25, 100), 20, 5, step=4)
    np.testing.assert_array_equal(shifted.origin[shifted.series_idx == 1][:2], [25, 29])
    relaxed = make_windows(panel, (0, 100), history_length=20, horizon_length=5, step=1, max_history_gap=0.3)
    np.testing.assert_array_equal(relaxed.origin[relaxed.series_idx == 0], origins)


def test_window_argument_checks():
    panel = _panel(np.ones((1, 100)))
    with pytest.raises(ValueError, match="multiple of 24"):
        make_windows(panel, (0, 100), 10, 5, step=12, origin_hour=0)
    with pytest.raises(ValueError, match="max_history_gap"):
        make_windows(panel, (0, 100), 10, 5, step=1, max_history_gap=2.0)


def test_window_dataset_slices_match_manual_slicing():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 200)).astype(np.float32)
    panel = _panel(values)
    ws = make_windows(panel, (0, 200), history_length=24, horizon_length=6, step=5)
    ds = WindowDataset(values, ws)
    picks = [0, 7, len(ds) - 1, 7]
    batch = ds.__getitems__(picks)
    assert batch["history"].shape == (4, 24) and batch["target"].shape == (4, 6)
    assert batch["history"].dtype == torch.float32 and batch["origin"].dtype == torch.int64
    for row, i in enumerate(picks):
        s, o = ws.series_idx[i], ws.origin[i]
        np.testing.assert_array_equal(batch["history"][row].numpy(), values[s, o - 24 : o])
        np.testing.assert_array_equal(batch["target"][row].numpy(), values[s, o : o + 6])
        assert batch["series_idx"][row] == s and batch["origin"][row] == o
    single = ds[7]
    np.testing.assert_array_equal(single["target"].numpy(), batch["target"][1].numpy())
    assert single["history"].shape == (24,)
    history, target = ds.history_array(), ds.target_array()
    assert history.shape == (len(ds), 24) and target.shape == (len(ds), 6)
    np.testing.assert_array_equal(target[picks], batch["target"].numpy())
    # the auto-collation route of torch uses __getitems__ too
    loader = DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 8, False), collate_fn=lambda b: b)
    first = next(iter(loader))
    np.testing.assert_array_equal(first["history"].numpy(), history[:8])
    with pytest.raises(ValueError, match="gap-filled"):
        WindowDataset(np.where(values > 2, np.nan, values), ws)


def test_index_batch_sampler_epochs():
    sampler = IndexBatchSampler(10, 4, shuffle=True, seed=3)
    first = list(sampler)
    assert [len(b) for b in first] == [4, 4, 2] and len(sampler) == 3
    assert sorted(np.concatenate(first).tolist()) == list(range(10))
    second = np.concatenate(list(sampler))
    assert not np.array_equal(np.concatenate(first), second)  # a new order each pass
    sampler.set_epoch(0)
    np.testing.assert_array_equal(np.concatenate(list(sampler)), np.concatenate(first))  # reproducible
    assert len(IndexBatchSampler(10, 4, shuffle=False, drop_last=True)) == 2


def _module(test=(24 * 35, 24 * 40), **kwargs) -> ForecastDataModule:
    values = np.sin(np.arange(24 * 40) / 5.0)[None, :].repeat(2, axis=0) + 2.0
    values[1, 700:730] = np.nan
    panel = _panel(values, start="2021-01-01")
    splits = SplitRanges(train=(0, 24 * 30), val=(24 * 30, 24 * 35), test=test)
    options = dict(history_length=48, horizon_length=24, train_step=6, train_batch_size=16, eval_batch_size=8)
    seed = kwargs.pop("seed", 0)
    return ForecastDataModule(panel, splits, DataConfig(**(options | kwargs)), seed=seed)


def test_a_split_that_loses_windows_to_gaps_says_so_and_names_the_thin_series():
    values = np.ones((3, 100))
    values[0, 10:16] = np.nan
    values[2, :30] = np.nan  # the panel of test_train_windows_and_history_rules: 35 of 228 left out
    ws = make_windows(_panel(values), (0, 100), history_length=20, horizon_length=5, step=1, max_history_gap=0.25)
    assert gap_notice("train", ws, ("s0", "s1", "s2")) == (
        "train split: 35 of 228 windows left out for gaps (4 missing a target hour, 31 missing too much history)")
    values = np.ones((2, 100))
    values[0, ::4] = np.nan  # every 5-hour target of s0 misses an hour
    ws = make_windows(_panel(values), (0, 100), history_length=20, horizon_length=5, step=1, max_history_gap=0.25)
    assert gap_notice("train", ws, ("s0", "s1")) == (
        "train split: 76 of 152 windows left out for gaps (76 missing a target hour, 0 missing too much history); "
        "fewest windows: s0 0, against 76 for the fullest series")
    assert gap_notice("val", make_windows(_panel(np.ones((2, 100))), (0, 100), 20, 5, step=1), ("s0", "s1")) is None


def test_a_series_without_a_window_in_a_split_is_named():
    values = np.ones((3, 100))
    values[0, 60:] = np.nan  # s0 ends at hour 59: no window of the hours 70-100
    ws = make_windows(_panel(values), (70, 100), history_length=20, horizon_length=5, step=1)
    assert ws.n_outside_span > 0 and gap_notice("test", ws, ("s0", "s1", "s2")) is None  # not a gap
    assert empty_series_notice("test", ws, ("s0", "s1", "s2")) == (
        "test split: 1 of 3 series without a window (s0: their data do not reach the split's hours, or gaps "
        "leave no complete window); the split covers the other 2 only")
    assert empty_series_notice("test", make_windows(_panel(np.ones((3, 100))), (70, 100), 20, 5, step=1),
                               ("s0", "s1", "s2")) is None


def test_datamodule_windows_summary_and_loaders():
    dm = _module()
    summary = dm.summary()
    assert summary["val"]["range"] == "2021-01-31 00:00 to 2021-02-04 23:00"
    assert summary["val"]["windows"] == 2 * 4  # midnights Jan 31..Feb 3 (Feb 4 lacks 24 h)
    assert summary["train"]["skipped_target_gaps"] > 0
    for name in ("train", "val", "test"):
        counts = summary[name]
        assert counts["candidates"] == (
            counts["windows"] + counts["skipped_target_gaps"] + counts["skipped_history_gaps"] + counts["outside_span"]
        )
    batches = list(dm.train_dataloader())
    seen = torch.cat([b["origin"] * 10 + b["series_idx"] for b in batches])
    assert len(seen) == len(dm.train_windows) and len(set(seen.tolist())) == len(seen)
    assert batches[0]["history"].shape == (16, 48)
    again = torch.cat([b["origin"] for b in _module().train_dataloader()])
    assert torch.equal(again, torch.cat([b["origin"] for b in batches]))  # same seed, same order
    other = torch.cat([b["origin"] for b in _module(seed=1).train_dataloader()])
    assert not torch.equal(other, again)
    val = next(iter(dm.val_dataloader()))
    np.testing.assert_array_equal(val["origin"].numpy(), dm.val_windows.origin[:8])
    assert (dm.panel.index[val["origin"].numpy()].hour == 0).all()


def test_datamodule_refuses_split_without_window():
    message = r"split 'test' \(2021-02-05 00:00 to 2021-02-05 22:00\) has no complete window"
    with pytest.raises(DataError, match=message):
        _module(test=(24 * 35, 24 * 35 + 23))  # 23 target hours for a 24-hour horizon


def test_datamodule_runs_in_lightning():
    pl = pytest.importorskip("pytorch_lightning")

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(48, 24)
            self.train_origins = []

        def training_step(self, batch, _):
            self.train_origins.append(batch["origin"])
            return torch.nn.functional.l1_loss(self.layer(batch["history"]), batch["target"])

        def validation_step(self, batch, _):
            self.log("val/loss", torch.nn.functional.l1_loss(self.layer(batch["history"]), batch["target"]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    model = Tiny()
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    dm = _module()
    trainer.fit(model, datamodule=dm)
    per_epoch = len(model.train_origins) // 2
    epoch0 = torch.cat(model.train_origins[:per_epoch])
    epoch1 = torch.cat(model.train_origins[per_epoch:])
    assert len(epoch0) == len(dm.train_windows) and not torch.equal(epoch0, epoch1)
    expected = dm.train_windows.origin[np.random.default_rng([0, 1]).permutation(len(dm.train_windows))]
    np.testing.assert_array_equal(epoch1.numpy(), expected)  # Lightning set the epoch: (seed, 1)


def test_a_split_notice_is_said_once_a_process(caplog):
    """The job's baseline builds its own datamodule on the same data: the line is not repeated."""
    values = np.sin(np.arange(24 * 40) / 5.0)[None, :].repeat(2, axis=0) + 2.0
    values[1, 24 * 34:] = np.nan  # series s1 ends before the test split
    splits = SplitRanges(train=(0, 24 * 30), val=(24 * 30, 24 * 35), test=(24 * 35, 24 * 40))
    options = DataConfig(history_length=48, horizon_length=24, train_step=6, train_batch_size=16, eval_batch_size=8)
    caplog.set_level(logging.WARNING, logger="anyq.data.datamodule")
    for _ in range(2):
        ForecastDataModule(_panel(values, start="2021-01-01"), splits, options, seed=0)
    assert caplog.text.count("test split: 1 of 2 series without a window (s1") == 1
