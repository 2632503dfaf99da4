"""Training progress as plain lines when output goes to a file instead of a terminal.

On a terminal Lightning draws its progress bar. Piped to a file (``make run > run.log``),
a redrawn bar is noise, so :func:`progress_callbacks` swaps it for :class:`EpochLines`: one
flushed line per epoch with the epoch's losses, elapsed time and the remaining time at the
mean pace of the epochs so far, and inside an epoch one line at least every
``trainer.progress_every_s`` seconds (a step budget is often a single long epoch).
``trainer.progress_lines=true`` prints the lines on a terminal too: sweep trials run side by
side, and their bars would overwrite each other.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any, Callable, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

SHOWN = ("train/loss", "val/loss", "val/crps", "val/coverage-0.9")


def _clock(seconds: float) -> str:
    return str(dt.timedelta(seconds=int(round(max(seconds, 0.0)))))


class EpochLines(Callback):
    """``epoch 3/8  train/loss=0.31  val/crps=151.2  elapsed 0:00:42  ETA 0:01:10``.

    Under a step budget (``trainer.max_epochs=null``) the count is in optimiser steps:
    ``step 381/2000 (epoch 3)  …``, with the ETA at the mean pace of the steps so far.
    Inside an epoch, after a training step, a line of the same form once ``every`` seconds
    (wall, by ``clock``) have passed since the last line: ``val/*`` are the latest
    validation's, followed by ``(at step N)`` when that validation is older than the line. The check costs one clock read per step; metrics are read (a host copy of
    a few scalars) only when a line is printed. ``label`` leads every line (``trial 3``).
    """

    def __init__(self, every: Optional[float] = None, label: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.label = f"{label}: " if label else ""
        self.clock = clock
        self.started = 0.0
        self.last_line = 0.0
        self.first_epoch = 0
        self.first_step = 0
        self.val_step: Optional[int] = None  # the step of the latest validation (not the sanity check)

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.started = self.last_line = self.clock()
        self.first_epoch = trainer.current_epoch  # a resumed run times only its own epochs
        self.first_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every is not None and self.clock() - self.last_line >= self.every:
            self._line(trainer, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._line(trainer, None)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.val_step = trainer.global_step

    def _line(self, trainer: pl.Trainer, batch_idx: Optional[int]) -> None:
        """One line; ``batch_idx``: inside an epoch, after that batch (None: at the epoch's end)."""
        now = self.clock()
        self.last_line = now
        elapsed = now - self.started
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            total = trainer.max_epochs
            batches = _batches_per_epoch(trainer)
            if batch_idx is not None and batches:  # the share of the epoch under way
                part = min(batch_idx + 1, batches) / batches
                done: float = trainer.current_epoch + part
                count = f"epoch {trainer.current_epoch + 1}/{total} ({100 * part:.0f} %)"
            else:
                done = trainer.current_epoch + 1
                count = f"epoch {done}/{total}"
            pace = elapsed / max(done - self.first_epoch, 1e-9)
        else:
            done, total = trainer.global_step, max(trainer.max_steps, trainer.global_step)
            count = f"step {done}/{total} (epoch {trainer.current_epoch + 1})"
            pace = elapsed / max(done - self.first_step, 1)
        eta = pace * max(total - done, 0)
        metrics = trainer.callback_metrics
        shown = "  ".join(f"{k}={float(metrics[k]):.5g}" for k in SHOWN if k in metrics)
        if self.val_step is not None and self.val_step != trainer.global_step and "val/crps" in metrics:
            shown += f" (at step {self.val_step})"  # not this step's: the latest validation's
        print(f"{self.label}{count}  {shown}  elapsed {_clock(elapsed)}  ETA {_clock(eta)}",
              file=sys.stdout, flush=True)


def _batches_per_epoch(trainer: pl.Trainer) -> int:
    """Lightning's ``num_training_batches`` (0 when unknown: an iterable without a length)."""
    batches = getattr(trainer, "num_training_batches", 0)
    return int(batches) if isinstance(batches, (int, float)) and 0 < batches < float("inf") else 0


def show_bar(enabled: bool, lines: bool = False) -> bool:
    """Lightning's bar only where someone watches a terminal, and no lines were asked for."""
    return enabled and not lines and sys.stdout.isatty()


def progress_callbacks(enabled: bool, lines: bool = False, every: Optional[float] = None,
                       label: str = "") -> list[Callback]:
    """:class:`EpochLines` where the bar is not drawn: output piped (with the bar enabled), or
    ``lines`` asked for; ``every``: seconds between lines inside an epoch."""
    wanted = lines or (enabled and not show_bar(enabled))
    return [EpochLines(every=every, label=label)] if wanted else []
