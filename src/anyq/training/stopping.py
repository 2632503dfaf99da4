"""A stop asked by a signal (:mod:`anyq.interrupts`) ends a Lightning fit between two steps.

Two ways reach the same end, both Lightning's own. :class:`StopOnRequest` sets
``trainer.should_stop`` once a stop is asked, as ``EarlyStopping`` does: the fit ends after
the current step (Lightning first runs the validation an early stop is allowed, so the last
checkpoint is scored). During ``fit``, ``validate`` and ``test`` Lightning also puts its own
SIGTERM handler in front of anyq's (``pytorch_lightning.trainer.connectors.signal_connector``
composes the two): its loops then raise ``SIGTERMException`` at their next batch boundary,
which :func:`lightning_stopped` turns into :class:`~anyq.errors.Terminated`. Neither
interrupts a step, a checkpoint write or a store write half-way.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any, Iterator

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from anyq.errors import Terminated
from anyq.interrupts import requested


class StopOnRequest(Callback):
    """Sets ``trainer.should_stop`` after the first training step that ends once a stop is asked."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if requested() is not None:
            trainer.should_stop = True


@contextmanager
def lightning_stopped() -> Iterator[None]:
    """Around ``trainer.fit``/``trainer.test``: Lightning's own stop on SIGTERM arrives as
    :class:`~anyq.errors.Terminated`.

    Raises:
        Terminated: Lightning raised ``SIGTERMException`` (with the first signal received,
            SIGTERM when anyq's handler did not see it).
    """
    try:
        yield
    except SIGTERMException as exc:
        raise Terminated(requested() or signal.SIGTERM) from exc
