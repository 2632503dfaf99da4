"""Calendar inputs: features line up with the target hours; the any-quantile property holds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from anyq.data.calendar import FEATURE_NAMES, NUM_FEATURES, CalendarSpec, spec_from_config, window_calendar
from anyq.data.panel import Panel
from anyq.data.synthetic import generate_synthetic, synthetic_holidays
from anyq.data.windows import WindowDataset, make_windows
from anyq.errors import DataError
from anyq.model import build_forecaster
from anyq.training.config_tree import variant_config

HOUR = FEATURE_NAMES.index("hour_sin")
HOLIDAY = FEATURE_NAMES.index("holiday")
DOW = FEATURE_NAMES.index("dow_mon")


def _hour_of(features: np.ndarray) -> np.ndarray:
    angle = np.arctan2(features[..., HOUR], features[..., HOUR + 1])
    return np.round(angle / (2 * np.pi) * 24).astype(int) % 24


def _panel(start: str, hours: int, ids=("A", "B")) -> Panel:
    index = pd.date_range(start, periods=hours, freq="h")
    values = np.random.default_rng(0).uniform(100, 200, (len(ids), hours)).astype(np.float32)
    return Panel(ids=ids, index=index, values=values)


def _dataset(panel: Panel, spec: CalendarSpec, history: int = 48, horizon: int = 48) -> tuple[WindowDataset, object]:
    windows = make_windows(panel, (0, panel.n_steps), history, horizon, step=1)
    return WindowDataset(panel.values, windows, spec.panel_features(panel.ids, panel.index)), windows


def test_holiday_flags_line_up_with_the_target_hours_of_a_known_holiday() -> None:
    # UTC timestamps, German local time: Christmas Day 2016 is 2016-12-24 23:00 .. 12-25 22:00 UTC
    panel = _panel("2016-12-20 00:00", 24 * 10)
    spec = CalendarSpec(holidays="country", country="DE", countries={"B": "FR"}, timezone="Europe/Berlin")
    data, windows = _dataset(panel, spec)
    origin = panel.position("2016-12-24 12:00")
    i = int(np.flatnonzero((windows.origin == origin) & (windows.series_idx == 0))[0])
    item = data[i]
    flags = item["calendar"][48:, HOLIDAY].numpy()  # target hours: origin .. origin + 47
    stamps = panel.index[origin:origin + 48]
    expected = np.array([(s + pd.Timedelta(hours=1)).date() in (pd.Timestamp("2016-12-25").date(),
                                                                 pd.Timestamp("2016-12-26").date())
                         for s in stamps], dtype=np.float32)  # Berlin is UTC+1 in winter
    np.testing.assert_array_equal(flags, expected)
    assert flags[10] == 0 and flags[11] == 1  # 22:00 UTC = 23:00 local on the 24th; 23:00 UTC = midnight
    # series B follows the French calendar: 25 Dec is a holiday there, 26 Dec is not
    fr = data[int(np.flatnonzero((windows.origin == origin) & (windows.series_idx == 1))[0])]["calendar"]
    christmas = np.array([(s + pd.Timedelta(hours=1)).date() == pd.Timestamp("2016-12-25").date() for s in stamps])
    np.testing.assert_array_equal(fr[48:, HOLIDAY].numpy(), christmas.astype(np.float32))
    # the shared features are the same for both series
    torch.testing.assert_close(fr[:, :HOLIDAY], item["calendar"][:, :HOLIDAY])


def test_hour_of_day_follows_a_daylight_saving_change() -> None:
    # London springs forward at 2016-03-27 01:00 UTC (01:00 GMT becomes 02:00 BST)
    panel = _panel("2016-03-25 00:00", 24 * 5)
    spec = CalendarSpec(timezone="Europe/London")
    data, windows = _dataset(panel, spec, history=24, horizon=24)
    origin = panel.position("2016-03-27 00:00")
    item = data[int(np.flatnonzero((windows.origin == origin) & (windows.series_idx == 0))[0])]
    hours = _hour_of(item["calendar"][24:].numpy())
    assert hours[:4].tolist() == [0, 2, 3, 4]  # local wall clock skips 01:00
    assert hours[23] == 0  # 23:00 UTC is midnight BST on the 28th
    dow = item["calendar"][24:, DOW:DOW + 7].numpy().argmax(axis=1)
    assert dow[0] == 6 and dow[23] == 0  # Sunday, then Monday from local midnight
    # without a time zone the stamps are the wall clock as given
    naive, _ = _dataset(panel, CalendarSpec(), history=24, horizon=24)
    assert _hour_of(naive[int(np.flatnonzero(windows.origin == origin)[0])]["calendar"][24:].numpy())[:4].tolist() \
        == [0, 1, 2, 3]


def test_synthetic_calendar_is_the_generators_own() -> None:
    data = generate_synthetic(n_series=3, years=1, gaps=False)
    cfg = {"source": "synthetic", "synthetic": {"seed": 0, "n_series": 3, "size": 1},
           "calendar": {"enabled": True, "holidays": "auto"}}
    spec = spec_from_config(cfg)
    assert spec.holidays == "synthetic"
    shared, holiday = spec.panel_features(data.panel.ids, data.panel.index)
    expected = synthetic_holidays(data.panel.index, data.params["national_day"])
    np.testing.assert_array_equal(holiday.astype(bool), expected)
    # the holidays are where the generator's mean load drops
    assert spec.national_days == data.national_days
    assert shared.shape == (data.panel.n_steps, NUM_FEATURES - 1)


def test_window_calendar_for_serving_equals_the_training_gather() -> None:
    panel = _panel("2016-12-20 00:00", 24 * 10)
    spec = CalendarSpec(holidays="country", country="DE", timezone="Europe/Berlin")
    data, windows = _dataset(panel, spec)
    idx = np.array([0, 17, 50])
    served = window_calendar(spec, [panel.ids[s] for s in windows.series_idx[idx]],
                             panel.index[windows.origin[idx]], 48, 48)
    np.testing.assert_allclose(served, data[idx]["calendar"].numpy(), atol=1e-6)


def test_calendar_config_errors_are_one_line() -> None:
    with pytest.raises(DataError, match="needs data.calendar.country"):
        CalendarSpec(holidays="country")
    with pytest.raises(DataError, match="'XX'"):
        CalendarSpec(holidays="country", country="XX")
    with pytest.raises(DataError, match="time zone"):
        CalendarSpec(timezone="Mars/Olympus")


def _model(variant: str):
    torch.manual_seed(0)
    sampler, attention = variant_config(variant, {"num_bins": 10},
                                        {"patch_length": 24, "d_model": 16, "n_heads": 2, "num_blocks": 1, "d_ff": 16})
    return build_forecaster(48, 24, backbone={"num_blocks": 2, "layer_width": 32}, sampler=sampler,
                            attention=attention, monotone="rearrange", monotone_grid=19,
                            calendar_features=NUM_FEATURES).eval()


@pytest.mark.parametrize("variant", ["nbeats_aq", "adaptive_attention"])
def test_any_quantile_property_with_calendar_features(variant: str) -> None:
    model = _model(variant)
    with torch.no_grad():  # make the calendar matter
        model.backbone.calendar.weight.normal_(0, 1.0)
        if model.attention is not None:
            model.attention.calendar_embed.weight.normal_(0, 1.0)
            torch.nn.init.normal_(model.attention.head.weight, std=0.3)
    x = torch.rand(4, 48) * 10 + 100
    cal = torch.from_numpy(window_calendar(CalendarSpec(holidays="country", country="DE"), ["a"] * 4,
                                           pd.date_range("2016-12-24", periods=4, freq="5h"), 48, 24))
    levels = torch.tensor([0.05, 0.3, 0.5, 0.93])
    with torch.no_grad():
        together = model(x, levels.expand(4, -1), cal)
        for i, level in enumerate(levels):
            alone = model(x, level.reshape(1, 1).expand(4, 1), cal)
            torch.testing.assert_close(alone[..., 0], together[..., i], rtol=1e-5, atol=1e-4)
        # the features are used: another holiday pattern gives another forecast
        other = cal.clone()
        other[:, :, HOLIDAY] = 1 - other[:, :, HOLIDAY]
        assert not torch.allclose(model(x, levels.expand(4, -1), other), together)
        assert (together.diff(dim=-1) >= 0).all()


def test_a_calendar_model_refuses_to_forecast_without_the_calendar() -> None:
    model = _model("adaptive_attention")
    with pytest.raises(ValueError, match="calendar inputs"):
        model(torch.rand(2, 48), torch.rand(2, 3))
