"""Bad input files reach ``anyq-train`` and ``anyq-predict`` as one line and exit status 2.

Every parsing problem is decided once, in :mod:`anyq.data.reader`; these tests drive both
commands end to end with small made-up files, and the reader directly for the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anyq.app import predict as predict_app
from anyq.data import DataError, Panel, read_long_frame
from conftest import run_cli

HOURS = 24 * 50


def dst_csv(path: Path) -> Path:
    """Two hourly series in local Warsaw time with offsets: +01:00, then +02:00 from 28 March."""
    utc = pd.date_range("2021-03-01", periods=HOURS, freq="h", tz="UTC")
    local = utc.tz_convert("Europe/Warsaw")
    t = np.arange(HOURS)
    frames = [
        pd.DataFrame({"unique_id": sid, "ds": [ts.isoformat(sep=" ") for ts in local],
                      "y": level + 100 * np.sin(2 * np.pi * t / 24)})
        for sid, level in (("north", 1000.0), ("south", 500.0))
    ]
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_dst_offsets_parse_to_one_utc_hourly_axis(tmp_path):
    path = dst_csv(tmp_path / "load.csv")
    text = path.read_text()
    assert "2021-03-27 23:00:00+01:00" in text and "2021-03-28 03:00:00+02:00" in text
    frame = read_long_frame(path)
    panel = Panel.from_long(frame)
    assert panel.n_series == 2 and panel.n_steps == HOURS  # no hour lost or doubled at the switch
    assert panel.index[0] == pd.Timestamp("2021-03-01 00:00")  # UTC, naive
    assert not np.isnan(panel.values).any()
    switch = panel.position("2021-03-28 01:00")  # 03:00+02:00 local
    np.testing.assert_allclose(panel.values[0, switch], 1000 + 100 * np.sin(2 * np.pi * switch / 24), rtol=1e-6)


def test_dst_file_trains_and_predicts(tmp_path, capsys):
    path = dst_csv(tmp_path / "load.csv")
    run_cli(tmp_path, "data=csv", f"data.path={path}", "tracking=none", "trainer.max_epochs=1")
    (checkpoint,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    out = tmp_path / "forecast.csv"
    predict_app.main(["--checkpoint", str(checkpoint), "--input", str(path), "--output", str(out)])
    forecast = pd.read_csv(out, parse_dates=["ds"])
    assert sorted(forecast["unique_id"].unique()) == ["north", "south"]
    assert forecast["ds"].min() == pd.Timestamp("2021-03-01") + pd.Timedelta(hours=HOURS)  # UTC
    assert np.isfinite(forecast["value"]).all()


def header_only(path: Path) -> Path:
    path.write_text("unique_id,ds,y\n")
    return path


def one_error_line(captured: str, command: str) -> str:
    lines = [line for line in captured.splitlines() if line.startswith(f"{command}: error:")]
    assert len(lines) == 1, captured
    return lines[0]


def test_header_only_csv_is_no_rows_in_both_commands(tmp_path, capsys):
    path = header_only(tmp_path / "load.csv")
    with pytest.raises(SystemExit) as exit_train:
        run_cli(tmp_path, "data=csv", f"data.path={path}", "tracking=none")
    assert exit_train.value.code == 2
    line = one_error_line(capsys.readouterr().err, "anyq-train")
    assert "load.csv: no rows" in line
    with pytest.raises(SystemExit) as exit_predict:
        predict_app.main(["--run", "0" * 32, "--input", str(path)])
    assert exit_predict.value.code == 2
    line = one_error_line(capsys.readouterr().err, "anyq-predict")
    assert "load.csv: no rows" in line


BAD_FILES = [
    # (content, what the one line must say)
    ("", r"bad\.csv: no rows \(the file is empty\)"),
    ("unique_id,ds,y\na,2021-03-27 23:00:00+01:00,1\na,2021-03-28 00:00:00,2\n",
     r"column 'ds' mixes stamps with and without a UTC offset, e\.g\. row 1 .* and row 2 \('2021-03-28 00:00:00'\)"),
    ("unique_id,ds,y\na,2021-01-01 00:00,1\n,2021-01-01 01:00,2\n",
     r"column 'unique_id' has 1 empty id\(s\), e\.g\. row 2"),
    ("unique_id,ds,y\na,2021-01-01 00:00,1\na,2021-01-01 01:00,inf\n",
     r"column 'y' has 1 infinite or too large value\(s\) .*row 2 \(inf\)"),
    ("unique_id,ds,y\na,2021-01-01 00:00,1\na,2021-01-01 01:00,1e39\n",
     r"column 'y' has 1 infinite or too large value\(s\) .*row 2 \(1e\+39\)"),
    ("unique_id,ds,y\na,2021-01-01 00:00,1\na,3000-01-01 01:00,2\n",
     r"column 'ds' cannot be parsed \(Out of bounds.*\), e\.g\. row 2 \('3000-01-01 01:00'\)"),
    ("unique_id;ds;y\na;2021-01-01 00:00;1\n", r"missing column\(s\).*separated by commas"),
    ("unique_id,ds,y\na,1609459200,1\n", r"column 'ds' has unparseable dates, e\.g\. row 1 \('1609459200'\)"),
    ("unique_id,ds,y\na,2021-01-01 00:00,1\na,2021-01-01 01:00,1\n\x00\x01,x,y,z\n",
     r"column 'ds' has 1 unparseable date\(s\), e\.g\. row 3 \('x'\)"),
]


@pytest.mark.parametrize(("content", "pattern"), BAD_FILES)
def test_bad_files_are_one_data_error(tmp_path, content, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=pattern) as info:
        read_long_frame(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_undecodable_csv_is_one_data_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(DataError, match=r"bad\.csv: cannot be read: 'utf-8' codec"):
        read_long_frame(path)


@pytest.mark.parametrize(
    ("frame", "pattern"),
    [
        (pd.DataFrame({"unique_id": ["a", "a"], "ds": pd.date_range("2021", periods=2, freq="h"),
                       "y": [True, False]}), r"column 'y' holds booleans"),
        (pd.DataFrame({"unique_id": ["a", "a"], "ds": [1, 2], "y": [1.0, 2.0]}),
         r"column 'ds' has unparseable dates, e\.g\. row 1 \('1'\)"),
        (pd.DataFrame({"unique_id": ["a"], "ds": pd.to_datetime(["2021-01-01"]), "y": [1.0]}).iloc[:0],
         r"no rows"),
        (pd.DataFrame({"unique_id": ["a", "a"], "ds": pd.to_datetime(["2021-01-01", None]), "y": [1.0, 2.0]}),
         r"column 'ds' has 1 empty date\(s\), e\.g\. row 2 \(NaT\)"),
    ],
)
def test_bad_parquet_is_one_data_error(tmp_path, frame, pattern):
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    with pytest.raises(DataError, match=pattern):
        read_long_frame(path)


def test_corrupt_parquet_is_one_data_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: cannot be read: .*[Pp]arquet"):
        read_long_frame(path)


def test_gaps_are_documented_gaps_not_errors(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("unique_id,ds,y\na,2021-01-01 00:00,NaN\na,2021-01-01 01:00,\na,2021-01-01 02:00,NA\n"
                    "a,2021-01-01 03:00,3\n")
    frame = read_long_frame(path)
    assert frame["y"].isna().tolist() == [True, True, True, False]


def test_tz_aware_parquet_converts_to_utc(tmp_path):
    stamps = pd.date_range("2021-03-28 00:00", periods=4, freq="h", tz="Europe/Warsaw")
    pd.DataFrame({"unique_id": "a", "ds": stamps, "y": [1.0, 2, 3, 4]}).to_parquet(tmp_path / "a.parquet")
    frame = read_long_frame(tmp_path / "a.parquet")
    assert frame["ds"].tolist() == list(pd.date_range("2021-03-27 23:00", periods=4, freq="h"))


def test_predict_refuses_infinite_history_in_one_line(tmp_path, capsys):
    path = tmp_path / "load.csv"
    path.write_text("unique_id,ds,y\na,2021-01-01 00:00,1\na,2021-01-01 01:00,-inf\n")
    with pytest.raises(SystemExit) as info:
        predict_app.main(["--run", "0" * 32, "--input", str(path)])
    assert info.value.code == 2
    assert "column 'y' has 1 infinite" in one_error_line(capsys.readouterr().err, "anyq-predict")
