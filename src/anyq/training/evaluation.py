"""What a test pass returns: scores on the fixed grid, their curves and the forecasts, kept by
a callback so that nothing is read back off the LightningModule after ``trainer.test``.

The module's ``test_step`` returns, per batch, ``forecast [N, H, Q]`` (rearranged when the
model is monotone), ``raw [N, H, Q]`` (the networks' own per-level forecasts), with a fitted
conformal model ``calibrated [N, H, Q]``, and the batch's ``target [N, H]``, ``series_idx [N]``
and ``origin [N]``. :class:`TestScores` scores them (:class:`anyq.metrics.scorer.ForecastScorer`)
into the metric families ``test/`` (with ``test/crps_raw`` and ``test/crossing_rate_raw`` from
the raw forecasts) and ``test_conformal/``, logs them through the module to every logger, and
keeps the forecasts for reports and ensembles. A model with ``conformal=online`` also gets
``test_online/``: at the end of the pass the validation and test windows are forecast on the
rearrangement grid, run through the online calibration in origin order (from the split-conformal
seed, through validation into test; :mod:`anyq.model.online`), and the test windows' calibrated
forecasts are scored by the same scorer (families: :mod:`anyq.metrics.families`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from anyq.metrics.scorer import ForecastScorer
from anyq.model.forecaster import AnyQuantileForecaster
from anyq.model.online import online_offsets

_STORED = ("forecast", "target", "series_idx", "origin")


@torch.no_grad()
def online_forecasts(forecaster: AnyQuantileForecaster, calibration_batches, test_batches,
                     levels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The online-calibrated forecasts of the test windows, in data units: ``forecast [N, H, Q]``
    on ``levels [Q]``, ``target [N, H]``, ``series_idx [N]``, ``origin [N]`` (in batch order).

    The calibration state starts at the forecaster's fitted split-conformal offsets and runs
    over the windows of ``calibration_batches`` (validation) and then ``test_batches``; each
    window's offsets use only windows fully observed by its origin (:func:`online_offsets`)."""
    if forecaster.conformal is None:
        raise ValueError("online calibration needs a model built with model.conformal=online")
    calibration = forecaster.grid_forecasts(calibration_batches)
    test = forecaster.grid_forecasts(test_batches)
    n_cal = calibration["raw"].shape[0]
    residual = test["residual"] if n_cal == 0 else torch.cat([calibration["residual"], test["residual"]])
    series = torch.cat([calibration["series_idx"].to(test["series_idx"]), test["series_idx"]])
    origin = torch.cat([calibration["origin"].to(test["origin"]), test["origin"]])
    offsets = online_offsets(residual, series, origin, residual.shape[1], forecaster.monotone_levels,
                             forecaster.conformal.offsets, forecaster.online_step)[n_cal:]
    q = levels.to(test["raw"]).expand(test["raw"].shape[0], -1)
    forecast = forecaster.denormalise(forecaster.shift_normalised(test["raw"], offsets, q), test["loc"], test["scale"])
    return {"forecast": forecast, "target": test["target"], "series_idx": test["series_idx"],
            "origin": test["origin"]}


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
                         for name in ("forecast", "raw", "calibrated", "online")}
        self._outputs: dict[str, list[np.ndarray]] = {}
        self._calibrated = False
        self._test_batches: list[dict[str, torch.Tensor]] = []  # online family: the pass's windows
        self.metrics: dict[str, float] = {}
        self.curves: dict[str, list[float]] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for scorer in self._scorers.values():
            scorer.reset()
        self._outputs = {key: [] for key in _STORED}
        self._test_batches = []
        self._calibrated = False
        self.metrics, self.curves = {}, {}

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        for name, scorer in self._scorers.items():
            if name in outputs:
                scorer.update(outputs[name], outputs["target"], outputs["series_idx"])
        self._calibrated = self._calibrated or "calibrated" in outputs
        if _online(pl_module):  # the same windows, calibrated online at the end of the pass
            self._test_batches.append({k: v.detach() for k, v in batch.items()})
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
        if self._calibrated and _online(pl_module):
            metrics.update(self._online_metrics(trainer, pl_module))
        self._test_batches = []
        self.metrics = metrics
        self.curves = self._scorers["forecast"].curves()
        pl_module.log_dict({k: v for k, v in metrics.items() if not k.startswith("test/n_")})

    def _online_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        device = pl_module.device
        validation = ({k: v.to(device) for k, v in batch.items()}
                      for batch in trainer.datamodule.val_dataloader())  # type: ignore[attr-defined]
        online = online_forecasts(pl_module.forecaster, validation, self._test_batches,  # type: ignore[arg-type]
                                  self.levels.to(device))
        scorer = self._scorers["online"]
        scorer.update(online["forecast"], online["target"], online["series_idx"])
        return {f"test_online/{k}": float(v) for k, v in scorer.compute().items() if not k.startswith("n_")}

    @property
    def forecasts(self) -> dict[str, np.ndarray]:
        """Test forecasts on the grid with targets and window ids: ``forecast [N, H, Q]``,
        ``target [N, H]``, ``series_idx [N]``, ``origin [N]``, ``levels [Q]`` ({} when not stored)."""
        if not self._outputs.get("forecast"):
            return {}
        arrays = {k: np.concatenate(v) for k, v in self._outputs.items()}
        arrays["levels"] = self.levels.numpy()
        return arrays


def _online(pl_module: pl.LightningModule) -> bool:
    forecaster = getattr(pl_module, "forecaster", None)
    return isinstance(forecaster, AnyQuantileForecaster) and forecaster.conformal_mode == "online"
