"""Lightning module: one training recipe and one evaluation protocol for every variant.

Training draws levels with the model's sampler; validation and test always score the fixed
grid G so that numbers compare across variants and epochs (docs/design.md §3).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision

from anyq.errors import NonFiniteLossError
from anyq.metrics.functional import pinball_loss
from anyq.metrics.levels import evaluation_grid
from anyq.metrics.scorer import ForecastScorer
from anyq.model.forecaster import AnyQuantileForecaster
from anyq.training.schedule import lr_factor
from anyq.training.schema import EvaluationConfig, OptimConfig


_OPTIM, _EVALUATION = OptimConfig(), EvaluationConfig()  # defaults declared once, in the schema
#: Devices torch's fused Adam runs on (``torch.optim.Adam(fused=True)``).
FUSED_ADAM_DEVICES = ("cpu", "cuda", "mps")


class ForecastingModule(pl.LightningModule):
    def __init__(
        self,
        forecaster: AnyQuantileForecaster,
        *,
        num_series: int,
        lr: float = _OPTIM.lr,
        warmup_updates: int = _OPTIM.warmup_updates,
        weight_decay: float = _OPTIM.weight_decay,
        schedule: str = _OPTIM.schedule,
        min_lr_ratio: float = _OPTIM.min_lr_ratio,
        num_levels: int = _EVALUATION.num_levels,
        val_num_levels: int = _EVALUATION.val_num_levels,
        coverage: tuple[float, ...] = tuple(_EVALUATION.coverage),
    ) -> None:
        super().__init__()
        self.forecaster = forecaster
        self.lr = lr
        self.warmup_updates = warmup_updates
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.min_lr_ratio = min_lr_ratio
        self.register_buffer("levels", evaluation_grid(num_levels), persistent=False)
        self.register_buffer("val_levels", evaluation_grid(val_num_levels), persistent=False)
        self.num_series = num_series
        self.coverage = tuple(coverage)
        self.val_scorer = ForecastScorer(self.val_levels, num_series, coverage_levels=self.coverage)
        self._val_loss_sum = torch.zeros(())

    # ----------------------------------------------------------------- training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self.forecaster.training_loss(batch["history"], batch["target"], calendar=batch.get("calendar"))
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0 and not torch.isfinite(loss):
            raise NonFiniteLossError(f"train/loss is {loss.item()} at step {self.global_step}")
        # One key per name: logging a key on step and epoch at once renames it to
        # train/loss_step and train/loss_epoch, and the guide's train/loss would not exist.
        size = batch["history"].shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=size)
        return loss

    def configure_optimizers(self) -> Any:
        """Adam, fused where torch has the kernel for every parameter's device: one pass over
        the weights instead of a loop of per-tensor ops (10 ms less per step of the default
        model on one CPU thread: 13.6 -> 3.9 ms, docs/design.md §2). Not fused when the
        gradients are clipped in mixed precision (``trainer.precision=16-mixed`` or
        ``bf16-mixed`` with ``gradient_clip_val``): a fused Adam unscales the gradients inside
        its step, after Lightning would clip them, and Lightning refuses the pair."""
        fused = all(p.device.type in FUSED_ADAM_DEVICES for p in self.parameters()) and not (
            isinstance(self.trainer.precision_plugin, MixedPrecision) and bool(self.trainer.gradient_clip_val))
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay,
                                     fused=True if fused else None)
        total = int(self.trainer.estimated_stepping_batches) if self.schedule == "cosine" else 0
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(self.schedule, step, self.warmup_updates, total, self.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # --------------------------------------------------------------- evaluation
    def _forecast_grid(
        self, history: torch.Tensor, levels: torch.Tensor, calendar: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forecasts on a grid; a monotone model is rearranged over that grid itself (sorted),
        which is what it serves on its own grid and 2.5x cheaper for the 39 validation levels
        than reading them off the 99-level rearrangement."""
        forecast = self.forecaster(history, levels.to(history.dtype).expand(history.shape[0], -1), calendar, raw=True)
        return forecast if self.forecaster.monotone == "none" else forecast.sort(dim=-1).values

    def on_validation_epoch_start(self) -> None:
        self.val_scorer.reset()
        self._val_loss_sum = torch.zeros((), device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        forecast = self._forecast_grid(batch["history"], self.val_levels, batch.get("calendar"))
        self.val_scorer.update(forecast, batch["target"], batch["series_idx"])
        scale = self.forecaster.scale_of(batch["history"])  # [N, 1]: the training loss's scale
        loss = pinball_loss(forecast / scale[..., None], batch["target"] / scale, self.val_levels)
        finite = torch.isfinite(batch["target"]).all(dim=1)
        self._val_loss_sum = self._val_loss_sum + loss[finite].mean(dim=(1, 2)).sum()

    def on_validation_epoch_end(self) -> None:
        scores = self.val_scorer.compute()
        n_scored = max(1, int(scores["n_windows"]))
        metrics = {f"val/{k}": float(v) for k, v in scores.items() if not k.startswith("n_")}
        metrics["val/loss"] = float(self._val_loss_sum) / n_scored
        metrics["val/coverage_error-0.9"] = abs(metrics["val/coverage-0.9"] - 0.9)
        self.log_dict({k: v for k, v in metrics.items() if k != "val/crps"})
        self.log("val/crps", metrics["val/crps"], prog_bar=True)
        # the per-check record is kept by anyq.training.checkpoints.RunHistory
        if not self.trainer.sanity_checking and not np.isfinite(metrics["val/crps"]):
            raise NonFiniteLossError(f"val/crps is {metrics['val/crps']} at step {self.global_step}")

    def fit_conformal(self, dataloader) -> None:
        """Fit the forecaster's conformal offsets on the windows of ``dataloader`` (validation)."""
        self.forecaster.fit_conformal({k: v.to(self.device) for k, v in batch.items()} for batch in dataloader)

    @property
    def calibrated(self) -> bool:
        conformal = self.forecaster.conformal
        return conformal is not None and bool(conformal.fitted)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """The batch's forecasts on the evaluation grid, scored by
        :class:`anyq.training.evaluation.TestScores`: ``forecast``, ``raw`` and (calibrated
        model) ``calibrated``, each ``[N, H, Q]``, with ``target [N, H]``, ``series_idx [N]``
        and ``origin [N]``."""
        history = batch["history"]
        levels = self.levels.to(history.dtype).expand(history.shape[0], -1)
        forecast, raw = self.forecaster.forward_with_raw(history, levels, batch.get("calendar"), calibrated=False)
        outputs = {"forecast": forecast, "raw": raw, "target": batch["target"],
                   "series_idx": batch["series_idx"], "origin": batch["origin"]}
        if self.calibrated:
            grid = self.forecaster.monotone == "none" or levels.shape[-1] == self.forecaster.monotone_levels.numel() \
                and bool((self.levels == self.forecaster.monotone_levels.to(self.levels.dtype)).all())
            outputs["calibrated"] = (self.forecaster.calibrate_raw(history, raw, levels) if grid
                                     else self.forecaster(history, levels, batch.get("calendar")))
        return outputs
