"""TensorBoard as a second logger: scalars, lr schedule, attention and sampler histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from anyq.app.job import run_job
from anyq.training.builders import build_datamodule, load_dataset
from anyq.training.schedule import inverse_sqrt_factor

ALL = {"scalars": 0, "histograms": 0, "images": 0}


def events(directory: Path) -> EventAccumulator:
    assert list(directory.glob("events.out.tfevents.*")), f"no event files in {directory}"
    acc = EventAccumulator(str(directory), size_guidance=ALL)
    acc.Reload()
    return acc


def test_tracked_run_writes_guide_diagnostics(compose_cfg, tmp_path):
    cfg = compose_cfg("tracking=mlflow_tensorboard", "tracking.compare_to_baseline=false",
                      "tracking.log_model=false", "trainer.log_every_n_steps=1")
    summary = run_job(cfg)
    run_id = summary["run_id"]
    acc = events(tmp_path / "tb_logs" / "anyq" / "adaptive_attention-seed0" / run_id[:8])
    tags = acc.Tags()
    for name in ("train/loss", "train/loss_step", "val/loss", "val/crps", "val/coverage-0.9",
                 "lr-Adam", "sampler/effective_bins"):
        assert name in tags["scalars"], name
    # the same validation numbers as in MLflow
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    mlflow_crps = [m.value for m in sorted(client.get_metric_history(run_id, "val/crps"), key=lambda m: m.step)]
    np.testing.assert_allclose([e.value for e in acc.Scalars("val/crps")], mlflow_crps, rtol=1e-6)
    # the learning-rate schedule: linear warm-up then inverse square root, per optimiser step
    lr = acc.Scalars("lr-Adam")
    assert [e.step for e in lr] == list(range(8))  # 2 epochs x 4 batches
    expected = [cfg.optim.lr * inverse_sqrt_factor(e.step, cfg.optim.warmup_updates) for e in lr]
    np.testing.assert_allclose([e.value for e in lr], expected, rtol=1e-6)

    # attention weights per block and head: softmax rows over 9 tokens, first validation batch
    heads = cfg.model.attention.n_heads
    for h in range(heads):
        assert f"attention/block0/head{h}" in tags["histograms"]
        assert f"modulation/block0/head{h}" in tags["histograms"]
    datamodule = build_datamodule(cfg.data, load_dataset(cfg.data), cfg.seed)
    n = min(len(datamodule.val_windows), cfg.data.eval_batch_size)
    tokens = (cfg.data.history_length + cfg.data.horizon_length) // cfg.model.attention.patch_length
    sequences = n * cfg.evaluation.val_num_levels
    weights = acc.Histograms("attention/block0/head1")
    assert len(weights) == cfg.trainer.max_epochs
    hist = weights[-1].histogram_value
    assert hist.num == sequences * tokens * tokens
    assert hist.sum == pytest.approx(sequences * tokens, rel=1e-4)  # every row sums to 1
    assert 0.0 <= hist.min and hist.max <= 1.0
    factor = acc.Histograms("modulation/block0/head0")[-1].histogram_value
    assert factor.num == sequences
    assert 1.0 <= factor.min and factor.max <= 1.0 + cfg.model.attention.adaptive_temp

    # the sampler's importance per epoch: buckets are the bins, as in the run's artifact
    importance = acc.Histograms("sampler/importance")
    assert len(importance) == cfg.trainer.max_epochs
    last = importance[-1].histogram_value
    num_bins = cfg.model.sampler.num_bins
    np.testing.assert_allclose(last.bucket_limit, np.arange(1, num_bins + 1) / num_bins)
    local = client.download_artifacts(run_id, "evaluation/sampler_importance.npz", str(tmp_path))
    np.testing.assert_allclose(last.bucket, np.load(local)["probabilities"][-1], rtol=1e-6)
    assert sum(last.bucket) == pytest.approx(1.0)
    figures = acc.Images("sampler/importance_curve")
    assert len(figures) == cfg.trainer.max_epochs
    assert figures[-1].encoded_image_string.startswith(b"\x89PNG")


def test_untracked_run_without_attention(compose_cfg, tmp_path):
    cfg = compose_cfg("model=nbeats_aq", "tracking=none", "tracking.tensorboard=true",
                      "trainer.max_epochs=1", "trainer.log_every_n_steps=1")
    run_job(cfg)
    acc = events(tmp_path / "tb_logs" / "anyq" / "nbeats_aq-seed0" / "version_0")
    tags = acc.Tags()
    assert tags["histograms"] == ["sampler/importance"]  # no attention, nothing to histogram
    assert {"lr-Adam", "train/loss_step", "val/crps"} <= set(tags["scalars"])
