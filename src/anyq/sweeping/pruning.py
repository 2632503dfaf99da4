"""Report val/crps to the job's Optuna trial after each validation, and stop when told."""

from __future__ import annotations

import optuna
import pytorch_lightning as pl


class TrialPruningCallback(pl.Callback):
    """Like optuna-integration's Lightning callback, without the extra dependency.

    Raises :class:`optuna.TrialPruned`; the job records the run as pruned and the sweep
    engine tells Optuna.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "val/crps") -> None:
        self.trial = trial
        self.monitor = monitor
        self.checks = 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        # Optuna's step is the validation index (0, 1, ...; the epoch under an epoch budget):
        # the pruners' resources are validations, each epoch or every val_check_interval steps
        check = self.checks
        self.checks += 1
        self.trial.report(value, step=check)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"trial {self.trial.number} pruned at validation {check}, step {trainer.global_step} "
                f"({self.monitor}={value:.6g})"
            )
