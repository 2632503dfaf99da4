"""TensorBoard diagnostics: what the setup guide says to watch, beside the MLflow metrics.

With ``tracking.tensorboard=true`` (``tracking=mlflow_tensorboard``) a run also writes
TensorBoard event files to ``<paths.root>/tb_logs/<experiment>/<run name>/<run id[:8]>``
(``version_N`` for untracked runs): one folder for every run of the project, so
``make tensorboard`` compares them all, and the folder names the MLflow run it mirrors.
It holds

- the scalars the module logs (``train/loss`` per epoch, ``train/loss_step``, ``val/loss``,
  ``val/crps``, ``val/coverage-0.9``, ...) and the learning rate per step (``lr-Adam``);
- per validation epoch, from the first validation batch: the attention weight
  distribution of every block and head (histograms ``attention/block{b}/head{h}``) and,
  with modulation, the logit factors ``1 + adaptive_temp * w(q) * g_h(q)`` per head
  (``modulation/block{b}/head{h}``);
- per validation epoch, the sampler's bin probabilities over q in [0, 1]
  (``sampler/importance``: a histogram whose buckets are the bins, so TensorBoard's
  histogram view shows the quantile importance evolving; ``sampler/importance_curve``:
  the same as a figure; ``sampler/effective_bins``: exp(entropy), 100 for uniform).

The weights are recorded for one batch only: recording takes the explicit-softmax path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, LearningRateMonitor
from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger

TB_DIR = "tb_logs"


def run_name(cfg: DictConfig) -> str:
    """The run's name, in MLflow and TensorBoard alike: ``tracking.run_name``, or
    ``<variant>-seed<seed>`` (``-test`` appended when ``task=test`` scores a checkpoint)."""
    return cfg.tracking.run_name or f"{cfg.model.variant}-seed{cfg.seed}{'-test' if cfg.task == 'test' else ''}"


def tensorboard_logger(cfg: DictConfig, loggers: Sequence[Any] = ()) -> TensorBoardLogger:
    """The run's TensorBoard logger, named after the MLflow run among ``loggers`` if any."""
    run_id = next((lg.run_id for lg in loggers if isinstance(lg, MLFlowLogger) and lg.run_id), None)
    return TensorBoardLogger(
        save_dir=str(Path(cfg.paths.root) / TB_DIR),
        name=f"{cfg.tracking.experiment}/{run_name(cfg)}",
        version=run_id[:8] if run_id else None,
        default_hp_metric=False,
    )


def diagnostic_callbacks() -> list[Callback]:
    return [LearningRateMonitor(logging_interval="step"), TrainingDiagnostics()]


class TrainingDiagnostics(Callback):
    """Histograms of attention weights and sampler importance into each TensorBoard logger."""

    def __init__(self, figure: bool = True) -> None:
        self.figure = figure

    @staticmethod
    def _writers(trainer: pl.Trainer) -> list[Any]:
        return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    @staticmethod
    def _attention(pl_module: pl.LightningModule) -> Optional[torch.nn.Module]:
        forecaster = getattr(pl_module, "forecaster", None)
        return getattr(forecaster, "attention", None)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        attention = self._attention(pl_module)
        if attention is not None and batch_idx == 0 and not trainer.sanity_checking and self._writers(trainer):
            attention.record_attention = True

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        attention = self._attention(pl_module)
        if attention is None or not attention.record_attention:
            return
        attention.record_attention = False
        step = trainer.global_step
        for writer in self._writers(trainer):
            for b, weights in enumerate(attention.last_attention):  # [N, Q, heads, T, T]
                per_head = weights.transpose(0, 2).reshape(weights.shape[2], -1).float().cpu()
                for h, values in enumerate(per_head):
                    writer.add_histogram(f"attention/block{b}/head{h}", values, step)
            for b, factor in enumerate(attention.last_modulation):  # [N, Q, heads]
                per_head = factor.reshape(-1, factor.shape[-1]).T.float().cpu()
                for h, values in enumerate(per_head):
                    writer.add_histogram(f"modulation/block{b}/head{h}", values, step)
        attention.last_attention, attention.last_modulation = [], []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writers = self._writers(trainer)
        sampler = getattr(getattr(pl_module, "forecaster", None), "sampler", None)
        if trainer.sanity_checking or not writers or sampler is None:
            return
        probs = sampler.probabilities().detach().double().cpu().numpy()
        edges = np.linspace(0.0, 1.0, probs.size + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        effective = float(np.exp(-(probs * np.log(np.clip(probs, 1e-300, None))).sum()))
        figure = importance_figure(edges, probs, trainer.current_epoch) if self.figure else None
        for writer in writers:
            writer.add_histogram_raw(
                "sampler/importance", min=0.0, max=1.0, num=float(probs.sum()),
                sum=float((centres * probs).sum()), sum_squares=float((centres**2 * probs).sum()),
                bucket_limits=edges[1:].tolist(), bucket_counts=probs.tolist(), global_step=trainer.global_step,
            )
            writer.add_scalar("sampler/effective_bins", effective, trainer.global_step)
            if figure is not None:
                writer.add_figure("sampler/importance_curve", figure, trainer.global_step, close=False)


def importance_figure(edges: np.ndarray, probs: np.ndarray, epoch: int) -> Any:
    """Bin probability over q, against the uniform 1 / num_bins (an object, not pyplot state)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3), dpi=80)
    ax = figure.add_subplot()
    ax.stairs(probs, edges, fill=True, alpha=0.6, label="sampler")
    ax.axhline(1.0 / probs.size, color="black", linestyle="--", linewidth=1, label="uniform")
    ax.set(xlim=(0, 1), xlabel="quantile level q", ylabel="bin probability", title=f"epoch {epoch}")
    ax.legend(loc="upper center")
    figure.tight_layout()
    return figure
