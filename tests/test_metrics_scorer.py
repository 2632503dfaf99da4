"""The streaming scorer equals the functional scores on the concatenated batches."""

from __future__ import annotations

import math

import pytest
import torch

from anyq.metrics import functional as F
from anyq.metrics import ForecastScorer, evaluation_grid, score

KEYS = ["crps", "crps_norm", "coverage-0.9", "coverage-0.95", "width-0.9", "width-0.95",
        "marfe", "mape", "smape", "crossing_rate", "n_windows", "n_skipped"]
NUM_SERIES = 6  # series 5 never appears: it must not enter the normalised CRPS


def panel(n: int = 41, h: int = 6, dtype: torch.dtype = torch.float64, seed: int = 0):
    """Random windows of series with very different scales, with the awkward cases mixed in:
    NaN windows (whole and partial), zero targets (MAPE), ties and a few quantile crossings."""
    gen = torch.Generator().manual_seed(seed)
    levels = evaluation_grid(99, dtype)
    series = torch.randint(0, NUM_SERIES - 1, (n,), generator=gen)
    scale = torch.tensor([1.0, 10.0, 100.0, 1000.0, 5.0], dtype=dtype)[series]
    centre = scale[:, None] * (1 + 0.3 * torch.randn(n, h, generator=gen, dtype=dtype))
    spread = torch.distributions.Normal(0.0, 1.0).icdf(levels.double()).to(dtype)
    forecast = centre[..., None] + 0.2 * scale[:, None, None] * spread
    forecast += 0.05 * scale[:, None, None] * torch.randn(n, h, 99, generator=gen, dtype=dtype)  # some crossings
    target = centre + 0.25 * scale[:, None] * torch.randn(n, h, generator=gen, dtype=dtype)
    target[3] = float("nan")
    target[10, 2] = float("nan")
    target[n - 1, h - 1] = float("nan")
    target[5, :2] = 0.0
    target[7, :] = forecast[7, :, 49]  # ties: a target equal to a forecast is not below it
    return forecast, target, levels, series


def functional_scores(forecast, target, levels, series) -> dict[str, float]:
    valid = F.valid_windows(target)
    return {
        "crps": F.crps(forecast, target, levels).item(),
        "crps_norm": F.crps_normalised(forecast, target, levels, series).item(),
        "coverage-0.9": F.coverage(forecast, target, levels, 0.9).item(),
        "coverage-0.95": F.coverage(forecast, target, levels, 0.95).item(),
        "width-0.9": F.interval_width(forecast, levels, 0.9, target=target).item(),
        "width-0.95": F.interval_width(forecast, levels, 0.95, target=target).item(),
        "marfe": F.marfe(forecast, target, levels).item(),
        "mape": F.mape(forecast, target, levels).item(),
        "smape": F.smape(forecast, target, levels).item(),
        "crossing_rate": F.crossing_rate(forecast, target).item(),
        "n_windows": float(valid.sum()),
        "n_skipped": float((~valid).sum()),
    }


def stream(forecast, target, series, levels, splits) -> ForecastScorer:
    scorer = ForecastScorer(levels, NUM_SERIES)
    start = 0
    for size in splits:
        scorer.update(forecast[start:start + size], target[start:start + size], series[start:start + size])
        start += size
    assert start == forecast.shape[0]
    return scorer


@pytest.mark.parametrize("splits", [[41], [1, 12, 0, 7, 21], [5] * 8 + [1]])
def test_streaming_equals_functional_on_concatenated_data(splits):
    forecast, target, levels, series = panel()
    scorer = stream(forecast, target, series, levels, splits)
    got = scorer.compute()
    want = functional_scores(forecast, target, levels, series)
    assert list(got) == KEYS
    assert got["n_windows"] == 38 and got["n_skipped"] == 3  # windows 3, 10 and 40 (whole or partial NaN)
    assert want["crossing_rate"] > 0 and not math.isnan(got["mape"])
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-10, abs=1e-12), key
    # the panel is large enough that these are not trivially 0 or 1
    assert 0 < got["coverage-0.9"] < got["coverage-0.95"] < 1

    curves = scorer.curves()
    assert curves["crps_by_horizon"] == pytest.approx(F.crps_by_horizon(forecast, target, levels).tolist(), rel=1e-10)
    assert curves["pinball_by_level"] == pytest.approx(F.pinball_by_level(forecast, target, levels).tolist(), rel=1e-10)
    assert curves["reliability"] == pytest.approx(F.reliability(forecast, target, levels).tolist(), rel=1e-10)
    assert len(curves["crps_by_horizon"]) == 6 and len(curves["reliability"]) == 99


def test_streaming_float32_matches_functional():
    forecast, target, levels, series = panel(dtype=torch.float32, seed=3)
    got = stream(forecast, target, series, levels, [9, 9, 9, 14]).compute()
    want = functional_scores(forecast, target, levels, series)
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_an_enclosing_autocast_does_not_lower_the_scores_precision(dtype):
    # Lightning's 16-mixed and bf16-mixed run validation_step, and so the update, inside
    # torch.autocast; a batch of 512 windows in data units (thousands) summed in float16
    # overflowed (val/crps inf), and bfloat16 kept three digits
    forecast, target, levels, series = panel(n=512, h=48, dtype=torch.float32, seed=5)
    forecast, target = 1000 * forecast, 1000 * target
    want = stream(forecast, target, series, levels, [512]).compute()
    scorer = ForecastScorer(levels, NUM_SERIES)
    with torch.autocast("cpu", dtype=dtype):
        scorer.update(forecast, target, series)
    got = scorer.compute()
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key


def test_score_one_shot_equals_streaming_and_accepts_numpy():
    forecast, target, levels, series = panel(seed=1)
    streamed = stream(forecast, target, series, levels, [20, 21]).compute()
    once = score(forecast.numpy(), target.numpy(), levels.numpy(), series.numpy(), NUM_SERIES)
    assert once == pytest.approx(streamed, rel=1e-12)


def test_nan_windows_are_counted_never_scored():
    forecast, target, levels, series = panel()
    scorer = ForecastScorer(levels, NUM_SERIES)
    scorer.update(forecast[:3], torch.full_like(target[:3], float("nan")), series[:3])
    empty = scorer.compute()
    assert empty["n_windows"] == 0 and empty["n_skipped"] == 3
    assert all(math.isnan(empty[k]) for k in KEYS[:-2])  # nothing scored: NaN, neither 0 nor inf
    scorer.update(forecast[3:], target[3:], series[3:])
    got = scorer.compute()
    want = functional_scores(forecast[3:], target[3:], levels, series[3:])
    assert got["n_skipped"] == 3 + want["n_skipped"]
    assert got["crps"] == pytest.approx(want["crps"], rel=1e-10)


def test_compute_before_update_and_reset():
    forecast, target, levels, series = panel()
    scorer = ForecastScorer(levels, NUM_SERIES)
    fresh = scorer.compute()
    assert list(fresh) == KEYS and fresh["n_windows"] == 0 and math.isnan(fresh["crps"])
    assert scorer.curves()["crps_by_horizon"] == []
    scorer.update(forecast[:10], target[:10], series[:10])
    scorer.reset()
    scorer.update(forecast[10:], target[10:], series[10:])
    assert scorer.compute()["crps"] == pytest.approx(F.crps(forecast[10:], target[10:], levels).item(), rel=1e-10)


def test_other_coverage_levels_name_their_keys():
    forecast, target, levels, series = panel()
    got = score(forecast, target, levels, series, NUM_SERIES, coverage_levels=(0.5, 0.8))
    assert {"coverage-0.5", "coverage-0.8", "width-0.5", "width-0.8"} <= set(got)
    assert got["coverage-0.8"] == pytest.approx(F.coverage(forecast, target, levels, 0.8).item(), rel=1e-10)


def test_scorer_rejects_grid_without_needed_levels():
    with pytest.raises(ValueError, match="0.05"):
        ForecastScorer(torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]), 3)  # coverage-0.9 needs 0.05 and 0.95
    with pytest.raises(ValueError, match="0.005"):
        ForecastScorer(evaluation_grid(), 3, coverage_levels=(0.99,))
    with pytest.raises(ValueError, match="increasing"):
        ForecastScorer(evaluation_grid().flip(0), 3)


def test_update_rejects_bad_batches():
    forecast, target, levels, series = panel()
    scorer = ForecastScorer(levels, NUM_SERIES)
    with pytest.raises(ValueError, match="forecast must be"):
        scorer.update(forecast[..., :98], target, series)
    with pytest.raises(ValueError, match="target shape"):
        scorer.update(forecast, target[:, :5], series)
    with pytest.raises(ValueError, match="series_idx outside"):
        scorer.update(forecast, target, series + NUM_SERIES)
    scorer.update(forecast[:5], target[:5], series[:5])
    with pytest.raises(ValueError, match="horizon changed"):
        scorer.update(forecast[:5, :4], target[:5, :4], series[:5])


def test_update_needs_no_values_on_the_host():
    # Meta tensors carry shapes but no data: any .item()/host read inside update would fail,
    # so this proves the per-batch path never synchronises with the device.
    levels = evaluation_grid()
    scorer = ForecastScorer(levels, 4)
    for _ in range(2):
        scorer.update(torch.empty(8, 5, 99, device="meta"), torch.empty(8, 5, device="meta"),
                      torch.empty(8, dtype=torch.long, device="meta"))
    assert all(v.device.type == "meta" for v in scorer._state.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_streaming_on_cuda_matches_cpu_without_sync():
    forecast, target, levels, series = panel(dtype=torch.float32)
    parts = zip(forecast.split(10), target.split(10), series.split(10))
    batches = [(f.cuda(), y.cuda(), s.cuda()) for f, y, s in parts]
    scorer = ForecastScorer(levels, NUM_SERIES)
    scorer.update(*batches[0])  # the first batch allocates the sums and moves the grid once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:]:
            scorer.update(*batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert scorer._state["pinball"].device.type == "cuda"
    want = functional_scores(forecast, target, levels, series)
    got = scorer.compute()
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
