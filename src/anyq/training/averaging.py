"""Weight averaging: an exponential moving average of the weights (``trainer.ema_decay``).

Lightning's own :class:`~pytorch_lightning.callbacks.EMAWeightAveraging` keeps the average
(``w_avg <- decay * w_avg + (1 - decay) * w`` after every optimiser step; Polyak and Juditsky
1992) and swaps it in for every validation, so ``val/crps``, the best checkpoint and the tested
and served weights are the average's. Buffers are averaged too (``use_buffers``; the sampler's
statistics are read from the trained model, never from the average). One change: a checkpoint
loaded to be tested keeps its ``state_dict`` (the average) instead of the training weights the
callback restores when a fit resumes.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn


class AveragedWeights(EMAWeightAveraging):
    """EMA of the weights with ``decay`` in (0, 1); tests score the averaged weights."""

    def __init__(self, decay: float) -> None:
        super().__init__(decay=decay, use_buffers=True)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: the average and the training weights
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
