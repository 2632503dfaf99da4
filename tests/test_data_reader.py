"""Reading long-format files, the hourly panel and splits: values placed right, errors that fire."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from anyq.data import DataError, Panel, read_long_frame, split_by_dates, split_by_proportions, validate_hourly


def _mhlv_csv(path):
    """A small file in the MHLV layout: index column, dd-Mon-YYYY dates, NaN gaps, a late start."""
    stamps = pd.date_range("2006-01-01", periods=48, freq="h")
    rows = []
    for sid, offset in (("Var1", 0), ("Var2", 0), ("Var10", 30)):
        for k, ts in enumerate(stamps[offset:], start=offset):
            y = "" if (sid == "Var2" and k in (5, 6)) else f"{1000 * int(sid[3:]) + k}.5"
            rows.append(f"{len(rows)},{ts:%d-%b-%Y %H:%M:%S},{sid},{y},7")
    # the late-starting series also ships NaN rows before its start, as MHLV does
    rows += [f"{len(rows) + j},{stamps[j]:%d-%b-%Y %H:%M:%S},Var10,,7" for j in range(3)]
    path.write_text(",ds,unique_id,y,extra\n" + "\n".join(rows) + "\n")
    return path


def test_reads_mhlv_layout(tmp_path):
    frame = read_long_frame(_mhlv_csv(tmp_path / "df_y.csv"))
    assert list(frame.columns) == ["unique_id", "ds", "y"]
    assert frame["y"].dtype == np.float64
    assert pd.api.types.is_string_dtype(frame["unique_id"])
    assert frame["ds"].iloc[0] == pd.Timestamp("2006-01-01 00:00")
    var2 = frame[frame["unique_id"] == "Var2"].set_index("ds")["y"]
    assert np.isnan(var2[pd.Timestamp("2006-01-01 05:00")])
    assert var2[pd.Timestamp("2006-01-01 07:00")] == 2007.5

    panel = Panel.from_long(frame)
    assert panel.ids == ("Var1", "Var10", "Var2")  # sorted as strings
    assert panel.n_steps == 48 and panel.index[0] == pd.Timestamp("2006-01-01")
    assert panel.values.dtype == np.float32
    var10 = panel.values[1]
    assert np.isnan(var10[:30]).all() and var10[30] == 10030.5 and var10[47] == 10047.5
    assert np.isnan(panel.values[2, [5, 6]]).all() and panel.values[2, 4] == 2004.5
    np.testing.assert_allclose(panel.scale()[0], np.mean(1000 + np.arange(48) + 0.5))


def test_reads_iso_csv_and_parquet(tmp_path):
    frame = pd.DataFrame(
        {"unique_id": [1, 1, 2], "ds": ["2020-03-01T00:00:00", "2020-03-01T01:00:00", "2020-03-01 02:00"],
         "y": [1, 2, 3]}
    )
    frame.to_csv(tmp_path / "a.csv", index=False)
    got = read_long_frame(tmp_path / "a.csv")
    assert got["unique_id"].tolist() == ["1", "1", "2"]
    assert got["ds"].tolist()[2] == pd.Timestamp("2020-03-01 02:00")
    parquet = frame.assign(ds=pd.to_datetime(frame["ds"], format="ISO8601"), unique_id=["a", "a", "b"])
    parquet.to_parquet(tmp_path / "a.parquet")
    panel = Panel.from_long(read_long_frame(tmp_path / "a.parquet"))
    np.testing.assert_array_equal(panel.values, [[1, 2, np.nan], [np.nan, np.nan, 3]])


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("unique_id,when,value\na,2020-01-01,1\n", r"missing column\(s\) ds, y; found unique_id, when, value"),
        ('unique_id,ds,y\na,"2020-01-01 00:00,1\n', r"cannot be read"),
        ("unique_id,ds,y\na,2020-01-01 00:00,1\na,yesterday,2\n", r"unparseable date.*'yesterday'"),
        ("unique_id,ds,y\na,31/12/2020 00:00,1\n", r"unparseable dates, e\.g\. row 1 \('31/12/2020 00:00'\)"),
        ("unique_id,ds,y\na,2020-01-01 00:00,1\na,2020-01-01 00:00,2\nb,2020-01-01 01:00,3\nb,2020-01-01 01:00,3\n",
         r"2 duplicate \(unique_id, ds\) row\(s\), e\.g\. unique_id='a' ds=2020-01-01 00:00:00"),
        ("unique_id,ds,y\na,2020-01-01 00:00,1\na,2020-01-01 01:00,abc\n", r"column 'y'.*'abc'"),
    ],
)
def test_reader_errors_name_the_problem(tmp_path, content, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=pattern) as info:
        read_long_frame(path)
    assert "bad.csv" in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*nope\.csv"):
        read_long_frame(tmp_path / "nope.csv")
    (tmp_path / "x.txt").write_text("unique_id,ds,y\n")
    with pytest.raises(DataError, match="unsupported file type"):
        read_long_frame(tmp_path / "x.txt")


@pytest.mark.parametrize(
    ("freq", "shown"), [("D", "1 days 00:00:00"), ("15min", "0 days 00:15:00")]
)
def test_non_hourly_is_refused_with_detected_step(freq, shown):
    frame = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2020-01-01", periods=10, freq=freq), "y": 1.0})
    with pytest.raises(DataError, match=f"expected hourly data but detected a step of {shown}"):
        Panel.from_long(frame)


def test_a_half_hourly_file_is_named_and_the_resampling_shown(tmp_path):
    from omegaconf import OmegaConf

    from anyq.data.dataset import load_dataset

    path = tmp_path / "half.csv"
    pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2020-01-01", periods=10, freq="30min"), "y": 1.0}).to_csv(
        path, index=False)
    data = OmegaConf.create({"source": "file", "path": str(path), "name": "csv",
                             "split": {"kind": "proportions", "proportions": [0.6, 0.2, 0.2]}})
    with pytest.raises(DataError) as caught:
        load_dataset(data)
    assert str(caught.value).startswith(f"{path}: expected hourly data but detected a step of 0 days 00:30:00 "
                                        "(resample it to hourly means first")


def test_hourly_with_gaps_passes_but_off_grid_series_fails():
    hours = pd.date_range("2020-01-01", periods=10, freq="h")
    frame = pd.DataFrame({"unique_id": "a", "ds": hours.delete([3, 4, 7]), "y": 1.0})
    validate_hourly(frame)
    shifted = pd.concat([frame, frame.assign(unique_id="b", ds=frame["ds"] + pd.Timedelta(minutes=30))])
    with pytest.raises(DataError, match=r"series 'b' has ds=2020-01-01 00:30:00 off the hourly grid"):
        Panel.from_long(shifted)


def test_panel_roundtrip_and_fingerprint():
    frame = pd.DataFrame(
        {"unique_id": ["b", "a", "a", "b", "a"],
         "ds": pd.to_datetime(["2020-01-01 02:00", "2020-01-01 00:00", "2020-01-01 03:00", "2020-01-01 00:00",
                               "2020-01-01 01:00"]),
         "y": [4.0, 1.0, 3.0, 2.0, 5.0]}
    )
    panel = Panel.from_long(frame)
    np.testing.assert_array_equal(panel.values, [[1, 5, np.nan, 3], [2, np.nan, 4, np.nan]])
    back = panel.to_long()
    expected = frame.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    assert Panel.from_long(back).fingerprint() == panel.fingerprint()
    assert len(panel.fingerprint()) == 16
    changed = frame.assign(y=[4.0, 1.0, 3.0, 2.5, 5.0])
    assert Panel.from_long(changed).fingerprint() != panel.fingerprint()
    renamed = frame.assign(unique_id=["c", "a", "a", "c", "a"])
    assert Panel.from_long(renamed).fingerprint() != panel.fingerprint()


def test_series_without_any_value_is_refused():
    frame = pd.DataFrame({"unique_id": ["a", "a", "z"], "ds": pd.date_range("2020", periods=3, freq="h"),
                          "y": [1.0, 2.0, np.nan]})
    with pytest.raises(DataError, match="series 'z' has no observed values"):
        Panel.from_long(frame)


def _days_panel(days: int, start: str = "2016-12-30") -> Panel:
    index = pd.date_range(start, periods=24 * days, freq="h")
    return Panel(ids=("a",), index=index, values=np.ones((1, len(index))))


def test_split_by_dates_inclusive_ends():
    panel = _days_panel(5)  # 2016-12-30 .. 2017-01-03
    splits = split_by_dates(panel, "2016-12-31", "2017-01-01 11:00", "2017-01-02")
    assert splits.train == (0, 48)  # bare date: through 23:00 of that day
    assert splits.val == (48, 60)  # a time of day: that exact hour, inclusive
    assert splits.test == (60, 96)
    assert splits.describe("val", panel.index) == "2017-01-01 00:00 to 2017-01-01 11:00"
    assert split_by_dates(panel, "2016-12-31", "2017-01-01").test == (72, 120)  # to the end
    with pytest.raises(DataError, match="split ends must increase: train ends 2017-01-01 23:00:00"):
        split_by_dates(panel, "2017-01-01", "2016-12-31")
    with pytest.raises(DataError, match=r"split 'val' \(ending 2019-12-31 23:00:00\) is empty: the data covers"):
        split_by_dates(panel, "2017-01-03", "2019-12-31", "2020-01-01")
    with pytest.raises(DataError, match=r"split 'test' \(ending 2020-01-01 23:00:00\) is empty"):
        split_by_dates(panel, "2017-01-01", "2017-01-03", "2020-01-01")


def test_a_test_end_after_the_data_is_taken_as_the_data_end_and_said(caplog):
    panel = _days_panel(5)  # 2016-12-30 .. 2017-01-03 23:00
    with caplog.at_level(logging.WARNING, logger="anyq.data.splits"):
        splits = split_by_dates(panel, "2016-12-31", "2017-01-01", "2017-06-30")
    assert splits.test == (72, 120)
    assert caplog.messages == ["data.split.test_end 2017-06-30 23:00:00 is after the data's last hour: the test "
                               "split ends at 2017-01-03 23:00:00"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anyq.data.splits"):
        split_by_dates(panel, "2016-12-31", "2017-01-01", "2017-01-03")  # the data's own last day: nothing to say
    assert caplog.messages == []


def test_split_by_proportions_cuts_at_midnight():
    panel = _days_panel(20, start="2020-01-01 05:00")
    splits = split_by_proportions(panel, (0.7, 0.15, 0.15))
    assert splits.test[1] == panel.n_steps
    for cut in (splits.train[1], splits.val[1]):
        assert panel.index[cut].hour == 0
    assert abs(splits.train[1] - 0.7 * panel.n_steps) <= 12
    assert splits.val[0] == splits.train[1] and splits.test[0] == splits.val[1]
    with pytest.raises(DataError, match="3 positive shares"):
        split_by_proportions(panel, (0.8, 0.3, 0.1))
