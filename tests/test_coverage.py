"""Calendar inputs the training range cannot teach are left out before training, and the run says so."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from anyq.app.job import run_job
from anyq.data.calendar import CalendarSpec
from anyq.data.coverage import calendar_coverage, covered_inputs
from anyq.data.panel import Panel
from anyq.data.windows import make_windows
from anyq.errors import ConfigError
from anyq.serving.publish import load_served
from anyq.tracking.baseline import config_signature
from anyq.training.builders import load_dataset
from anyq.training.validation import validate_config
from anyq.training.checkpoints import read_checkpoint, recorded_history
from anyq.training.run import settle_calendar


def _panel(start: str, end: str, ids=("A",)) -> Panel:
    index = pd.date_range(start, end, freq="h")
    hours = np.arange(len(index))
    load = 1000 + 200 * np.sin(2 * np.pi * hours / 24) + np.random.default_rng(0).normal(0, 20, (len(ids), len(index)))
    return Panel(ids=ids, index=index, values=load.astype(np.float32))


def _coverage(panel: Panel, train_end: str, spec: CalendarSpec = CalendarSpec(), horizon: int = 48):
    windows = make_windows(panel, (0, panel.position(train_end)), 168, horizon, step=4)
    return calendar_coverage(spec, panel, windows)


def test_nine_months_of_training_drop_day_of_year_and_the_run_says_so(compose_cfg, tmp_path, caplog):
    path = tmp_path / "load.csv"
    _panel("2019-01-01", "2019-12-31 23:00").to_long().to_csv(path, index=False)
    cfg = compose_cfg("data.source=file", f"data.path={path}", "data.name=nine_months", "data.split.kind=dates",
                      "data.split.train_end=2019-09-30", "data.split.val_end=2019-10-31",
                      "data.split.test_end=2019-12-31", "data.calendar.enabled=true", "data.calendar.country=GB",
                      "tracking.compare_to_baseline=false", "trainer.max_epochs=1", "trainer.limit_train_batches=2")
    with caplog.at_level(logging.INFO, logger="anyq"):
        summary = run_job(cfg)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("calendar inputs")]
    reason = "training covers 273 of 365 days of the year, the longest gap 92 in a row"
    assert said == [f"calendar inputs: hour,dow,holiday, those the training range covers; doy left out: {reason}"
                    "; holiday history: week_before"]  # GB holidays named: auto cleans them
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    run = MlflowClient(uri).get_run(summary["run_id"])
    assert run.data.tags["calendar.inputs"] == "hour,dow,holiday"
    assert run.data.tags["calendar.dropped"] == f"doy: {reason}"
    assert run.data.tags["calendar.holiday_history"] == "week_before"
    assert run.data.params["data.calendar.inputs"] == '["hour", "dow", "holiday"]'
    # the checkpoint records them, the model's input width follows, and the served model takes the same inputs
    best = next(Path(cfg.paths.checkpoints).glob("best-*.ckpt"))
    assert recorded_history(read_checkpoint(best))["settings"]["data.calendar.inputs"] == ["hour", "dow", "holiday"]
    served = load_served(f"runs:/{summary['run_id']}/model", uri)
    assert served.spec.calendar_spec().inputs == ("hour", "dow", "holiday")
    assert served.model.backbone.calendar_features == 2 + 7 + 1
    history = np.full((2, 168), 1000.0)
    forecast = served.forecast(history, [0.1, 0.5, 0.9], names=["A", "A"],
                               origins=["2019-11-04 00:00", "2020-07-01 00:00"])
    assert forecast.shape == (2, 48, 3) and np.isfinite(forecast).all()


def test_a_full_year_of_training_keeps_day_of_year():
    coverage = _coverage(_panel("2019-01-01", "2020-03-31 23:00"), "2020-01-01 00:00")
    assert coverage["doy"].covered
    assert coverage["doy"].reason == "training covers 365 of 365 days of the year"
    assert covered_inputs(coverage) == ("hour", "dow", "doy")  # no holiday calendar: no holiday input
    assert coverage["holiday"].reason == (
        "no holiday calendar (data.calendar.holidays=none, or a file without data.calendar.country)")


@pytest.mark.parametrize(("missing_days", "kept"), [(7, True), (8, False)])
def test_a_gap_of_a_week_keeps_day_of_year_a_longer_one_does_not(missing_days, kept):
    panel = _panel("2019-01-01", "2020-03-31 23:00")
    start = panel.position("2019-06-10 00:00")
    panel.values[:, start:start + 24 * missing_days] = np.nan
    coverage = _coverage(panel, "2020-01-01 00:00")
    assert coverage["doy"].covered is kept
    assert coverage["doy"].reason == (f"training covers {365 - missing_days} of 365 days of the year, "
                                      f"the longest gap {missing_days} in a row")


def test_a_holiday_country_with_no_holiday_in_training_is_left_out():
    # England's bank holidays of 2019: 27 May, then 26 Aug; June to 20 August has none
    panel = _panel("2019-06-01", "2019-09-30 23:00")
    spec = CalendarSpec(holidays="country", country="GB", subdivision="ENG")
    coverage = _coverage(panel, "2019-08-21 00:00", spec)
    assert not coverage["holiday"].covered
    assert coverage["holiday"].reason == ("no holiday of the calendar of GB in the training range "
                                          "(2019-06-01 to 2019-08-20)")
    assert covered_inputs(coverage) == ("hour", "dow")  # and day of year: under a year
    # with the summer bank holiday inside the training range the flag is kept
    later = _coverage(panel, "2019-09-01 00:00", spec)
    assert later["holiday"].covered
    assert later["holiday"].reason == "training covers 1 holiday date of the calendar of GB"


def test_an_hour_of_day_never_observed_in_training_is_left_out():
    panel = _panel("2019-01-01", "2019-03-31 23:00")
    panel.values[:, panel.index.hour == 3] = np.nan  # a meter that never reports at 03:00
    coverage = _coverage(panel, "2019-03-01 00:00", horizon=2)
    assert not coverage["hour"].covered
    assert coverage["hour"].reason == "training covers 23 of 24 hours of the day"
    assert coverage["dow"].covered


def test_the_inputs_are_part_of_the_signature_only_when_one_is_left_out(compose_cfg):
    on = ("data.calendar.enabled=true",)
    unset, every = compose_cfg(*on), compose_cfg(*on, "data.calendar.inputs=[holiday,hour,dow,doy]")
    fewer = compose_cfg(*on, "data.calendar.inputs=[hour,dow,holiday]")
    assert config_signature(every, "x") == config_signature(unset, "x")  # what every run took before
    assert config_signature(fewer, "x") != config_signature(unset, "x")


def test_an_unknown_input_is_one_line(compose_cfg):
    cfg = compose_cfg("data.calendar.enabled=true", "data.calendar.inputs=[hour,moon]")
    with pytest.raises(ConfigError, match=r"data.calendar.inputs: unknown input 'moon'; the inputs are "
                                          r"hour, dow, doy, holiday") as caught:
        validate_config(cfg)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("recorded", "expected"), [(["hour", "dow"], ("hour", "dow")),
                                                    (None, ("hour", "dow", "doy", "holiday"))])
def test_a_scored_checkpoint_keeps_the_inputs_it_was_trained_with(compose_cfg, tmp_path, caplog, recorded, expected):
    # a checkpoint's recorded settings name its inputs; one written before they could be left out took all four
    settings = {} if recorded is None else {"data.calendar.inputs": recorded}
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}, "callbacks": {"RunHistory": {"settings": settings}}}, path)
    cfg = compose_cfg("data.calendar.enabled=true", "task=test", f"resume={path}")
    with caplog.at_level(logging.INFO, logger="anyq"):
        settled = settle_calendar(cfg, load_dataset(cfg.data))  # one year of synthetic data: doy not covered
    assert tuple(settled.data.calendar.inputs) == expected
    assert cfg.data.calendar.inputs is None  # the given config is left as it was
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("calendar inputs")]
    assert len(said) == 1 and "as the resume= checkpoint's model takes" in said[0]
    if "doy" in expected:
        assert "taken although not covered: doy (training covers" in said[0]
