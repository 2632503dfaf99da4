"""Online conformal calibration: no look-ahead, nominal coverage under shift, served from the history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from anyq.metrics.scorer import score
from anyq.model.conformal import ConformalOffsets
from anyq.model.monotone import rearrangement_grid
from anyq.model.online import online_offsets, residual_spread
from anyq.serving.bundle import ForecasterSpec, ServedForecaster
from anyq.serving.frames import predict_frame
from anyq.training.config_tree import variant_config
from anyq.training.evaluation import online_forecasts

H, DAY = 48, 24


# ------------------------------------------------------------------ the recursion itself
def test_offsets_by_hand() -> None:
    """Two levels, one series, H = 2 hours: each window's offsets hold the updates of the
    windows that ended by its origin, eta * (q - share of its hours covered)."""
    grid = torch.tensor([0.25, 0.75], dtype=torch.float64)
    seed = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    residual = torch.tensor([5.0, 0.0, 0.0, 0.0], dtype=torch.float64)[:, None, None].expand(4, 2, 2)
    origin = torch.tensor([0, 2, 4, 5])
    out = online_offsets(residual, torch.zeros(4, dtype=torch.long), origin, 2, grid, seed, 0.4)
    # window 0 (origin 0): the seed; 5 is above both offsets: share 0, update 0.4 * (q - 0) = [0.1, 0.3]
    # window 1 (origin 2): window 0 ended at hour 2 -> [-0.9, 1.3]; 0 is covered at 0.75 only:
    #   update 0.4 * ([0.25, 0.75] - [0, 1]) = [0.1, -0.1]
    # window 2 (origin 4): windows 0 and 1 -> [-0.8, 1.2]
    # window 3 (origin 5): window 2 ends at hour 6, still unknown -> [-0.8, 1.2]
    expected = torch.tensor([[-1.0, 1.0], [-0.9, 1.3], [-0.8, 1.2], [-0.8, 1.2]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="step"):
        online_offsets(residual, torch.zeros(4, dtype=torch.long), origin, 2, grid, seed, -0.1)


def _windows(n_series: int, n_origins: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    k = 19
    return {
        "residual": torch.randn(n_series * n_origins, H, k, generator=gen, dtype=torch.float64),
        "series": torch.arange(n_series).repeat_interleave(n_origins),
        "origin": (torch.arange(n_origins) * DAY).repeat(n_series),
        "grid": rearrangement_grid(k).double(),
    }


def test_offsets_at_an_origin_ignore_every_window_not_fully_observed_by_then() -> None:
    w = _windows(n_series=2, n_origins=12)
    seed = torch.zeros(19, dtype=torch.float64)
    base = online_offsets(w["residual"], w["series"], w["origin"], H, w["grid"], seed, 0.3)
    for k in range(12):
        t_k = k * DAY
        unseen = w["origin"] + H > t_k  # the window's target is not all known at origin k
        altered = w["residual"].clone()
        altered[unseen] = torch.randn(int(unseen.sum()), H, 19, dtype=torch.float64) * 10 + 3
        out = online_offsets(altered, w["series"], w["origin"], H, w["grid"], seed, 0.3)
        at_k = w["origin"] == t_k
        torch.testing.assert_close(out[at_k], base[at_k], rtol=0, atol=0)
    # and the last usable origin, t_k - 48 h, does move them: the test above has power
    altered = w["residual"].clone()
    altered[w["origin"] == 5 * DAY - H] += 10.0
    out = online_offsets(altered, w["series"], w["origin"], H, w["grid"], seed, 0.3)
    at_5 = w["origin"] == 5 * DAY
    assert (out[at_5] - base[at_5]).abs().min() > 0


def test_each_series_keeps_its_own_state() -> None:
    w = _windows(n_series=2, n_origins=8)
    seed = torch.zeros(19, dtype=torch.float64)
    base = online_offsets(w["residual"], w["series"], w["origin"], H, w["grid"], seed, 0.3)
    altered = w["residual"].clone()
    altered[w["series"] == 1] += 5.0
    out = online_offsets(altered, w["series"], w["origin"], H, w["grid"], seed, 0.3)
    first = w["series"] == 0
    torch.testing.assert_close(out[first], base[first], rtol=0, atol=0)
    assert not torch.equal(out[~first], base[~first])


# ----------------------------------------------------- coverage when the noise doubles
def _gaussian_case(after: float, gamma: float = 0.2) -> tuple[float, float]:
    """Four series of daily windows, 30 calibration origins with noise sigma 1 then 120 test
    origins with sigma ``after``, forecast by the N(0, 1) quantiles. The 90 % interval's
    coverage over the later half of the test: (online at step ``gamma``, split conformal)."""
    gen = torch.Generator().manual_seed(0)
    n_series, n_cal, n_test = 4, 30, 120
    grid = rearrangement_grid(99).double()
    n = n_cal + n_test
    sigma = torch.where(torch.arange(n) < n_cal, 1.0, after).double()
    target = (torch.randn(n_series, n, H, generator=gen, dtype=torch.float64) * sigma[None, :, None]).reshape(-1, H)
    forecast = torch.special.ndtri(grid).expand(target.shape[0], H, -1)
    residual = target.unsqueeze(-1) - forecast
    series = torch.arange(n_series).repeat_interleave(n)
    origin = (torch.arange(n) * DAY).repeat(n_series)
    split = ConformalOffsets(grid.float())
    split.fit(residual[origin < n_cal * DAY].reshape(-1, grid.numel()).float())
    step = gamma * float(split.spread)
    offsets = online_offsets(residual, series, origin, H, grid, split.offsets.double(), step)
    late = origin >= (n_cal + n_test // 2) * DAY

    def coverage(f: torch.Tensor) -> float:
        return score(f[late].sort(dim=-1).values, target[late], grid, series[late], n_series)["coverage-0.9"]

    return coverage(forecast + offsets.unsqueeze(1)), coverage(forecast + split.offsets.double())


def test_online_calibration_reaches_nominal_coverage_after_the_noise_doubles() -> None:
    """Split conformal keeps the pre-shift interval (about 59 % of the doubled noise); the
    online calibration is back at 90 % over the later half of the test."""
    online, split = _gaussian_case(after=2.0)
    assert online == pytest.approx(0.9, abs=0.03)
    assert split < 0.7
    # a smaller step gets there more slowly: still short of nominal after 60 origins, past split
    slow, _ = _gaussian_case(after=2.0, gamma=0.05)
    assert split + 0.1 < slow < 0.87


def test_online_calibration_stays_nominal_without_a_shift() -> None:
    online, split = _gaussian_case(after=1.0)
    assert online == pytest.approx(0.9, abs=0.03)
    assert split == pytest.approx(0.9, abs=0.03)


def test_residual_spread_is_the_median_levels_90_percent_range() -> None:
    grid = torch.tensor([0.1, 0.5, 0.9])
    residuals = torch.stack([torch.zeros(101), torch.linspace(0.0, 10.0, 101), torch.zeros(101)], dim=1)
    assert float(residual_spread(residuals, grid)) == pytest.approx(9.0)


# --------------------------------------------------------------- model and served model
L = 48


def _spec(calendar=None) -> ForecasterSpec:
    sampler, attention = variant_config("baseline_adaptive", {"num_bins": 10}, {})
    return ForecasterSpec(variant="baseline_adaptive", history_length=L, horizon_length=H,
                          backbone={"num_blocks": 2, "layer_width": 32}, sampler=sampler, attention=attention,
                          monotone="rearrange", monotone_grid=19, calendar=calendar, conformal="online",
                          online_gamma=0.2, origin_step=DAY)


def _series(days: int, seed: int = 0, noise_after: int | None = None) -> np.ndarray:
    """One hourly series around 100 with a daily cycle; noise x8 after hour ``noise_after``."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * DAY)
    noise = rng.normal(0, 2, size=hours.size)
    if noise_after is not None:
        noise[noise_after:] *= 8
    return 100 + 20 * np.sin(2 * np.pi * hours / DAY) + noise


def _served(seed: int = 0) -> ServedForecaster:
    torch.manual_seed(seed)
    spec = _spec()
    model = spec.build()
    y = torch.as_tensor(_series(30, seed=1), dtype=torch.float32)
    starts = torch.arange(L, y.numel() - H + 1, DAY)
    batch = {"history": torch.stack([y[s - L:s] for s in starts]), "target": torch.stack([y[s:s + H] for s in starts])}
    model.fit_conformal([batch])
    return ServedForecaster(spec, model.state_dict())


def _window_batches(y: np.ndarray, starts) -> list[dict[str, torch.Tensor]]:
    t = torch.as_tensor(y, dtype=torch.float32)
    target = [t[s:s + H] if s + H <= t.numel() else torch.full((H,), float("nan")) for s in starts]
    return [{"history": torch.stack([t[s - L:s] for s in starts]), "target": torch.stack(target),
             "series_idx": torch.zeros(len(starts), dtype=torch.long), "origin": torch.as_tensor(starts)}]


def test_served_model_replays_the_request_history_as_the_run_does() -> None:
    served = _served()
    levels = np.array([0.05, 0.5, 0.95])
    y = _series(20, seed=2, noise_after=10 * DAY)
    served_out = served.forecast(y[None, :], levels)
    # the run's path on the same windows: replayed origins (every day back from the end whose
    # history and target lie in the series), then the forecast origin with no target yet
    end = y.size
    starts = [s for s in range(end - DAY, L - 1, -DAY) if s + H <= end][::-1]
    with torch.no_grad():
        run_out = online_forecasts(served.model, _window_batches(y, starts), _window_batches(y, [end]),
                                   torch.as_tensor(levels, dtype=torch.float32))["forecast"]
    np.testing.assert_allclose(served_out, run_out.double().numpy(), rtol=1e-5, atol=1e-3)
    # the recent noise widened the served interval beyond the split-conformal one
    split = served.forecast(y[None, -L:], levels)  # no earlier origin in the history
    split_model = served.model(torch.as_tensor(y[None, -L:], dtype=torch.float32),
                               torch.as_tensor(levels, dtype=torch.float32)[None]).double().detach().numpy()
    np.testing.assert_allclose(split, split_model, rtol=1e-6)
    assert (served_out[..., 2] - served_out[..., 0]).mean() > 1.1 * (split[..., 2] - split[..., 0]).mean()


def test_served_frame_calibrates_each_row_from_its_own_history() -> None:
    served = _served()
    quiet, noisy = _series(20, seed=3), _series(25, seed=4, noise_after=10 * DAY)
    request = pd.DataFrame({"unique_id": ["quiet", "noisy"], "history": [quiet.tolist(), noisy.tolist()],
                            "levels": [[0.05, 0.95]] * 2})
    out = predict_frame(served, request)
    for name, y in (("quiet", quiet), ("noisy", noisy)):
        alone = served.forecast(y[None, :], [0.05, 0.95])[0]  # [H, 2]
        rows = out[out["unique_id"] == name].sort_values(["step", "level"])
        np.testing.assert_allclose(rows["value"].to_numpy().reshape(H, 2), alone, rtol=1e-6)


def test_run_path_forecast_at_an_origin_ignores_every_actual_from_that_origin_on() -> None:
    """The online-calibrated forecasts of validation + test windows, as the run scores them:
    changing every load value at or after origin k's issue time leaves the forecasts of the
    origins up to k as they were (and does change later ones)."""
    served = _served()
    y = _series(30, seed=5, noise_after=12 * DAY)
    starts = list(range(L, y.size - H + 1, DAY))
    calibration, test = starts[:8], starts[8:]
    levels = torch.tensor([0.05, 0.5, 0.95])
    with torch.no_grad():
        base = online_forecasts(served.model, _window_batches(y, calibration), _window_batches(y, test), levels)
    for k in (10, 14, 20):
        t_k = starts[k]
        altered = y.copy()
        altered[t_k:] = altered[t_k:] * 3 + 50
        with torch.no_grad():
            out = online_forecasts(served.model, _window_batches(altered, calibration),
                                   _window_batches(altered, test), levels)
        upto = base["origin"] <= t_k
        torch.testing.assert_close(out["forecast"][upto], base["forecast"][upto], rtol=0, atol=0)
        assert not torch.equal(out["forecast"][~upto], base["forecast"][~upto])


# ------------------------------------------------------------------------ a tracked run
from conftest import STEP_BUDGET  # noqa: E402



@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    from anyq.app.job import run_job
    from conftest import compose_config

    root = tmp_path_factory.mktemp("online")
    cfg = compose_config(root, ["tracking.compare_to_baseline=false", "data.synthetic.gaps=false",
                                "data.calendar.enabled=true", "model.conformal=online", "model.monotone_grid=39",
                                *STEP_BUDGET])
    summary = run_job(cfg)
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    return {"cfg": cfg, "uri": uri, "run": MlflowClient(uri).get_run(summary["run_id"])}


def test_run_logs_the_online_family_and_names_it_its_headline(tracked):
    metrics, tags = tracked["run"].data.metrics, tracked["run"].data.tags
    for family in ("test", "test_conformal", "test_online"):
        for name in ("crps", "coverage-0.9", "oracle_ratio", "crossing_rate"):
            assert np.isfinite(metrics[f"{family}/{name}"]), f"{family}/{name}"
    assert metrics["test_online/crossing_rate"] == 0.0
    assert metrics["test_online/crps"] != metrics["test_conformal/crps"]
    assert tags["headline"] == "test_online"


def test_logged_model_calibrates_from_the_request_history(tracked):
    from anyq.serving.publish import load_served

    served = load_served(f"runs:/{tracked['run'].info.run_id}/model", tracked["uri"])
    assert served.spec.conformal == "online" and served.spec.origin_step == tracked["cfg"].data.eval_step
    y = 1000 + 50 * _series(14, seed=6, noise_after=7 * DAY)
    origin = pd.to_datetime(["2015-12-28 00:00"])
    levels = [0.05, 0.5, 0.95]
    full = served.forecast(y[None, :], levels, names=["S00"], origins=origin)
    last = served.forecast(y[None, -168:], levels, names=["S00"], origins=origin)  # nothing to replay
    from anyq.data.calendar import window_calendar

    spec = served.spec
    calendar = window_calendar(spec.calendar_spec(), ["S00"], origin, spec.history_length, spec.horizon_length)
    split = served.model(torch.as_tensor(y[None, -168:], dtype=torch.float32), torch.tensor([levels]),
                         calendar=torch.from_numpy(calendar))
    np.testing.assert_allclose(last, split.detach().double().numpy(), rtol=1e-6)
    assert not np.allclose(full, last) and (np.diff(full, axis=-1) >= 0).all()


@pytest.mark.parametrize("override, message", [
    ("model.conformal=adaptive", "model.conformal='adaptive' must be one of"),
    ("model.online_gamma=-0.1", "model.online_gamma=-0.1 must be >= 0"),
])
def test_bad_calibration_settings_fail_before_training(compose_cfg, override, message):
    from anyq.training.validation import validate_config
    from anyq.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate_config(compose_cfg(override))


def test_checkpoint_saved_before_the_spread_existed_still_fits_and_loads() -> None:
    from anyq.errors import CheckpointError
    from anyq.training.checkpoints import check_fits

    model = _served().model
    state = {f"forecaster.{k}": v for k, v in model.state_dict().items() if k != "conformal.spread"}
    fresh = _spec().build()
    check_fits("old.ckpt", {"state_dict": state}, fresh, {}, None)  # no error
    fresh.load_state_dict({k.removeprefix("forecaster."): v for k, v in state.items()})
    assert float(fresh.conformal.spread) == 0.0 and fresh.online_step == 0.0  # online = split until refitted
    without_weight = {k: v for k, v in state.items() if k != "forecaster.backbone.blocks.0.layers.0.weight"}
    with pytest.raises(CheckpointError, match="backbone.blocks.0.layers.0.weight is missing from the checkpoint"):
        check_fits("old.ckpt", {"state_dict": without_weight}, fresh, {}, None)


def test_predict_command_replays_the_files_earlier_origins(tracked, tmp_path):
    from anyq.app import predict as predict_app
    from anyq.serving.publish import load_served

    y = 1000 + 50 * _series(14, seed=7, noise_after=7 * DAY)
    stamps = pd.date_range("2015-12-14 00:00", periods=y.size, freq="h")
    pd.DataFrame({"unique_id": "S00", "ds": stamps, "y": y}).to_csv(tmp_path / "load.csv", index=False)
    out = tmp_path / "forecast.csv"
    predict_app.main(["--run", tracked["run"].info.run_id, "--tracking-uri", tracked["uri"], "--input",
                      str(tmp_path / "load.csv"), "--levels", "0.05,0.95", "--output", str(out)])
    served = load_served(f"runs:/{tracked['run'].info.run_id}/model", tracked["uri"])
    origin = pd.DatetimeIndex([stamps[-1] + pd.Timedelta(hours=1)])
    expected = served.forecast(y[None, :], [0.05, 0.95], names=["S00"], origins=origin)[0]
    np.testing.assert_allclose(pd.read_csv(out)["value"].to_numpy().reshape(H, 2), expected, rtol=1e-6)
    alone = served.forecast(y[None, -168:], [0.05, 0.95], names=["S00"], origins=origin)[0]
    assert not np.allclose(expected, alone)


def test_online_forecasts_at_step_zero_are_the_split_conformal_forecasts() -> None:
    model = _served().model
    model.online_gamma = 0.0
    y = _series(12, seed=8)
    starts = list(range(L, y.size - H + 1, DAY))
    levels = torch.tensor([0.05, 0.3, 0.5, 0.95])
    test = _window_batches(y, starts[4:])
    with torch.no_grad():
        online = online_forecasts(model, _window_batches(y, starts[:4]), test, levels)["forecast"]
        split = model(test[0]["history"], levels.expand(len(starts) - 4, -1))
    torch.testing.assert_close(online, split, rtol=1e-5, atol=1e-4)
