"""Piped training progress counts what the budget counts: epochs, or optimiser steps."""

from __future__ import annotations

import re
from types import SimpleNamespace

import optuna
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import create_trial

from anyq.reporting.study_progress import print_summary, print_trials, short_names
from anyq.training.epoch_progress import EpochLines


def trainer(**kw):
    base = dict(max_epochs=None, max_steps=-1, global_step=0, current_epoch=0,
                callback_metrics={"train/loss": torch.tensor(0.25), "val/crps": torch.tensor(151.2)})
    return SimpleNamespace(**{**base, **kw})


def test_step_budget_lines_count_steps(capsys):
    lines = EpochLines()
    lines.on_train_start(trainer(max_epochs=-1, max_steps=2000), None)
    lines.on_train_epoch_end(trainer(max_epochs=-1, max_steps=2000, global_step=500, current_epoch=3), None)
    out = capsys.readouterr().out
    assert re.fullmatch(r"step 500/2000 \(epoch 4\)  train/loss=0\.25  val/crps=151\.2  elapsed \S+  ETA \S+\n", out)


def test_epoch_budget_lines_count_epochs(capsys):
    lines = EpochLines()
    lines.on_train_start(trainer(max_epochs=8), None)
    lines.on_train_epoch_end(trainer(max_epochs=8, global_step=300, current_epoch=2), None)
    assert capsys.readouterr().out.startswith("epoch 3/8  train/loss=0.25  val/crps=151.2  elapsed ")


class FakeClock:
    """Wall seconds that advance only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_at_least_every_interval_inside_an_epoch(capsys):
    clock = FakeClock()
    lines = EpochLines(every=30.0, label="adaptive_attention, trial 3", clock=clock)
    state = dict(max_epochs=-1, max_steps=300)
    lines.on_train_start(trainer(**state), None)
    for step, seconds in ((1, 10.0), (2, 29.9)):  # under 30 s since the start: silent
        clock.now = 1000.0 + seconds
        lines.on_train_batch_end(trainer(**state, global_step=step), None, None, None, step - 1)
    assert capsys.readouterr().out == ""
    clock.now = 1030.0  # 30 s after the start, at step 60: 0.5 s a step, 240 steps left = 2 min
    lines.on_train_batch_end(trainer(**state, global_step=60), None, None, None, 59)
    assert capsys.readouterr().out == ("adaptive_attention, trial 3: step 60/300 (epoch 1)  train/loss=0.25  "
                                       "val/crps=151.2  elapsed 0:00:30  ETA 0:02:00\n")
    clock.now = 1059.0  # 29 s after the last line: silent; at 1060 the next one
    lines.on_train_batch_end(trainer(**state, global_step=110), None, None, None, 109)
    assert capsys.readouterr().out == ""
    clock.now = 1060.0
    lines.on_train_batch_end(trainer(**state, global_step=120), None, None, None, 119)
    assert capsys.readouterr().out.startswith("adaptive_attention, trial 3: step 120/300 (epoch 1)  ")
    lines.on_train_epoch_end(trainer(**state, global_step=128), None)  # an epoch's line restarts the count
    capsys.readouterr()
    clock.now = 1089.0
    lines.on_train_batch_end(trainer(**state, global_step=150), None, None, None, 21)
    assert capsys.readouterr().out == ""


def test_validation_scores_from_an_earlier_step_say_which(capsys):
    lines = EpochLines()
    state = dict(max_epochs=-1, max_steps=2000)
    lines.on_train_start(trainer(**state), None)
    lines.on_validation_end(trainer(**state, global_step=0, sanity_checking=True), None)  # not a check of its own
    lines.on_train_epoch_end(trainer(**state, global_step=100), None)
    assert "val/crps=151.2  elapsed" in capsys.readouterr().out
    lines.on_validation_end(trainer(**state, global_step=200, sanity_checking=False), None)
    lines.on_train_epoch_end(trainer(**state, global_step=200), None)  # the check of this very step
    assert "val/crps=151.2  elapsed" in capsys.readouterr().out
    lines.on_train_epoch_end(trainer(**state, global_step=300), None)
    assert "val/crps=151.2 (at step 200)  elapsed" in capsys.readouterr().out


def test_inside_an_epoch_budget_the_line_shows_the_epochs_share(capsys):
    clock = FakeClock()
    lines = EpochLines(every=30.0, clock=clock)
    lines.on_train_start(trainer(max_epochs=4), None)
    clock.now = 1045.0  # a quarter of epoch 1 in 45 s: 3 min an epoch, 3.75 epochs left
    lines.on_train_batch_end(trainer(max_epochs=4, global_step=16, num_training_batches=64), None, None, None, 15)
    assert capsys.readouterr().out == ("epoch 1/4 (25 %)  train/loss=0.25  val/crps=151.2  elapsed 0:00:45  "
                                       "ETA 0:11:15\n")


def test_without_an_interval_only_epochs_print(capsys):
    clock = FakeClock()
    lines = EpochLines(clock=clock)
    lines.on_train_start(trainer(max_epochs=-1, max_steps=300), None)
    clock.now = 5000.0
    lines.on_train_batch_end(trainer(max_epochs=-1, max_steps=300, global_step=5), None, None, None, 4)
    assert capsys.readouterr().out == ""


def test_progress_lines_replace_the_bar_on_a_terminal(monkeypatch):
    from anyq.training import epoch_progress

    monkeypatch.setattr(epoch_progress.sys.stdout, "isatty", lambda: True)
    assert epoch_progress.show_bar(True) and not epoch_progress.progress_callbacks(True)
    assert not epoch_progress.show_bar(True, lines=True)
    (line,) = epoch_progress.progress_callbacks(False, lines=True, every=30.0, label="x")
    assert isinstance(line, EpochLines) and line.every == 30.0 and line.label == "x: "
    assert epoch_progress.progress_callbacks(False) == []


def test_a_sweeps_trial_table_has_a_column_per_setting_and_fits_80_columns(capsys):
    """The default sweep's four settings: a column each, headed by the key's shortest unique
    ending (two lines when long), the full keys in the caption; within 80 columns."""
    study = optuna.create_study(study_name="adaptive_attention")
    space = {"model.sampler.num_adaptive_quantiles": IntDistribution(1, 16),
             "model.attention.adaptive_temp": FloatDistribution(0.1, 2.0),
             "model.attention.n_heads": CategoricalDistribution([2, 4, 8]),
             "model.attention.num_blocks": IntDistribution(1, 3)}
    for number, (values, crps) in enumerate([((8, 1.18765, 2, 3), 1209.5), ((5, 0.21234, 4, 1), 1201.1)]):
        study.add_trial(create_trial(params=dict(zip(space, values)), distributions=space, value=crps))
    print_trials(study, ["val/crps"])
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line.rstrip()) for line in lines if "─" not in line) <= 80
    rows = [line.split() for line in lines if line.strip().startswith(("0 ", "1 "))]
    assert rows == [["0", "COMPLETE", "1209.5", "-", "8", "1.188", "2", "3"],
                    ["1", "*", "COMPLETE", "1201.1", "-", "5", "0.2123", "4", "1"]]
    headers = " ".join(lines[1:3])
    assert all(part in headers for part in ("num_adaptive_", "quantiles", "adaptive_", "temp", "n_heads", "num_"))
    assert [line.strip() for line in lines[-5:]] == [
        "* best trial", "num_adaptive_quantiles: model.sampler.num_adaptive_quantiles",
        "adaptive_temp: model.attention.adaptive_temp", "n_heads: model.attention.n_heads",
        "num_blocks: model.attention.num_blocks"]
    print_summary({"study_name": "adaptive_attention", "objectives": ["val/crps"],
                   "trials_by_state": {"COMPLETE": 2, "FAIL": 1},
                   "best": {"number": 1, "value": 1201.1, "params": dict(zip(space, (5, 0.21234, 4, 1)))},
                   "importances": {"model.attention.adaptive_temp": 0.6, "model.attention.n_heads": 0.4}})
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["Study adaptive_attention: 3 trials, 2 COMPLETE, 1 FAIL",
                       "best trial #1: val/crps = 1201.1  num_adaptive_quantiles=5 adaptive_temp=0.2123 n_heads=4 "
                       "num_blocks=1"]
    assert "parameter importance (from 2 trials: a rough guide below 10)" in " ".join(" ".join(out[2:4]).split())
    assert short_names(["model.attention.num_blocks", "model.backbone.num_blocks", "optim.lr"]) == {
        "model.attention.num_blocks": "attention.num_blocks", "model.backbone.num_blocks": "backbone.num_blocks",
        "optim.lr": "lr"}
