"""Bad command lines, bad requests and mistyped stores: one line, a non-zero exit, nothing created.

- ``anyq-train`` overrides are checked before Hydra and the heavy libraries load
  (:mod:`anyq.app.overrides`);
- serving reads time stamps by the data's rule and run configs as one-line errors;
- the commands that only read open the store only where one exists
  (:func:`anyq.tracking.store.open_existing_store`).
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from anyq.app import compare as compare_app
from anyq.app import predict as predict_app
from anyq.app import report as report_app
from anyq.app import train
from anyq.app.overrides import check_command_line
from anyq.app.paths import config_dir
from anyq.errors import RequestError
from anyq.serving.bundle import CHECKPOINT_PREFIX, ForecasterSpec, ServedForecaster
from anyq.serving.frames import predict_frame
from conftest import ABLATION, TINY, compose_config


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def one_error_line(captured: str, command: str) -> str:
    lines = [line for line in captured.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: "), captured
    return lines[0]


# ------------------------------------------------------------------ anyq-train overrides
BAD_OVERRIDES = [
    (["model=adaptive_atention"],
     "override 'model=adaptive_atention': 'adaptive_atention' is not an option of model (did you mean "
     "adaptive_attention? options: adaptive_attention, baseline_adaptive, both_off, modulation_off, nbeats_aq, "
     "sampler_off)"),
    (["model=model_schema"], "override 'model=model_schema': 'model_schema' is not an option of model (options: "),
    (["model/sampler=adaptve"], "'adaptve' is not an option of model/sampler (did you mean adaptive?"),
    (["model.attention.n_head=4"],
     "override 'model.attention.n_head=4': no key 'n_head' in model.attention; did you mean model.attention.n_heads?"),
    (["+model.attention.n_head=4"], "no key 'n_head' in model.attention; did you mean model.attention.n_heads?"),
    (["+foo=bar"], "override '+foo=bar': no key 'foo'; the schema declares every key at the top, so '+' cannot "
                   "add one here"),
    (["+model.attention.foo=1"], "override '+model.attention.foo=1': no key 'foo' in model.attention; the schema "
                                 "declares every key in model.attention, so '+' cannot add one here"),
    (["experimnet=cpu_demo"], "override 'experimnet=cpu_demo': no key 'experimnet'; did you mean experiment?"),
    (["model/attenton=plain"], "no config group 'model/attenton'; did you mean model/attention?"),
    (["resume=outputs/x/best-epoch=07.ckpt"],
     "override 'resume=outputs/x/best-epoch=07.ckpt' cannot be parsed (mismatched input '=' expecting <EOF>); "
     """quote the value: 'resume="outputs/x/best-epoch=07.ckpt"'"""),
    (["model.attention.n_heads=eight"], "Value 'eight' of type 'str' could not be converted to Integer"),
    (["task=fit"], "override 'task=fit': Invalid value 'fit', expected one of [train, test]"),
    (["model.attention=plain"], "to choose a config of group model/attention, write model/attention=plain"),
    (["seed=0,1"], "override 'seed=0,1' is a sweep over several values: add -m to run each"),
    (["+seed=3"], "override '+seed=3': seed is already in the config; set it without the '+'"),
    (["seed.value=3"], "override 'seed.value=3': seed is a value, not a section"),
    (["-m", "model=baseline_adaptive,adaptve_attention"], "'adaptve_attention' is not an option of model"),
    (["-m", "model.attention.n_heads=choice(2,four)"], "Value 'four' of type 'str' could not be converted"),
    (["-m", "sweep=adaptive_attention", "hydra.sweeper.params.model.attention.n_head=choice(2,4)"],
     "override 'hydra.sweeper.params.model.attention.n_head=choice(2,4)': search space: no key 'n_head' in "
     "model.attention; did you mean model.attention.n_heads?"),
    (["-m", "ablation=variants", "hydra.sweeper.params.model=baseline_adaptive,adaptive_attention"],
     "override 'hydra.sweeper.params.model=baseline_adaptive,adaptive_attention': a search-space entry is one "
     """string the sweeper reads; quote the value: 'hydra.sweeper.params.model="baseline_adaptive,adaptive_attention"'"""),
    (["-m", "ablation=variants", 'hydra.sweeper.params.model="baseline_adaptive,adaptve_attention"'],
     "search space: 'adaptve_attention' is not an option of model (did you mean adaptive_attention?"),
    (["-m", "sweep=adaptive_attention", "hydra.sweeper.params=null", "model.attention.n_heads=choice(3,5)"],
     "search space: no trial could run: none of its 2 combinations of every choice and both ends of every range is "
     "a valid config; model.attention.d_model=32 is not divisible by model.attention.n_heads=3"),
    (["-m", "sweep=adaptive_attention", "hydra.sweeper.params=null", "model.attention.n_heads=choice(3,5)",
      "model.backbone.dropout=interval(1.0,1.5)"],
     "search space: no trial could run: none of its 4 combinations"),
    # Hydra's own settings: composed with Hydra's compose API, the same one line
    (["-m", "sweep=adaptive_attention", "hydra/sweeper/sampler=tpee"],
     "override 'hydra/sweeper/sampler=tpee': 'tpee' is not an option of hydra/sweeper/sampler (did you mean tpe?"),
    (["-m", "sweep=adaptive_attention", "hydra/sweeper/pruner=mediann"],
     "'mediann' is not an option of hydra/sweeper/pruner (did you mean median?"),
    (["-m", "sweep=adaptive_attention", "hydra/launcher=jobliib"],
     "'jobliib' is not an option of hydra/launcher (did you mean joblib?"),
    (["-m", "sweep=adaptive_attention", "hydra.sweeper.n_trial=3"],
     "override 'hydra.sweeper.n_trial=3': no key 'n_trial' in hydra.sweeper; did you mean hydra.sweeper.n_trials?"),
    (["hydra.sweeper.n_trials=3", "-m", "sweep=adaptive_attention"],
     "-m goes before the overrides: -m hydra.sweeper.n_trials=3 sweep=adaptive_attention"),
    (["seed=1", "--multirun", "model=nbeats_aq,baseline_adaptive"],
     "--multirun goes before the overrides: --multirun seed=1 model=nbeats_aq,baseline_adaptive"),
    (["hydra.job.chdirr=true"], "no key 'chdirr' in hydra.job; did you mean hydra.job.chdir?"),
    (["-m", "sweep=pareto", "hydra.sweeper.n_trials=abc"],
     "override 'hydra.sweeper.n_trials=abc' does not compose: Error merging override hydra.sweeper.n_trials=abc"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_OVERRIDES)
def test_bad_override_is_one_line_before_anything_is_created(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["anyq-train", *argv, f"paths.root={tmp_path}"])
    with pytest.raises(SystemExit) as exit_:
        train.cli()
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err, "anyq-train")
    assert message in line, line
    assert "model_schema" not in line.split("(options:")[-1]  # the schema's node is never offered
    assert files_under(tmp_path) == []  # no outputs/, no mlruns/, no log


@pytest.mark.parametrize("value", ["outputs/x/best-epoch=07.ckpt", 'a "b" c=d'])
def test_through_make_the_quoting_hint_is_the_args_that_reach_the_app_quoted(tmp_path, capsys, monkeypatch, value):
    """``make run ARGS=...``: the recipe's shell removes one level of quotes, so the hint gives
    ARGS="..." as typed at the user's shell; followed as printed (the user's shell, then the
    value pasted into the recipe's command line), the app gets the quoted override."""
    monkeypatch.setenv("ANYQ_ARGS_FROM_MAKE", "1")
    monkeypatch.setattr(sys, "argv", ["anyq-train", f"resume={value}", f"paths.root={tmp_path}"])
    with pytest.raises(SystemExit):
        train.cli()
    line = one_error_line(capsys.readouterr().err, "anyq-train")
    hint = line.split("quote the value, once for make's shell too: ", 1)[1]
    assert hint.startswith('ARGS="')
    typed = subprocess.run(["bash", "-c", f'{hint}; printf %s "$ARGS"'], capture_output=True, text=True).stdout
    argv = subprocess.run(["bash", "-c", f"printf '%s\\n' {typed}"], capture_output=True, text=True).stdout
    assert argv.splitlines() == [f"resume='{value}'" if '"' in value else f'resume="{value}"']
    monkeypatch.delenv("ANYQ_ARGS_FROM_MAKE")
    with pytest.raises(SystemExit):
        train.cli()
    plain = f"""quote the value: "resume='{value}'\"""" if '"' in value else f"""quote the value: 'resume="{value}"'"""
    assert one_error_line(capsys.readouterr().err, "anyq-train").endswith(plain)  # at a shell of one's own


HEAVY = ("torch", "lightning", "pytorch_lightning", "mlflow", "pandas")


def cli_loading(tmp_path, argv: list[str], modules=HEAVY) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``anyq-train argv`` in a fresh interpreter; which of ``modules`` it loaded (the last stdout line)."""
    code = (
        "import sys\n"
        "from anyq.app import train\n"
        f"sys.argv = ['anyq-train', *{argv!r}]\n"
        "try:\n"
        "    train.cli()\n"
        "finally:\n"
        f"    print(sorted(m for m in {tuple(modules)!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    return done, ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_bad_override_stops_before_torch_lightning_and_mlflow_load(tmp_path):
    done, loaded = cli_loading(tmp_path, ["model.attention.n_head=4", f"paths.root={tmp_path}"], (*HEAVY, "optuna"))
    assert done.returncode == 2, done.stderr
    assert loaded == []
    assert one_error_line(done.stderr, "anyq-train").endswith("did you mean model.attention.n_heads?")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("argv, shows", [(["--help"], "== Config groups (group=option) =="), (["--cfg", "job"], "horizon_length:")])
def test_help_and_cfg_load_no_torch_lightning_or_mlflow(tmp_path, argv, shows):
    """Hydra scans every plugin module (anyq's sweepers and launchers) before it prints help or
    a composed config: their heavy imports wait for a sweep."""
    done, loaded = cli_loading(tmp_path, argv)
    assert done.returncode == 0, done.stderr
    assert shows in done.stdout
    assert loaded == []


@pytest.mark.parametrize("argv, line", [
    (["optim.lr=nan"], "optim.lr=nan must be a finite number > 0"),
    (["model.attention.n_heads=3"], "model.attention.d_model=32 is not divisible by model.attention.n_heads=3"),
    (["evaluation.num_levels=9"], "evaluation.coverage=0.9 needs level 0.05, outside the grid of "
                                  "evaluation.num_levels=9 (0.1..0.9)"),
])
def test_a_bad_setting_is_refused_without_loading_torch_lightning_or_mlflow(tmp_path, argv, line):
    """The one validation pass (anyq.training.validation) runs before the job's pipeline is
    imported: a range or combination error costs no torch import."""
    done, loaded = cli_loading(tmp_path, [*argv, f"paths.root={tmp_path}"], modules=HEAVY[:4])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"anyq-train: error: {line}"]
    assert loaded == []


@pytest.mark.parametrize("command, call, line", [
    ("anyq-report", "from anyq.app import report; report.main(['tinny', '--tracking-uri', URI])",
     "anyq-report: error: no study parent run for study 'tinny' in the store (did you mean tiny? train a study "
     "first: a sweep, `make sweep`, or an ablation, `make ablate`)"),
    ("anyq-confirm", "from anyq.app import confirm; confirm.main(['tinny', 'paths.root=' + ROOT])",
     "anyq-confirm: error: no study parent run for study 'tinny' in the store (did you mean tiny? train a sweep "
     "first, `make sweep`)"),
])
def test_a_mistyped_study_is_refused_before_torch_loads(tmp_path, command, call, line):
    """anyq-report and anyq-confirm look the study up (MLflow only) before they load the
    comparison or the confirm study's training (torch, Lightning)."""
    (tmp_path / "mlruns").mkdir()
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("tiny", artifact_location=(tmp_path / "mlruns" / "a").as_uri())
    client.create_run(experiment, tags={"role": "study", "study_name": "tiny", "optuna.storage": "sqlite://"})
    code = (f"import sys\nURI, ROOT = {uri!r}, {str(tmp_path)!r}\nsys.argv = [{command!r}]\ntry:\n    {call}\n"
            f"finally:\n    print(sorted(m for m in {HEAVY[:3]!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == line
    assert ast.literal_eval(done.stdout.strip().splitlines()[-1]) == []


GOOD_COMMAND_LINES = [
    TINY,
    ABLATION,
    ["-m", "experiment=cpu_demo", "study=main", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ["-m", "sweep=adaptive_attention", "hydra.sweeper.n_trials=40", "optim.lr=tag(log, interval(1e-4, 1e-2))"],
    ["-m", "sweep=adaptive_attention", "hydra.sweeper.params=null", "model.attention.n_heads=choice(2,4)"],
    ["-m", "model=baseline_adaptive,adaptive_attention", "seed=0,1,2"],
    ["hydra.mode=MULTIRUN", "seed=0,1"],
    ["-m", "sweep=adaptive_attention", "trainer.max_epochs=2", *TINY, "hydra.sweeper.params=null",  # the sweep tests'
     "model.attention.adaptive_temp=interval(0.0, 2.0)", "model.attention.n_heads=choice(1, 2)",
     "hydra.sweeper.sampler.n_startup_trials=2", "hydra.sweeper.pruner=null", "hydra.sweeper.n_trials=5"],
    ["-m", "sweep=adaptive_attention", "seed=range(0,5)", "hydra/sweeper/sampler=random", "~hydra.sweeper.pruner"],
    ["confirm.study=adaptive_attention", "confirm.seeds=5", "trainer.max_epochs=20"],
    ["data=csv", "data.path=/tmp/load.csv", "data.split.kind=dates", "data.split.train_end=2016-12-31 23:00",
     "data.split.val_end=2017-12-31 23:00", "data.split.test_end=2018-12-31 23:00"],
    ["task=test", """resume="outputs/x/best-epoch=07.ckpt\"""", "trainer=gpu", "++seed=3"],
    ["+experiment=cpu_demo", "tracking.tags.note=hello", "data.calendar.countries.a=DE", "model=nbeats_aq",
     "model/attention=plain", "data.split.proportions=[0.7,0.15,0.15]", "trainer.max_epochs=null"],
    ["-m", "sweep=adaptive_attention", "hydra.sweeper.params.model.attention.n_heads=choice(2,4)",
     "+hydra.sweeper.params.trainer.max_epochs=choice(1,2)", "hydra.sweeper.params.seed=range(0,3)"],
    ["--cfg", "job", "model.attention.n_heads=4"],
    ["--help"],
]


@pytest.mark.parametrize("argv", GOOD_COMMAND_LINES, ids=lambda argv: " ".join(argv)[:60])
def test_documented_command_lines_pass_the_check(argv):
    check_command_line(argv, config_dir())  # raises OverrideError if too strict


def test_a_sweep_command_line_still_runs_through_cli(tmp_path):
    """``-m`` with sweep syntax goes through the check to Hydra's multirun: two fast dev runs."""
    cmd = [sys.executable, "-m", "anyq.app.train", "-m", *TINY, "trainer.fast_dev_run=true", "tracking=none",
           "seed=0,1", f"paths.root={tmp_path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(tmp_path.glob("multirun/*/*/[01]/.hydra/overrides.yaml"))) == 2


# ------------------------------------------------------------------ anyq-predict and serving
@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A checkpoint in anyq-train's layout (untrained weights: forecasts need only be
    deterministic) with its run config, and a two-series long-format file in UTC."""
    root = tmp_path_factory.mktemp("predict")
    cfg = compose_config(root, ["data.synthetic.gaps=false"])
    torch.manual_seed(0)
    spec = ForecasterSpec.from_config(cfg)
    state = {CHECKPOINT_PREFIX + k: v for k, v in spec.build().state_dict().items()}
    checkpoint = root / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": state}, checkpoint)
    config = root / "config.yaml"
    OmegaConf.save(cfg, config)
    index = pd.date_range("2021-02-01", periods=24 * 30, freq="h")
    rng = np.random.default_rng(0)
    frame = pd.concat([pd.DataFrame({"unique_id": sid, "ds": index.strftime("%Y-%m-%d %H:%M:%S"),
                                     "y": 1000 + 100 * np.sin(np.arange(len(index)) / 4) + rng.normal(0, 5, len(index))})
                       for sid in ("A", "B")])
    data = root / "load.csv"
    frame.to_csv(data, index=False)
    return {"checkpoint": checkpoint, "config": config, "data": data, "cfg": cfg}


def predicted(untrained, out: Path, *extra: str) -> pd.DataFrame:
    predict_app.main(["--checkpoint", str(untrained["checkpoint"]), "--config", str(untrained["config"]),
                      "--input", str(untrained["data"]), "--output", str(out), *extra])
    return pd.read_csv(out, parse_dates=["ds"])


def test_origin_with_a_time_zone_is_converted_to_utc_like_the_data(untrained, tmp_path):
    naive = predicted(untrained, tmp_path / "naive.csv", "--origin", "2021-02-20 00:00")
    assert naive.ds.min() == pd.Timestamp("2021-02-20 00:00")
    for origin in ("2021-02-20T00:00Z", "2021-02-20T01:00+01:00", "2021-02-19 19:00-05:00"):
        zoned = predicted(untrained, tmp_path / "zoned.csv", "--origin", origin)
        pd.testing.assert_frame_equal(zoned, naive)  # the same UTC hour, the same forecasts


@pytest.mark.parametrize(("origin", "message"), [
    ("next tuesday", "--origin 'next tuesday' is not a date (expected ISO 8601"),
    ("2021-02-20T00:30Z", "is not on the panel's hourly grid"),
])
def test_bad_origin_is_one_line(untrained, tmp_path, capsys, origin, message):
    with pytest.raises(SystemExit) as exit_:
        predicted(untrained, tmp_path / "out.csv", "--origin", origin)
    assert exit_.value.code == 2
    assert message in one_error_line(capsys.readouterr().err, "anyq-predict")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("model:\n  backbone: {num_blocks: 2\ndata: [", "is not readable YAML: "),
    ("model: [1, 2\n", "is not readable YAML: expected ',' or ']', but got '<stream end>' (line 2, column 1)"),
    ("- just\n- a list\n", "does not describe an anyq model"),
    ("data:\n  history_length: 168\n", "does not describe an anyq model"),
    ("\x00\x01\x02", "is not readable YAML"),
])
def test_unreadable_run_config_is_one_line(untrained, tmp_path, capsys, text, message):
    config = tmp_path / "broken.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        predict_app.main(["--checkpoint", str(untrained["checkpoint"]), "--config", str(config),
                          "--input", str(untrained["data"]), "--output", str(tmp_path / "out.csv")])
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err, "anyq-predict")
    assert f"run config {config} " in line and message in line, line


def test_served_origins_with_offsets_are_utc_and_mixed_ones_refused(tmp_path):
    """A request's origin column follows the same rule (a calendar model reads it)."""
    cfg = compose_config(tmp_path, ["data.calendar.enabled=true", "data.calendar.holidays=country",
                                    "data.calendar.country=DE"])
    torch.manual_seed(0)
    spec = ForecasterSpec.from_config(cfg)
    model = spec.build()
    with torch.no_grad():  # the calendar must matter, or any origin would do
        model.backbone.calendar.weight.normal_(0, 1.0)
    served = ServedForecaster(spec, model.state_dict())
    history = (1000 + 100 * np.sin(np.arange(spec.history_length) / 4)).tolist()

    def request(*origins: str) -> pd.DataFrame:
        return pd.DataFrame({"unique_id": ["a"] * len(origins), "history": [history] * len(origins),
                             "levels": [[0.1, 0.5, 0.9]] * len(origins), "origin": list(origins)})

    naive = predict_frame(served, request("2016-12-24 05:00"))
    for origin in ("2016-12-24T05:00Z", "2016-12-24 06:00+01:00"):
        pd.testing.assert_frame_equal(predict_frame(served, request(origin)), naive)
    assert not np.allclose(predict_frame(served, request("2016-12-27 05:00")).value, naive.value)
    with pytest.raises(RequestError, match="column 'origin' mixes stamps with and without a UTC offset"):
        predict_frame(served, request("2016-12-24T05:00Z", "2016-12-24 05:00"))
    with pytest.raises(RequestError, match="column 'origin' has unparseable dates"):
        predict_frame(served, request("soon"))


# ------------------------------------------------------------------ reading creates no store
def test_report_and_compare_on_a_mistyped_store_create_nothing(tmp_path, capsys, monkeypatch):
    typo = tmp_path / "mlrun" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{typo}")
    with pytest.raises(SystemExit) as exit_:
        report_app.main([])
    assert exit_.value.code == 2
    assert one_error_line(capsys.readouterr().err, "anyq-report") == (
        f"anyq-report: error: no MLflow store at {typo}: nothing to read there, nothing created "
        f"(a mistyped tracking URI or project root?)")
    with pytest.raises(SystemExit) as exit_:
        report_app.main(["--view-only"])
    assert exit_.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        compare_app.main(["--experiment", "main"])
    assert exit_.value.code == 2
    assert one_error_line(capsys.readouterr().err, "anyq-compare").startswith(f"anyq-compare: error: no MLflow store at {typo}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "file-store"))  # a file store's folder
    with pytest.raises(SystemExit) as exit_:
        report_app.main(["main"])
    assert exit_.value.code == 2
    assert f"no MLflow store at {tmp_path / 'file-store'}" in capsys.readouterr().err
    assert files_under(tmp_path) == []


def test_report_on_a_mistyped_scheme_or_a_server_that_does_not_answer_is_one_line(tmp_path, capsys):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cases = [
        (f"sqlit:///{tmp_path / 'mlflow.db'}", f"anyq-report: error: tracking URI sqlit:///{tmp_path / 'mlflow.db'}: "
                                               "'sqlit' is not a kind of MLflow store (did you mean sqlite?); one of "),
        (f"http://127.0.0.1:{port}", f"anyq-report: error: no MLflow server answers at http://127.0.0.1:{port} ("),
    ]
    for uri, line in cases:
        with pytest.raises(SystemExit) as exit_:
            report_app.main(["--tracking-uri", uri])
        assert exit_.value.code == 2
        assert one_error_line(capsys.readouterr().err, "anyq-report").startswith(line)
    assert files_under(tmp_path) == []


def test_report_under_a_mistyped_project_root_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ANYQ_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(SystemExit) as exit_:
        report_app.main(["--study", "main"])
    assert exit_.value.code == 2
    assert f"no MLflow store at {tmp_path / 'elsewhere' / 'mlruns' / 'mlflow.db'}" in capsys.readouterr().err
    assert files_under(tmp_path) == []


def test_confirm_in_a_mistyped_root_names_the_missing_store(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "typo"
    monkeypatch.setattr(sys, "argv", ["anyq-train", "confirm.study=adaptive_attention", f"paths.root={root}"])
    with pytest.raises(SystemExit) as exit_:
        train.cli()
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err, "anyq-train")
    assert line == (f"anyq-train: error: no MLflow store at {root / 'mlruns' / 'mlflow.db'}: nothing to read "
                    f"there, nothing created (a mistyped tracking URI or project root?)")
    assert not root.exists()


def test_hydra_offers_only_the_files_of_a_group_never_its_schema():
    """The schema is registered outside the groups, so Hydra's own listing (``--help``, its
    errors) holds only the files of ``conf/`` as the check does."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from anyq.app.overrides import config_groups

    groups = config_groups(str(Path(config_dir()).resolve()))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            for group in ("data", "model", "model/attention", "model/backbone", "model/sampler", "optim",
                          "paths", "tracking", "trainer"):
                assert loader.get_group_options(group) == list(groups[group]), group
                assert not any(option.endswith("_schema") for option in groups[group])
    finally:
        GlobalHydra.instance().clear()


def test_ui_check_on_a_mistyped_store_creates_nothing(tmp_path, capsys):
    from anyq.app import ui_check

    typo = tmp_path / "mlrun" / "mlflow.db"
    with pytest.raises(SystemExit) as exit_:
        ui_check.main(["--tracking-uri", f"sqlite:///{typo}", "--out", str(tmp_path / "shot.png")])
    assert exit_.value.code == 2
    assert f"no MLflow store at {typo}" in one_error_line(capsys.readouterr().err, "ui_check")
    assert files_under(tmp_path) == []


def test_local_store_path_of_each_kind_of_uri(tmp_path):
    from anyq.errors import StoreNotFoundError
    from anyq.tracking.store import local_store_path, open_existing_store

    assert local_store_path(f"sqlite:///{tmp_path}/m.db") == tmp_path / "m.db"
    assert local_store_path("sqlite:///mlruns/mlflow.db") == Path("mlruns/mlflow.db")  # relative
    assert local_store_path(f"file://{tmp_path}/mlruns") == tmp_path / "mlruns"
    assert local_store_path(str(tmp_path / "mlruns")) == tmp_path / "mlruns"
    assert local_store_path("http://127.0.0.1:5000") is None
    assert local_store_path("postgresql://u@localhost/mlflow") is None
    with pytest.raises(StoreNotFoundError, match="no MLflow store at"):
        open_existing_store(f"file://{tmp_path}/mlruns")
    (tmp_path / "m.db").mkdir()  # a folder where the SQLite file should be is no store either
    with pytest.raises(StoreNotFoundError):
        open_existing_store(f"sqlite:///{tmp_path}/m.db")
    assert files_under(tmp_path) == ["m.db"]
