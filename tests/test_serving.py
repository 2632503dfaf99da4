"""Serving: the logged MLflow model, the HTTP scoring server, and ``anyq-predict``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from anyq.app import predict as predict_app
from anyq.app.job import run_job
from anyq.errors import RequestError
from anyq.reporting.browser import wait_for_http
from anyq.serving.bundle import ForecasterSpec, ServedForecaster
from anyq.serving.publish import main as publish_main
from anyq.tracking.store import tracking_uri
from anyq.training.builders import build_model
from conftest import compose_config

LEVELS = [0.1, 0.5, 0.9]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny tracked run with its logged model; its config, run id, store and checkpoint. A
    model that reads no date (no calendar input, holidays of the history kept), so a request is
    numbers only; the date-reading models: tests/test_holiday_history.py, tests/test_calendar.py."""
    root = tmp_path_factory.mktemp("serving")
    cfg = compose_config(root, ["tracking.compare_to_baseline=false", "data.synthetic.gaps=false", "trainer.max_epochs=1",
                                "data.calendar.holiday_history=keep"])
    summary = run_job(cfg)
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    best = sorted(Path(cfg.paths.checkpoints).glob("best-*.ckpt"))
    assert len(best) == 1
    return {"cfg": cfg, "run_id": summary["run_id"], "uri": uri, "root": root, "checkpoint": best[0]}


def reference_forecast(trained, history: np.ndarray, levels) -> np.ndarray:
    """The checkpoint's own forward pass, through the training code's model builder."""
    model = build_model(trained["cfg"])
    state = torch.load(trained["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("forecaster."): v for k, v in state.items() if k.startswith("forecaster.")})
    model.eval()
    q = torch.tensor(levels, dtype=torch.float32).expand(history.shape[0], -1)
    with torch.no_grad():
        return model(torch.as_tensor(history, dtype=torch.float32), q).double().numpy()


def histories(n: int, length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hours = np.arange(length)
    level = rng.uniform(500, 5000, size=(n, 1))
    return level * (1 + 0.2 * np.sin(2 * np.pi * hours / 24)) + rng.normal(0, 20, size=(n, length))


def load_logged(trained):
    with tracking_uri(trained["uri"]):
        return mlflow.pyfunc.load_model(f"runs:/{trained['run_id']}/model")


def test_logged_model_matches_checkpoint_forward(trained):
    model = load_logged(trained)
    history = histories(3, 168)
    request = pd.DataFrame({"unique_id": ["a", "b", "c"], "history": list(history), "levels": [LEVELS] * 3})
    out = model.predict(request)
    assert list(out.columns) == ["unique_id", "step", "level", "value"]
    assert len(out) == 3 * 48 * 3
    expected = reference_forecast(trained, history, LEVELS)  # [3, 48, 3]
    got = out["value"].to_numpy().reshape(3, 48, 3)  # rows: window, step, level
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert (out["unique_id"].to_numpy().reshape(3, -1) == np.array([["a"], ["b"], ["c"]])).all()
    np.testing.assert_array_equal(out["step"].to_numpy().reshape(3, 48, 3)[0, :, 0], np.arange(1, 49))
    np.testing.assert_array_equal(out["level"].to_numpy().reshape(3, 48, 3)[1, 5], LEVELS)


def test_rows_may_ask_for_different_levels(trained):
    """Each (window, level) is forecast on its own: a ragged request answers the same numbers."""
    model = load_logged(trained)
    history = histories(2, 200, seed=1)  # longer than 168: the last 168 hours are used
    request = pd.DataFrame({"unique_id": ["x", "y"], "history": list(history), "levels": [[0.5], [0.9, 0.1]]})
    out = model.predict(request)
    expected = reference_forecast(trained, history[:, -168:], LEVELS)
    tol = {"rtol": 1e-5, "atol": 1e-6 * np.abs(expected).max()}  # other batch shapes, other rounding
    x = out[out.unique_id == "x"]
    np.testing.assert_allclose(x["value"], expected[0, :, 1], **tol)
    y = out[out.unique_id == "y"]
    np.testing.assert_array_equal(y["level"].to_numpy()[:4], [0.9, 0.1, 0.9, 0.1])
    np.testing.assert_allclose(y["value"].to_numpy().reshape(48, 2), expected[1][:, [2, 0]], **tol)


def test_model_artifact_holds_weights_and_config_only(trained):
    client = MlflowClient(trained["uri"])
    with tracking_uri(trained["uri"]):
        local = Path(mlflow.artifacts.download_artifacts(f"runs:/{trained['run_id']}/model"))
    weights = torch.load(local / "artifacts" / "weights.pt", weights_only=True)
    assert set(weights) == set(build_model(trained["cfg"]).state_dict())  # no optimiser state
    assert "forecaster.sampler.bin_loss" not in weights and "sampler.bin_loss" in weights
    spec = ForecasterSpec.load(local / "artifacts" / "forecaster.yaml")
    assert spec == ForecasterSpec.from_config(trained["cfg"])
    model_info = mlflow.models.Model.load(local / "MLmodel")
    assert [c["name"] for c in model_info.signature.inputs.to_dict()] == ["unique_id", "history", "levels", "origin"]
    assert [c["name"] for c in model_info.signature.outputs.to_dict()] == ["unique_id", "step", "level", "value"]
    logged = client.search_logged_models(experiment_ids=[client.get_run(trained["run_id"]).info.experiment_id])
    assert [m.source_run_id for m in logged] == [trained["run_id"]]
    size = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
    print(f"logged model: {size / 1024:.0f} KiB")


@pytest.mark.parametrize(
    "history, levels, message",
    [
        (histories(1, 168)[0], [0.5, 1.0], "strictly between 0 and 1, got 1"),
        (histories(1, 168)[0], [0.0], "strictly between 0 and 1, got 0"),
        (histories(1, 100)[0], [0.5], "has 100 hours but the model needs 168"),
        (np.r_[histories(1, 167)[0], np.nan], [0.5], "1 missing (NaN)"),
    ],
)
def test_bad_requests_are_invalid_parameter_errors(trained, history, levels, message):
    model = load_logged(trained)
    request = pd.DataFrame({"unique_id": ["a"], "history": [history], "levels": [levels]})
    with pytest.raises(MlflowException, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        model.predict(request)
    assert err.value.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE)


def test_served_forecaster_raises_request_errors(trained):
    served = ServedForecaster.from_checkpoint(trained["checkpoint"], ForecasterSpec.from_config(trained["cfg"]))
    with pytest.raises(RequestError, match="levels must lie strictly between 0 and 1, got nan"):
        served.forecast(histories(1, 168), [np.nan])
    with pytest.raises(RequestError, match="history of series 'b' has 2 missing"):
        bad = histories(2, 168)
        bad[1, [3, 7]] = np.nan
        served.forecast(bad, [0.5], names=["a", "b"])
    np.testing.assert_allclose(served.forecast(histories(2, 168), LEVELS),
                               reference_forecast(trained, histories(2, 168), LEVELS), rtol=1e-6)


# ------------------------------------------------------------------ HTTP scoring server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_served_model_answers_http_on_loopback(trained):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained["uri"], "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"runs:/{trained['run_id']}/model",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_http(f"{base}/ping", server, 120, pause_s=0.25):
            pytest.fail("scoring server did not answer /ping within 120 s: "
                        + (server.stderr.read().decode()[-2000:] if server.poll() is not None else "still starting"))
        history = histories(2, 168, seed=3)
        records = [{"unique_id": f"s{i}", "history": history[i].tolist(), "levels": LEVELS} for i in range(2)]
        status, body = post(f"{base}/invocations", {"dataframe_records": records})
        assert status == 200, body
        got = np.array([row["value"] for row in body["predictions"]]).reshape(2, 48, 3)
        np.testing.assert_allclose(got, reference_forecast(trained, history, LEVELS), rtol=1e-6)
        records[0]["levels"] = [0.5, 1.5]
        status, body = post(f"{base}/invocations", {"dataframe_records": records})
        assert status == 400 and "strictly between 0 and 1, got 1.5" in body["message"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stderr.close()


# ------------------------------------------------------------------ anyq-predict
def write_series(path: Path, hours: int = 400, mhlv_dates: bool = True) -> pd.DataFrame:
    """Two hourly series; B ends 10 hours before A (each gets its own origin)."""
    index = pd.date_range("2018-03-01", periods=hours, freq="h")
    values = histories(2, hours, seed=7)
    frame = pd.concat([
        pd.DataFrame({"unique_id": "A", "ds": index, "y": values[0]}),
        pd.DataFrame({"unique_id": "B", "ds": index[:-10], "y": values[1, :-10]}),
    ], ignore_index=True)
    out = frame.assign(ds=frame.ds.dt.strftime("%d-%b-%Y %H:%M:%S" if mhlv_dates else "%Y-%m-%dT%H:%M:%S"))
    out.to_csv(path, index=False)
    return frame


def run_predict(*argv: str) -> None:
    predict_app.main(list(argv))


def test_predict_round_trips_a_csv(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    frame = write_series(tmp_path / "load.csv")
    out_csv = tmp_path / "forecast.csv"
    capsys.readouterr()
    run_predict("--run", trained["run_id"], "--tracking-uri", trained["uri"], "--input", str(tmp_path / "load.csv"),
                "--levels", "0.1,0.5,0.9", "--output", str(out_csv))
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"anyq-predict: wrote 288 rows (2 series x 48 hours x 3 levels) to {out_csv}")
    out = pd.read_csv(out_csv, parse_dates=["ds"])
    assert list(out.columns) == ["unique_id", "ds", "level", "value"]
    assert len(out) == 2 * 48 * 3
    a, b = (out[out.unique_id == k] for k in "AB")
    assert a.ds.iloc[0] == frame[frame.unique_id == "A"].ds.max() + pd.Timedelta(hours=1)
    assert b.ds.iloc[0] == frame[frame.unique_id == "B"].ds.max() + pd.Timedelta(hours=1)
    assert b.ds.iloc[-1] - b.ds.iloc[0] == pd.Timedelta(hours=47)
    last = np.stack([frame[frame.unique_id == k].y.to_numpy()[-168:] for k in "AB"])
    expected = reference_forecast(trained, last, LEVELS)
    np.testing.assert_allclose(out["value"].to_numpy().reshape(2, 48, 3), expected, rtol=1e-5)

    # the checkpoint and its run config give the same forecasts
    config = tmp_path / "config.yaml"
    OmegaConf.save(trained["cfg"], config)
    again = tmp_path / "again.csv"
    run_predict("--checkpoint", str(trained["checkpoint"]), "--config", str(config),
                "--input", str(tmp_path / "load.csv"), "--output", str(again))
    pd.testing.assert_frame_equal(pd.read_csv(again, parse_dates=["ds"]), out)

    # a shared origin: every series forecast from the same hour, history just before it
    run_predict("--checkpoint", str(trained["checkpoint"]), "--config", str(config), "--input",
                str(tmp_path / "load.csv"), "--origin", "2018-03-10 00:00", "--levels", "0.5", "--output", str(again))
    at = pd.read_csv(again, parse_dates=["ds"])
    assert set(at.groupby("unique_id").ds.min()) == {pd.Timestamp("2018-03-10 00:00")}
    start = (pd.Timestamp("2018-03-10") - pd.Timestamp("2018-03-01")) // pd.Timedelta(hours=1)
    before = np.stack([frame[frame.unique_id == k].y.to_numpy()[start - 168:start] for k in "AB"])
    np.testing.assert_allclose(at["value"].to_numpy().reshape(2, 48),
                               reference_forecast(trained, before, [0.5])[..., 0], rtol=1e-5)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--levels", "0.5,1.2"], "levels must lie strictly between 0 and 1, got 1.2"),
        (["--levels", "0.5,half"], "--levels '0.5,half': expected comma-separated numbers"),
        (["--origin", "2018-03-05 00:00"], "history of series 'A' is too short: 96 hour(s) before its forecast origin 2018-03-05 00:00, the model needs 168"),
        (["--gap"], "history of series 'B' has 1 missing (NaN) hour(s) in the 168 before its forecast origin"),
        (["--origin", "2030-01-01 00:00"], "--origin 2030-01-01 00:00 is after the last hour of series 'A', "),
        (["--half-hourly"], "load.csv: expected hourly data but detected a step of 0 days 00:30:00"),  # names the file
    ],
)
def test_predict_bad_requests_are_one_line(trained, tmp_path, capsys, extra, message):
    frame = write_series(tmp_path / "load.csv", mhlv_dates=False)
    if extra == ["--gap"]:
        frame = frame.drop(frame.index[(frame.unique_id == "B")][-5:-4])  # one hour missing near the end
        frame.to_csv(tmp_path / "load.csv", index=False)
        extra = []
    if extra == ["--half-hourly"]:
        half = frame[frame.unique_id == "A"].iloc[-2:].assign(ds=lambda f: f.ds + pd.Timedelta(minutes=30))
        pd.concat([frame, half]).to_csv(tmp_path / "load.csv", index=False)
        extra = []
    config = tmp_path / "config.yaml"
    OmegaConf.save(trained["cfg"], config)
    with pytest.raises(SystemExit) as exit_:
        run_predict("--checkpoint", str(trained["checkpoint"]), "--config", str(config),
                    "--input", str(tmp_path / "load.csv"), *extra)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("anyq-predict: error: ") and err.count("\n") == 1
    assert message in err, err


def test_predict_refuses_files_that_are_not_this_model(trained, tmp_path, capsys):
    write_series(tmp_path / "load.csv")
    config = tmp_path / "config.yaml"
    OmegaConf.save(trained["cfg"], config)
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    wider = trained["cfg"].copy()
    wider.model.backbone.layer_width = 2 * trained["cfg"].model.backbone.layer_width
    OmegaConf.save(wider, tmp_path / "wider.yaml")
    cases = [
        (["--checkpoint", str(not_a_checkpoint), "--config", str(config)], "is not a readable anyq-train checkpoint"),
        (["--checkpoint", str(trained["checkpoint"]), "--config", str(tmp_path / "wider.yaml")],
         "weights do not fit the adaptive_attention model of this config: size mismatch"),
        (["--run", trained["run_id"], "--tracking-uri", f"sqlite:///{tmp_path}/none/mlflow.db"], "no MLflow store at"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_:
            run_predict(*argv, "--input", str(tmp_path / "load.csv"))
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "none").exists()  # asking does not create a store


def test_the_served_spec_keeps_the_scaler_and_reads_an_old_spec_as_max_abs(compose_cfg):
    from omegaconf import open_dict

    cfg = compose_cfg("model=baseline_adaptive")
    with open_dict(cfg):
        cfg.model.scaler = "robust"
    spec = ForecasterSpec.from_config(cfg)
    assert spec.scaler == "robust"
    data = spec.to_dict()
    assert ForecasterSpec.from_dict(data).scaler == "robust"
    del data["model"]["scaler"]  # a spec written before model.scaler existed
    assert ForecasterSpec.from_dict(data).scaler == "max_abs"


def test_make_serve_checks_the_run_before_mlflow_starts_its_server(trained, tmp_path, capsys, monkeypatch):
    """``python -m anyq.serving.publish <run id>``, what ``make serve`` runs first: silent and
    exit 0 for a run with a logged model, else one line and exit 2."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    full = trained["run_id"]
    capsys.readouterr()
    publish_main([full])
    publish_main([full[:8]])  # the tables print 8 characters: a prefix names the run
    assert capsys.readouterr().out.split() == [full, full]
    client = MlflowClient(trained["uri"])
    experiment = client.create_experiment("no_model")
    no_model = client.create_run(experiment).info.run_id
    parent = client.create_run(experiment, tags={"role": "study", "study_name": "s"}).info.run_id
    for run_id, message in [
        ("0123456789abcdef", f"no run '0123456789abcdef' in {trained['uri']} (run ids: anyq-compare, or `make ui`)"),
        ("", f"no run '' in {trained['uri']} (run ids: anyq-compare, or `make ui`)"),
        (no_model, f"run {no_model} logged no model (a fast dev run, a run without a best checkpoint or one "
                   f"with tracking.log_model=false logs none)"),
        (parent[:10], f"run {parent} is the parent run of study 's', which logs no model; its runs do (the best "
                      f"one: anyq-report --study s)"),
    ]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            publish_main([run_id])
        assert exit_.value.code == 2
        assert capsys.readouterr().err == f"make serve: error: {message}\n"
    write_series(tmp_path / "load.csv")
    with pytest.raises(SystemExit) as exit_:  # anyq-predict checks the same way
        run_predict("--run", parent, "--tracking-uri", trained["uri"], "--input", str(tmp_path / "load.csv"))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"anyq-predict: error: run {parent} is the parent run of study 's'")
