"""Piped training progress counts what the budget counts: epochs, or optimiser steps."""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch

from anyq.training.progress import EpochLines


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
