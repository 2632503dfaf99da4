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
    """``epoch 3/8  train/loss=0.31  val/crps=151.2  elapsed 0:00:42  ETA 0:01:10``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.first_epoch = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.started = time.monotonic()
        self.first_epoch = trainer.current_epoch  # a resumed run times only its own epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        done = trainer.current_epoch + 1
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else done
        elapsed = time.monotonic() - self.started
        eta = elapsed / max(done - self.first_epoch, 1) * max(total - done, 0)
        metrics = trainer.callback_metrics
        shown = "  ".join(f"{k}={float(metrics[k]):.5g}" for k in SHOWN if k in metrics)
        print(f"epoch {done}/{total}  {shown}  elapsed {_clock(elapsed)}  ETA {_clock(eta)}",
              file=sys.stdout, flush=True)


def show_bar(enabled: bool) -> bool:
    """Lightning's bar only where someone watches a terminal."""
    return enabled and sys.stdout.isatty()


def progress_callbacks(enabled: bool) -> list[Callback]:
    return [EpochLines()] if enabled and not show_bar(enabled) else []
