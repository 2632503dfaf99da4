"""The job as a pipeline: one result object from training, the baseline outside the model's run."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from anyq.app.job import run_job
from anyq.errors import ConfigError
from anyq.metrics.scorer import score
from anyq.reference.seasonal_naive import SeasonalNaiveForecaster
from anyq.tracking import baseline_comparison
from anyq.tracking.baseline_comparison import own_baseline_lock
from anyq.tracking.recording import JobStore, open_job_run
from anyq.training.builders import build_model, load_dataset
from anyq.training.checkpoints import read_checkpoint, recorded_history
from anyq.training.run import TrainOutcome, fit_and_test, prepare


def client_for(cfg) -> MlflowClient:
    return MlflowClient(f"sqlite:///{Path(cfg.paths.mlruns).resolve() / 'mlflow.db'}")


def test_outcome_carries_the_best_checkpoints_scores_and_the_whole_history(compose_cfg):
    cfg = compose_cfg("tracking=none", "trainer.max_epochs=3")
    plan = prepare(cfg, load_dataset(cfg.data))
    outcome = fit_and_test(plan)
    assert isinstance(outcome, TrainOutcome)
    assert [h["epoch"] for h in outcome.val_history] == [0.0, 1.0, 2.0]  # not cut back to the best epoch
    assert outcome.importance_history.shape == (3, cfg.model.sampler.num_bins)
    assert outcome.metrics["train_steps"] == 3 * cfg.trainer.limit_train_batches

    # the tested weights are the best checkpoint's: its forward pass gives the stored forecasts
    best = outcome.best_checkpoint
    checkpoint = read_checkpoint(best)
    assert len(recorded_history(checkpoint)["val_history"]) == int(outcome.best_validation()["epoch"]) + 1
    model = build_model(cfg)
    model.load_state_dict({k.removeprefix("forecaster."): v for k, v in checkpoint["state_dict"].items()})
    model.eval()
    batch = next(iter(plan.datamodule.test_dataloader()))
    levels = torch.as_tensor(outcome.forecasts["levels"])
    with torch.no_grad():
        forecast, _ = model.forward_with_raw(batch["history"], levels.expand(batch["history"].shape[0], -1),
                                             batch.get("calendar"), calibrated=False)
    n = forecast.shape[0]
    torch.testing.assert_close(torch.as_tensor(outcome.forecasts["forecast"][:n]), forecast)

    # the metrics are the scores of those forecasts
    f = outcome.forecasts
    assert f["forecast"].shape == (f["target"].shape[0], cfg.data.horizon_length, cfg.evaluation.num_levels)
    expected = score(torch.as_tensor(f["forecast"]), torch.as_tensor(f["target"]), levels,
                     torch.as_tensor(f["series_idx"]), plan.dataset.panel.n_series)
    assert outcome.metrics["test/crps"] == pytest.approx(expected["crps"], rel=1e-6)
    assert outcome.metrics["test/coverage-0.9"] == pytest.approx(expected["coverage-0.9"], rel=1e-6)
    assert outcome.metrics["test/oracle_ratio"] == pytest.approx(
        outcome.metrics["test/crps"] / outcome.metrics["test/oracle_crps"])

    # seasonal naive on the same test windows, scored here in plain numpy
    dm, windows = plan.datamodule, plan.datamodule.test_windows
    naive = SeasonalNaiveForecaster(168, cfg.data.horizon_length).fit(plan.dataset.panel, plan.dataset.splits.train)
    q = levels.numpy().astype(np.float64)
    naive_forecast = naive.predict(dm.filled_values, windows.series_idx, windows.origin, q).astype(np.float64)
    target = dm.dataset("test").target_array().astype(np.float64)
    keep = ~np.isnan(target).any(axis=1)
    diff = target[keep][..., None] - naive_forecast[keep]
    naive_crps = 2 * np.maximum(q * diff, (q - 1) * diff).mean()
    assert outcome.metrics["test/naive_crps"] == pytest.approx(naive_crps, rel=1e-5)
    assert outcome.metrics["test/naive_ratio"] == pytest.approx(outcome.metrics["test/crps"] / naive_crps, rel=1e-5)


def test_baseline_trains_after_the_models_run_is_closed(compose_cfg):
    cfg = compose_cfg("model=adaptive_attention", "tracking.log_model=false")
    summary = run_job(cfg)
    client = client_for(cfg)
    run = client.get_run(summary["run_id"])
    baseline = client.get_run(run.data.tags["baseline_run_id"])
    assert run.info.status == baseline.info.status == "FINISHED"
    assert run.info.end_time <= baseline.info.start_time  # the two runs do not nest
    assert baseline.data.tags["role"] == "baseline" and "baseline_run_id" not in baseline.data.tags
    assert run.data.metrics["delta/crps_vs_baseline"] == pytest.approx(
        summary["test/crps"] - baseline.data.metrics["test/crps"])
    assert not any(k.startswith("delta/") for k in summary)  # the returned summary is the run's own

    # the baseline, trained in the run's folder, wrote its checkpoints beside the run's, not over them
    def variants(folder: Path) -> set[str]:
        found = {recorded_history(read_checkpoint(p))["settings"]["model.variant"] for p in folder.glob("*.ckpt")}
        assert found, f"no checkpoints in {folder}"
        return found

    assert variants(Path(cfg.paths.checkpoints)) == {"adaptive_attention"}
    assert variants(Path(cfg.paths.output_dir) / "baseline" / "checkpoints") == {"baseline_adaptive"}


def test_a_failing_baseline_leaves_the_model_run_finished_with_the_reason(compose_cfg, monkeypatch):
    real = baseline_comparison.baseline_job_config

    def diverging(cfg):  # the baseline alone gets a learning rate that produces NaN
        base = real(cfg)
        base.optim.lr, base.trainer.gradient_clip_val, base.trainer.log_every_n_steps = 1e30, None, 1
        return base

    monkeypatch.setattr(baseline_comparison, "baseline_job_config", diverging)
    cfg = compose_cfg("model=adaptive_attention", "tracking.log_model=false")
    summary = run_job(cfg)
    client = client_for(cfg)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["baseline_error"].startswith("NonFiniteLossError: ")
    assert "baseline_run_id" not in run.data.tags
    assert not any(k.startswith("delta/") for k in run.data.metrics)
    assert run.data.metrics["test/crps"] == pytest.approx(summary["test/crps"])
    failed = client.search_runs([run.info.experiment_id], "tags.role = 'baseline'")
    assert [r.info.status for r in failed] == ["FAILED"]  # recorded, not left RUNNING



def test_a_comparison_waits_for_the_baseline_job_beside_it(compose_cfg):
    """``make run`` trains the baseline and a model side by side: the baseline job holds its
    signature lock while it trains, so the model job, done first, waits for that run and
    compares with it instead of training a second baseline."""
    base_cfg, model_cfg = compose_cfg("model=baseline_adaptive"), compose_cfg("model=adaptive_attention")
    dataset = load_dataset(model_cfg.data)
    store = JobStore.from_config(model_cfg)
    trained, found = [], {}
    with own_baseline_lock(base_cfg, dataset.fingerprint, store):  # the baseline job, training
        waiting = threading.Thread(target=lambda: found.update(
            baseline_comparison.ensure_baseline(model_cfg, dataset.fingerprint, store, train=trained.append)))
        waiting.start()
        waiting.join(timeout=2.0)
        assert waiting.is_alive()  # the model job waits for it
        with open_job_run(base_cfg, dataset, store, None) as run:  # the baseline job's run finishes
            run.log_metrics({"test/crps": 1.5, "test/coverage-0.9": 0.9})
    waiting.join(timeout=60)
    assert not waiting.is_alive() and trained == []  # nothing trained a second baseline
    assert found["run_id"] == run.run_id and found["test/crps"] == 1.5


def test_a_checkpoint_folder_held_by_a_running_job_is_refused_before_training(compose_cfg, tmp_path):
    cfg = compose_cfg("model=baseline_adaptive", "tracking.log_model=false")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from anyq.training.checkpoints import own_checkpoint_folder\n"
        f"with own_checkpoint_folder({cfg.paths.checkpoints!r}):\n"
        "    print('held', flush=True); sys.stdin.readline()")],  # held until the test closes stdin
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="checkpoint folder .* is in use by another running job") as caught:
            run_job(cfg)
        assert "\n" not in str(caught.value)
        assert not list(Path(cfg.paths.checkpoints).glob("*.ckpt"))  # nothing was written over the holder's
        (run,) = client_for(cfg).search_runs(
            [client_for(cfg).get_experiment_by_name(cfg.tracking.experiment).experiment_id])
        assert run.info.status == "FAILED" and "in use by another running job" in run.data.tags["error"]
    finally:
        holder.kill()
        holder.wait()
    run_job(cfg)  # a job that ended (even killed) releases its folder
    assert list(Path(cfg.paths.checkpoints).glob("best-*.ckpt"))
