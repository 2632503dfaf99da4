"""The new recipe end to end: a step budget, calendar inputs and conformal calibration in a
tracked run, its metric families, and the served model applying both."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from anyq.app.job import run_job
from anyq.errors import ConfigError, RequestError
from anyq.serving.publish import load_served
from anyq.training.validation import validate_config
from conftest import STEP_BUDGET, compose_config



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    cfg = compose_config(root, ["tracking.compare_to_baseline=false", "data.synthetic.gaps=false",
                                "data.calendar.enabled=true", "model.conformal=per_level",
                                "model.sampler.signal=calibration", "model.monotone_grid=39", *STEP_BUDGET])
    summary = run_job(cfg)
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    run = MlflowClient(uri).get_run(summary["run_id"])
    return {"cfg": cfg, "summary": summary, "uri": uri, "run": run}


def test_step_budget_validates_every_interval_and_tests_the_best_step(trained):
    metrics = trained["run"].data.metrics
    assert metrics["train_steps"] == 6
    history = MlflowClient(trained["uri"]).get_metric_history(trained["run"].info.run_id, "val/crps")
    assert len(history) == 2  # steps 3 and 6
    assert metrics["best_step"] in (3, 6)
    assert sorted(p.name for p in Path(trained["cfg"].paths.checkpoints).glob("best-*.ckpt")) == [
        f"best-step{int(metrics['best_step']):06d}.ckpt"]


def test_both_metric_families_and_the_raw_scores_are_logged(trained):
    metrics = trained["run"].data.metrics
    for key in ("test/crps", "test/coverage-0.9", "test/crps_raw", "test/crossing_rate_raw",
                "test_conformal/crps", "test_conformal/coverage-0.9", "test_conformal/oracle_ratio"):
        assert np.isfinite(metrics[key]), key
    assert metrics["test/crossing_rate"] == 0.0
    assert metrics["test/crps"] <= metrics["test/crps_raw"] + 1e-6  # rearrangement never hurts on the grid


def test_served_model_applies_calendar_and_calibration(trained):
    served = load_served(f"runs:/{trained['run'].info.run_id}/model", trained["uri"])
    assert served.spec.calendar is not None and served.spec.conformal == "per_level"
    assert bool(served.model.conformal.fitted)
    rng = np.random.default_rng(0)
    history = 1000 + rng.normal(0, 20, size=(2, 168))
    levels = [0.05, 0.5, 0.95]
    origins = pd.to_datetime(["2015-12-25 00:00", "2015-12-28 00:00"])
    out = served.forecast(history, levels, names=["S00", "S01"], origins=origins)
    assert out.shape == (2, 48, 3) and (np.diff(out, axis=-1) >= 0).all()
    uncalibrated = served.model(*_tensors(history, levels), calendar=_calendar(served, origins), calibrated=False)
    assert not np.allclose(out, uncalibrated.detach().double().numpy())
    with pytest.raises(RequestError, match="forecast origin"):
        served.forecast(history, levels, names=["S00", "S01"])
    with _uri(trained["uri"]):
        model = mlflow.pyfunc.load_model(f"runs:/{trained['run'].info.run_id}/model")
        request = pd.DataFrame({"unique_id": ["S00"], "history": [history[0].tolist()], "levels": [levels],
                                "origin": ["2015-12-25 00:00:00"]})
        frame = model.predict(request)
    np.testing.assert_allclose(frame["value"].to_numpy().reshape(48, 3), out[0], rtol=1e-6)


def _tensors(history, levels):
    import torch

    x = torch.as_tensor(history, dtype=torch.float32)
    return x, torch.tensor(levels, dtype=torch.float32).expand(x.shape[0], -1)


def _calendar(served, origins):
    import torch

    from anyq.data.calendar import window_calendar

    spec = served.spec
    return torch.from_numpy(window_calendar(spec.calendar_spec(), ["S00", "S01"], origins,
                                            spec.history_length, spec.horizon_length))


def _uri(uri):
    from anyq.tracking.store import tracking_uri

    return tracking_uri(uri)


def test_a_step_budget_needs_an_interval_that_divides_it(tmp_path):
    cfg = compose_config(tmp_path, ["trainer.max_epochs=null", "trainer.max_steps=10", "trainer.val_check_interval=3"])
    with pytest.raises(ConfigError, match="not a multiple of trainer.val_check_interval=3"):
        validate_config(cfg)
    cfg = compose_config(tmp_path, ["trainer.max_epochs=null", "trainer.max_steps=-1"])
    with pytest.raises(ConfigError, match="needs trainer.max_steps > 0"):
        validate_config(cfg)
    cfg = compose_config(tmp_path, ["data.calendar.enabled=true", "data.calendar.holidays=country"])
    with pytest.raises(ConfigError, match="needs data.calendar.country"):
        validate_config(cfg)
