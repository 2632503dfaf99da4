"""Training progress as plain lines when output goes to a file instead of a terminal.

On a terminal Lightning draws its progress bar. Piped to a file (``make run > run.log``),
a redrawn bar is noise, so :func:`progress_callbacks` swaps it for :class:`EpochLines`: one
flushed line per epoch with the epoch's losses, elapsed time and the remaining time at the
mean pace of the epochs so far.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

SHOWN = ("train/loss", "val/loss", "val/crps", "val/coverage-0.9")


def _clock(seconds: float) -> str:
    return str(dt.timedelta(seconds=int(round(max(seconds, 0.0)))))


class EpochLines(Callback):
    """``epoch 3/8  train/loss=0.31  val/crps=151.2  elapsed 0:00:42  ETA 0:01:10``.

    Under a step budget (``trainer.max_epochs=null``) the count is in optimiser steps:
    ``step 381/2000 (epoch 3)  …``, with the ETA at the mean pace of the steps so far.
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.first_epoch = 0
        self.first_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.started = time.monotonic()
        self.first_epoch = trainer.current_epoch  # a resumed run times only its own epochs
        self.first_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        elapsed = time.monotonic() - self.started
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            done = trainer.current_epoch + 1
            total = trainer.max_epochs
            count, pace = f"epoch {done}/{total}", elapsed / max(done - self.first_epoch, 1)
        else:
            done, total = trainer.global_step, max(trainer.max_steps, trainer.global_step)
            count = f"step {done}/{total} (epoch {trainer.current_epoch + 1})"
            pace = elapsed / max(done - self.first_step, 1)
        eta = pace * max(total - done, 0)
        metrics = trainer.callback_metrics
        shown = "  ".join(f"{k}={float(metrics[k]):.5g}" for k in SHOWN if k in metrics)
        print(f"{count}  {shown}  elapsed {_clock(elapsed)}  ETA {_clock(eta)}", file=sys.stdout, flush=True)


def show_bar(enabled: bool) -> bool:
    """Lightning's bar only where someone watches a terminal."""
    return enabled and sys.stdout.isatty()


def progress_callbacks(enabled: bool) -> list[Callback]:
    return [EpochLines()] if enabled and not show_bar(enabled) else []
