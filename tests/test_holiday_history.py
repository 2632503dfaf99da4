"""Holiday hours of the history input replaced by the week before (data.calendar.holiday_history)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from anyq.serving.bundle import ForecasterSpec, ServedForecaster
from anyq.serving.frames import predict_frame
from anyq.training.builders import build_datamodule, build_model, load_dataset
from anyq.training.run import settle_calendar

START = pd.Timestamp("2014-11-01 00:00")
HOURS = 92 * 24  # 2014-11-01 .. 2015-01-31
# US federal holidays in the range and the day whose hours replace them: Christmas and New Year's
# Day are a week apart, so New Year's Day reads the week before Christmas.
REPLACED_BY = {"2014-11-11": "2014-11-04", "2014-11-27": "2014-11-20", "2014-12-25": "2014-12-18",
               "2015-01-01": "2014-12-18", "2015-01-19": "2015-01-12"}
US_FILE = ["data=csv", "data.calendar.country=US", "data.split.kind=dates", "data.split.train_end=2014-12-31",
           "data.split.val_end=2015-01-15", "data.split.test_end=2015-01-31"]


def _hour(day: str) -> int:
    return int((pd.Timestamp(day) - START) / pd.Timedelta(hours=1))


@pytest.fixture
def us_file(tmp_path: Path) -> Path:
    """One series whose value is 1000 + its hour index: every hour tells where it came from."""
    path = tmp_path / "load.csv"
    pd.DataFrame({"unique_id": "A", "ds": pd.date_range(START, periods=HOURS, freq="h"),
                  "y": 1000.0 + np.arange(HOURS)}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("inputs", [["data.calendar.enabled=false"],
                                    ["data.calendar.enabled=true", "data.calendar.inputs=[hour,dow]"],
                                    ["data.calendar.enabled=true", "data.calendar.inputs=[hour,dow,holiday]"]])
def test_holiday_hours_of_the_history_read_the_week_before_and_targets_stay_real(compose_cfg, us_file, inputs):
    cfg = compose_cfg(*US_FILE, f"data.path={us_file}", "data.calendar.holiday_history=week_before", *inputs)
    dataset = load_dataset(cfg.data)
    dm = build_datamodule(cfg.data, dataset, seed=0)
    real = 1000.0 + np.arange(HOURS, dtype=np.float32)
    expected = real.copy()
    for day, source in REPLACED_BY.items():
        expected[_hour(day):_hour(day) + 24] = real[_hour(source):_hour(source) + 24]
    np.testing.assert_array_equal(dm.history_values[0], expected)  # the holidays whether or not an input
    np.testing.assert_array_equal(dm.filled_values[0], real)  # what targets, naive and scores read

    # the validation window issued on 2 Jan: New Year's Day is its last history day and 18 Dec's
    # hours stand in for it; the window issued on 1 Jan forecasts New Year's Day's real load
    val = dm.dataset("val")
    origins = list(dataset.panel.index[val.windows.origin])
    after, on = origins.index(pd.Timestamp("2015-01-02")), origins.index(pd.Timestamp("2015-01-01"))
    batch = val[[after, on]]
    np.testing.assert_array_equal(batch["history"][0, -24:].numpy(), real[_hour("2014-12-18"):_hour("2014-12-19")])
    np.testing.assert_array_equal(batch["history"][0, :-24].numpy(), real[_hour("2014-12-26"):_hour("2015-01-01")])
    np.testing.assert_array_equal(batch["target"][1, :24].numpy(), real[_hour("2015-01-01"):_hour("2015-01-02")])
    np.testing.assert_array_equal(val.target_array(), real[val.windows.origin[:, None] + np.arange(48)])


def test_served_forecast_equals_the_in_process_one_with_holidays_in_the_history(compose_cfg):
    """Same weights: the served model, given the real hours (a week more than the window), reads
    the history training's windows read, holidays replaced."""
    cfg = compose_cfg("data.calendar.enabled=true", "data.calendar.holiday_history=week_before",
                      "data.synthetic.gaps=false")
    dataset = load_dataset(cfg.data)
    dm = build_datamodule(cfg.data, dataset, seed=0)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    served = ServedForecaster(ForecasterSpec.from_dict(ForecasterSpec.from_config(cfg).to_dict()), model.state_dict())

    test = dm.dataset("test")
    length = cfg.data.history_length
    starts = test.windows.origin - length
    cleaned = np.array([(dm.history_values[s, o:o + length] != dm.filled_values[s, o:o + length]).any()
                        for s, o in zip(test.windows.series_idx, starts)])
    rows = np.flatnonzero(cleaned)
    assert rows.size >= 3  # the generator's Christmas and national days fall in the test months
    batch = test[rows]
    levels = torch.tensor([0.1, 0.5, 0.9]).expand(rows.size, -1)
    with torch.no_grad():
        in_process = model(batch["history"], levels, batch["calendar"]).double().numpy()

    s, o = test.windows.series_idx[rows], test.windows.origin[rows]
    request = dm.filled_values[s[:, None], o[:, None] - length - 168 + np.arange(length + 168)]  # real values
    names = [dataset.panel.ids[i] for i in s]
    stamps = dataset.panel.index[o]
    answer = served.forecast(request, [0.1, 0.5, 0.9], names=names, origins=stamps)
    np.testing.assert_allclose(answer, in_process, rtol=1e-5, atol=1e-3)
    frame = pd.DataFrame({"unique_id": names, "history": list(request), "levels": [[0.1, 0.5, 0.9]] * rows.size,
                          "origin": [f"{t:%Y-%m-%d %H:%M}" for t in stamps]})
    long = predict_frame(served, frame)  # the served frame layout: rows by window, step, level
    np.testing.assert_allclose(long["value"].to_numpy().reshape(in_process.shape), in_process, rtol=1e-5, atol=1e-3)
    with torch.no_grad():  # the real history would have given another forecast
        raw = model(torch.from_numpy(request[:, -length:]), levels, batch["calendar"]).double().numpy()
    assert np.abs(raw - in_process).max() > 1e-2


@pytest.mark.parametrize(("overrides", "history"), [
    ([], "week_before"),  # a file with a named country: its holidays are cleaned by default
    (["data.calendar.country=null"], "keep"),  # no holiday calendar: nothing to clean
    (["data.calendar.holiday_history=keep"], "keep"),
])
def test_auto_holiday_history_cleans_where_a_calendar_names_holidays(compose_cfg, us_file, overrides, history):
    cfg = compose_cfg(*US_FILE, f"data.path={us_file}", "data.calendar.enabled=true",
                      "data.calendar.inputs=[hour,dow]", *overrides)
    assert cfg.data.calendar.holiday_history == ("keep" if "keep" in "".join(overrides) else "auto")
    dataset = load_dataset(cfg.data)
    dm = build_datamodule(cfg.data, dataset, seed=0)
    christmas, source = _hour("2014-12-25"), _hour("2014-12-18")
    want = 1000.0 + np.arange(24, dtype=np.float32) + (source if history == "week_before" else christmas)
    np.testing.assert_array_equal(dm.history_values[0, christmas:christmas + 24], want)
    settled = settle_calendar(cfg, dataset)
    assert settled.tracking.tags["calendar.holiday_history"] == history


def test_auto_holiday_history_cleans_the_synthetic_generators_holidays(compose_cfg):
    cfg = compose_cfg("data.calendar.enabled=false", "data.synthetic.gaps=false")
    dm = build_datamodule(cfg.data, load_dataset(cfg.data), seed=0)
    assert (dm.history_values != dm.filled_values).any()  # Christmas and each series' national day
    assert settle_calendar(cfg, load_dataset(cfg.data)).tracking.tags["calendar.holiday_history"] == "week_before"
    kept = compose_cfg("data.calendar.enabled=false", "data.synthetic.gaps=false", "data.calendar.holiday_history=keep")
    dm_kept = build_datamodule(kept.data, load_dataset(kept.data), seed=0)
    np.testing.assert_array_equal(dm_kept.history_values, dm_kept.filled_values)
