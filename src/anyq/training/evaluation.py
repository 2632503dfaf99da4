"""What a test pass returns: scores on the fixed grid, their curves and the forecasts, kept by
a callback so that nothing is read back off the LightningModule after ``trainer.test``.

The module's ``test_step`` returns, per batch, ``forecast [N, H, Q]`` (rearranged when the
model is monotone), ``raw [N, H, Q]`` (the networks' own per-level forecasts), with a fitted
conformal model ``calibrated [N, H, Q]``, and the batch's ``target [N, H]``, ``series_idx [N]``
and ``origin [N]``. :class:`TestScores` scores them (:class:`anyq.metrics.scorer.ForecastScorer`)
into the metric families ``test/`` (with ``test/crps_raw`` and ``test/crossing_rate_raw`` from
the raw forecasts) and ``test_conformal/``, logs them through the module to every logger, and
keeps the forecasts for reports and ensembles.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from anyq.metrics.scorer import ForecastScorer

_STORED = ("forecast", "target", "series_idx", "origin")


class TestScores(Callback):
    """Scores of the last test pass: ``metrics``, ``curves`` and ``forecasts``.

    Args:
        levels: the evaluation grid ``[Q]`` the module forecasts on in ``test_step``.
        num_series: series of the panel (series indices are ``0 .. num_series - 1``).
        coverage: nominal coverages of the central intervals scored (``test/coverage-0.9``, ...).
        store_forecasts: keep the test forecasts (``forecasts``; {} otherwise).
    """

    def __init__(self, levels: torch.Tensor, num_series: int, coverage: Sequence[float],
                 store_forecasts: bool = True) -> None:
        self.levels = torch.as_tensor(levels).detach().cpu()
        self.store_forecasts = store_forecasts
        self._scorers = {name: ForecastScorer(self.levels, num_series, coverage_levels=tuple(coverage))
                         for name in ("forecast", "raw", "calibrated")}
        self._outputs: dict[str, list[np.ndarray]] = {}
        self._calibrated = False
        self.metrics: dict[str, float] = {}
        self.curves: dict[str, list[float]] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for scorer in self._scorers.values():
            scorer.reset()
        self._outputs = {key: [] for key in _STORED}
        self._calibrated = False
        self.metrics, self.curves = {}, {}

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        for name, scorer in self._scorers.items():
            if name in outputs:
                scorer.update(outputs[name], outputs["target"], outputs["series_idx"])
        self._calibrated = self._calibrated or "calibrated" in outputs
        if self.store_forecasts:
            for key in _STORED:
                self._outputs[key].append(outputs[key].detach().cpu().numpy())

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        scores = self._scorers["forecast"].compute()
        metrics = {f"test/{k}": float(v) for k, v in scores.items()}
        raw = self._scorers["raw"].compute()
        metrics["test/crps_raw"] = float(raw["crps"])
        metrics["test/crossing_rate_raw"] = float(raw["crossing_rate"])
        if self._calibrated:
            conformal = self._scorers["calibrated"].compute()
            metrics.update({f"test_conformal/{k}": float(v) for k, v in conformal.items() if not k.startswith("n_")})
        self.metrics = metrics
        self.curves = self._scorers["forecast"].curves()
        pl_module.log_dict({k: v for k, v in metrics.items() if not k.startswith("test/n_")})

    @property
    def forecasts(self) -> dict[str, np.ndarray]:
        """Test forecasts on the grid with targets and window ids: ``forecast [N, H, Q]``,
        ``target [N, H]``, ``series_idx [N]``, ``origin [N]``, ``levels [Q]`` ({} when not stored)."""
        if not self._outputs.get("forecast"):
            return {}
        arrays = {k: np.concatenate(v) for k, v in self._outputs.items()}
        arrays["levels"] = self.levels.numpy()
        return arrays
