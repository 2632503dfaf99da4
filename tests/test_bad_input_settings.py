"""Settings that cannot work stop ``anyq-train`` in one line, exit 2, before any data is read
or any run, study or parent run is opened; a study in which nothing finished fails.

Every numeric setting declares its range in the schema (:mod:`anyq.settings`), and one pass
(:func:`anyq.training.validation.validate_config`) checks them all, with the split dates and the
device; sweeps and grids check the settings their trials share once, before launching.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from anyq.app import job as job_module
from anyq.app import train
from anyq.errors import ConfigError, StudyFailed, SweepRefused
from anyq.settings import declared_range
from anyq.sweeping.engine import SweepSettings
from anyq.sweeping.shared import check_shared
from anyq.training.validation import validate_config
from anyq.training.schema import AppConfig
from conftest import ABLATION, TINY, run_cli
from scale_helpers import REPO, clean_env, study_runs, study_trials

SWEEP = ["-m", "sweep=adaptive_attention", "trainer.max_epochs=1", *TINY, "hydra.sweeper.pruner=null",
         "hydra.sweeper.params=null", "model.attention.adaptive_temp=interval(0.0, 2.0)"]
DATES = ["data.split.kind=dates", "data.split.val_end=2015-09-30", "data.split.test_end=2015-12-31"]
NO_GPU = not (torch.cuda.is_available() or torch.backends.mps.is_available())

# (overrides, the one line anyq-train prints after "anyq-train: error: ")
SINGLE_RUN_CASES = [
    (["data.train_step=0"], "data.train_step=0 must be >= 1"),
    (["data.eval_step=12"], "data.eval_step=12 must be a multiple of 24: validation and test windows are all "
                            "issued at data.origin_hour=0"),
    (["data.origin_hour=24"], "data.origin_hour=24 must be in [0, 23]"),
    (["model=adaptive_attention", "model.attention.adaptive_temp=nan"],
     "model.attention.adaptive_temp=nan must be a finite number >= 0"),
    (["model=adaptive_attention", "model.attention.adaptive_temp=inf"],
     "model.attention.adaptive_temp=inf must be a finite number >= 0"),
    (["optim.lr=-0.001"], "optim.lr=-0.001 must be > 0"),
    (["optim.lr=nan"], "optim.lr=nan must be a finite number > 0"),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1.0 must be >= 0"),
    (["data.split.train_end=2015-02-30", *DATES],
     "data.split.train_end=2015-02-30: '2015-02-30' is not a date (day is out of range for month: 2015-02-30)"),
    (["data.split.train_end=2015-10-31", *DATES],
     "data.split.val_end=2015-09-30 must come after data.split.train_end=2015-10-31"),
    (["data.split.train_end=2015-02-30"],  # without kind=dates the proportions split would ignore it
     "data.split.train_end=2015-02-30: split dates are read only with data.split.kind=dates (now proportions, "
     "which splits by data.split.proportions); add data.split.kind=dates"),
    (["data.split.val_end=2015-09-30", "data.split.test_end=2015-12-31"],
     "data.split.val_end=2015-09-30, data.split.test_end=2015-12-31: split dates are read only with "
     "data.split.kind=dates (now proportions, which splits by data.split.proportions); add data.split.kind=dates"),
    (["trainer.max_epochs=null", "trainer.max_steps=1000", "trainer.val_check_interval=300"],
     "trainer.max_steps=1000 x accumulate_grad_batches=1 batches is not a multiple of trainer.val_check_interval=300: "
     "the last steps would never be validated (trainer.val_check_interval=250 fits)"),
    (["data.calendar.holidays=none", "data.calendar.holiday_history=week_before"],
     "data.calendar.holiday_history=week_before needs a holiday calendar: set data.calendar.country (or "
     "countries), or holidays=synthetic on synthetic data"),
    (["data.calendar.holiday_history=weekly"], "data.calendar.holiday_history='weekly' is not one of auto, keep, week_before"),
    (["evaluation.val_num_levels=19"], "evaluation.coverage=0.95 needs level 0.025, outside the grid of "
                                       "evaluation.val_num_levels=19 (0.05..0.95)"),
    (["trainer.accelerator=gpus"], "trainer.accelerator='gpus' is not one of auto, cpu, gpu, cuda, mps, tpu"),
    (["trainer.devices=0"], "trainer.devices=0 must be auto, a count >= 1 (or -1: all), or a list of device indices"),
    (["trainer.devices=-2"], "trainer.devices=-2 must be auto, a count >= 1 (or -1: all), or a list of device indices"),
    (["trainer.devices=[]"], "trainer.devices=[] must be auto, a count >= 1 (or -1: all), or a list of device indices"),
    (["trainer.precision=bogus"], "trainer.precision='bogus' is not a precision Lightning knows (one of 32-true, "
                                  "16-mixed, bf16-mixed, 16-true, bf16-true, 64-true)"),
    (["trainer.precision=16-mixd"], "trainer.precision='16-mixd' is not a precision Lightning knows (did you mean "
                                    "16-mixed? one of 32-true, 16-mixed, bf16-mixed, 16-true, bf16-true, 64-true)"),
    pytest.param(["trainer=gpu"], "trainer.accelerator=gpu: this machine has no gpu that torch can use; "
                                  "train on the CPU with trainer=cpu",
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("anyq-train: error:")]


@pytest.fixture
def no_data_read(monkeypatch):
    """Fails the test if a job reads its data (the check must come first)."""
    read = []
    monkeypatch.setattr(job_module, "load_dataset", lambda data: read.append(data) or pytest.fail("data read"))
    return read


@pytest.mark.parametrize(("overrides", "line"), SINGLE_RUN_CASES)
def test_a_setting_out_of_range_is_one_line_exit_2_before_data_or_runs(tmp_path, capsys, no_data_read,
                                                                        overrides, line):
    with pytest.raises(SystemExit) as caught:
        run_cli(tmp_path, *overrides)
    assert caught.value.code == 2
    assert error_lines(capsys.readouterr().err) == [f"anyq-train: error: {line}"]
    assert no_data_read == []
    assert not (tmp_path / "mlruns").exists()  # no MLflow store, no run


def test_the_console_script_prints_only_the_line_and_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "anyq.app.train", *TINY, f"paths.root={tmp_path}", "optim.lr=nan"],
                          env=clean_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["anyq-train: error: optim.lr=nan must be a finite number > 0"]
    assert not (tmp_path / "mlruns").exists()


# ------------------------------------------------ every declared knob, not only the listed ones
def numeric_settings(cls: type = AppConfig, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(dotted key, field, type)`` of every number (int, float, list of floats, Any) in the schema."""
    found = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        inner = args[0] if typing.get_origin(kind) in (typing.Union, list) and len(args) == 1 else kind
        if is_dataclass(inner):
            found += numeric_settings(inner, f"{prefix}{f.name}.")
        elif inner in (int, float, typing.Any) and kind is not bool:
            found.append((f"{prefix}{f.name}", f, inner))
    return found


def test_every_numeric_setting_declares_its_range():
    undeclared = [key for key, f, _ in numeric_settings() if declared_range(f) is None and key not in
                  ("trainer.devices",)]  # devices: a count, a list or "auto", checked against the machine
    assert undeclared == []
    assert len(numeric_settings()) > 50  # the walk reaches the nested groups (model.attention.*, ...)


def outside(bounds, kind) -> float:
    """A value just outside the declared bounds."""
    if bounds.ge is not None:
        return bounds.ge - 1 if kind is int else bounds.ge - 0.5
    if bounds.gt is not None:
        return bounds.gt if kind is not int else bounds.gt - 1
    return (bounds.le + 1) if bounds.le is not None else bounds.lt


@pytest.mark.parametrize("key", [key for key, f, kind in numeric_settings() if declared_range(f) is not None])
def test_every_declared_range_is_enforced_naming_its_key(compose_cfg, key):
    cfg = compose_cfg("model=adaptive_attention")
    f, kind = next((f, kind) for k, f, kind in numeric_settings() if k == key)
    bad = outside(declared_range(f), kind)
    values = [bad] if kind is not float else [bad, math.nan, math.inf, -math.inf]
    for value in values:
        probe = copy.deepcopy(cfg)
        current = OmegaConf.select(probe, key)
        OmegaConf.update(probe, key, [value] if OmegaConf.is_list(current) else value, force_add=True)
        with pytest.raises(ConfigError) as caught:
            validate_config(probe)
        assert str(caught.value).startswith(f"{key}=") and key in caught.value.keys, (key, value, caught.value)


def test_sweeper_numbers_are_declared_and_n_trials_below_1_is_refused():
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.n_trials=0 must be >= 1$"):
        SweepSettings(study_name="s", storage_url="sqlite://", directions=["minimize"], objectives=["val/crps"],
                      n_trials=0)


# ------------------------------------------------------------- studies: refused before they start
def refused(root: Path, *argv: str) -> str:
    with pytest.raises(SweepRefused) as caught:
        run_cli(root, *argv)
    message = str(caught.value.error)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("n_trials", ["0", "-1"])
def test_a_sweep_of_no_trials_is_refused(tmp_path, n_trials):
    assert refused(tmp_path, *SWEEP, f"hydra.sweeper.n_trials={n_trials}") == \
        f"hydra.sweeper.n_trials={n_trials} must be >= 1"
    assert not (tmp_path / "mlruns").exists()  # no study, no parent run


def test_a_sweep_over_a_missing_data_file_is_refused_before_its_study(tmp_path, no_data_read):
    missing = tmp_path / "laod.csv"
    assert refused(tmp_path, *SWEEP, "data=csv", f"data.path={missing}", "hydra.sweeper.n_trials=3") == \
        f"data.path={missing}: data file not found"
    assert not (tmp_path / "mlruns").exists()


def test_an_ablation_whose_budget_cannot_be_validated_is_refused_before_its_parent(tmp_path, no_data_read):
    message = refused(tmp_path, *ABLATION, 'hydra.sweeper.params.seed="0,1"', "trainer.max_epochs=null",
                      "trainer.max_steps=100", "trainer.val_check_interval=200")
    assert message == ("trainer.max_steps=100 x accumulate_grad_batches=1 batches is not a multiple of "
                       "trainer.val_check_interval=200: the last steps would never be validated "
                       "(trainer.val_check_interval=100 fits)")
    assert not (tmp_path / "mlruns").exists()


def test_a_refused_ablation_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["anyq-train", *ABLATION, "trainer.max_epochs=null", "trainer.max_steps=100",
                                      "trainer.val_check_interval=200", f"paths.root={tmp_path}"])
    with pytest.raises(SystemExit) as caught:
        train.cli()
    assert caught.value.code == 2
    assert error_lines(capsys.readouterr().err) == [
        "anyq-train: error: trainer.max_steps=100 x accumulate_grad_batches=1 batches is not a multiple of "
        "trainer.val_check_interval=200: the last steps would never be validated "
        "(trainer.val_check_interval=100 fits)"]


def test_only_settings_no_trial_changes_refuse_a_study(compose_cfg):
    bad_heads = compose_cfg("model=adaptive_attention", "model.attention.n_heads=3")  # d_model=16
    check_shared([bad_heads], ["model.attention.n_heads"], here=True)  # a trial's own business
    with pytest.raises(ConfigError, match="d_model=16 is not divisible"):
        check_shared([bad_heads], ["model.attention.adaptive_temp"], here=True)
    bad_lr = compose_cfg("model=adaptive_attention", "optim.lr=0")
    check_shared([bad_lr], ["optim"], here=True)  # a searched group covers its keys
    with pytest.raises(ConfigError, match="optim.lr=0.0 must be > 0"):
        check_shared([bad_lr], ["model"], here=True)


# ------------------------------------------------------------ studies in which nothing finished
def broken_csv(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "load.csv"
    path.write_text("unique_id,ds,y\na,2021-01-01 00:00,1\na,2021-01-01 01:00,inf\n")
    return path


#: Data that reads, with a history no training window of it can hold: every job fails on it.
NO_WINDOW = "data.history_length=7992"


def sweep_cli(tmp_path: Path, capsys, monkeypatch, *argv: str) -> tuple[int, str, str]:
    """``anyq-train`` on ``argv`` (a sweep): exit status, stdout, and its one error line."""
    monkeypatch.setattr(sys, "argv", ["anyq-train", *argv, f"paths.root={tmp_path}"])
    try:
        train.cli()
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    return code, captured.out, lines[0] if len(lines) == 1 else "\n".join(lines)


def test_a_sweep_whose_trials_all_fail_exits_1_with_its_parent_failed(tmp_path, capsys, monkeypatch):
    code, out, line = sweep_cli(tmp_path, capsys, monkeypatch, *SWEEP, NO_WINDOW, "hydra.sweeper.n_trials=2")
    assert code == 1
    assert "Report: anyq-report" not in out  # no trial finished: nothing to report or confirm
    assert line.startswith("anyq-train: error: study 'adaptive_attention': none of its 2 trials finished "
                           "(2 FAIL); trial 0: ")
    assert "has no complete window with history_length=7992" in line
    assert [t.state for t in study_trials(tmp_path)] == [TrialState.FAIL, TrialState.FAIL]
    parent, _, everything = study_runs(tmp_path)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error"] == line.removeprefix("anyq-train: error: ")
    assert [r for r in everything if r.info.status == "RUNNING"] == []


def test_an_ablation_whose_cells_all_fail_exits_1_with_its_parent_failed(tmp_path):
    with pytest.raises(StudyFailed) as caught:
        run_cli(tmp_path, *ABLATION, 'hydra.sweeper.params.seed="0"', NO_WINDOW)
    assert caught.value.reason.startswith("study 'ablation': none of the 2 cells run finished; "
                                          "cell model=baseline_adaptive: DataError: ")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("ablation").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("role") == "study"]
    assert parent.info.status == "FAILED" and parent.data.tags["error"] == caught.value.reason
    assert [r for r in runs if r.info.status == "RUNNING"] == []



def test_the_same_command_after_every_trial_failed_says_how_to_run_again(tmp_path, capsys, monkeypatch):
    """Failed trials count toward ``n_trials``: the rerun has none left and says so, with the two ways on."""
    args = (*SWEEP, NO_WINDOW, "hydra.sweeper.n_trials=2")
    assert sweep_cli(tmp_path, capsys, monkeypatch, *args)[0] == 1
    code, _, line = sweep_cli(tmp_path, capsys, monkeypatch, *args)
    assert code == 1
    assert line.startswith("anyq-train: error: study 'adaptive_attention' had no trial left to run: its 2 trials "
                           "(hydra.sweeper.n_trials) all ran before and none finished; raise hydra.sweeper.n_trials "
                           "or start a new study (hydra.sweeper.study_name=<new name>). study 'adaptive_attention': "
                           "none of its 2 trials finished (2 FAIL)")
    assert len(study_trials(tmp_path)) == 2  # nothing ran


# ------------------------------------------------------------ a study's data
def test_a_study_on_a_file_that_cannot_be_read_is_refused_before_it_exists(tmp_path, capsys, monkeypatch):
    path = broken_csv(tmp_path)
    code, _, line = sweep_cli(tmp_path, capsys, monkeypatch, *SWEEP, "data=csv", f"data.path={path}",
                              "hydra.sweeper.n_trials=2")
    assert code == 2
    assert line.startswith("anyq-train: error: ") and "column 'y' has 1 infinite" in line
    assert not (tmp_path / "mlruns").exists()  # no Optuna study, no MLflow store
    with pytest.raises(SweepRefused, match="column 'y' has 1 infinite"):
        run_cli(tmp_path, *ABLATION, 'hydra.sweeper.params.seed="0"', "data=csv", f"data.path={path}")
    assert not (tmp_path / "mlruns").exists()


def test_a_study_resumed_on_other_data_is_refused_and_left_as_it_was(tmp_path, capsys, monkeypatch):
    assert sweep_cli(tmp_path, capsys, monkeypatch, *SWEEP, "hydra.sweeper.n_trials=1")[0] == 0
    parent, _, _ = study_runs(tmp_path)
    assert parent.data.tags["dataset"] == "synthetic" and parent.data.tags["data_fingerprint"]
    code, _, line = sweep_cli(tmp_path, capsys, monkeypatch, *SWEEP, "data.synthetic.seed=1", "hydra.sweeper.n_trials=2")
    assert code == 2
    assert line.startswith(f"anyq-train: error: study 'adaptive_attention' was run on other data (data_fingerprint "
                           f"{parent.data.tags['data_fingerprint']}; this command's: data_fingerprint ")
    assert line.endswith("give this data a study of its own (hydra.sweeper.study_name=<new name>)")
    again, _, _ = study_runs(tmp_path)
    assert again.info.status == parent.info.status == "FINISHED" and len(study_trials(tmp_path)) == 1
    # an ablation resumed on other data: the same refusal
    run_cli(tmp_path / "grid", *ABLATION, 'hydra.sweeper.params.seed="0"', 'hydra.sweeper.params.model="baseline_adaptive"')
    with pytest.raises(SweepRefused, match="study 'ablation' was run on other data"):
        run_cli(tmp_path / "grid", *ABLATION, 'hydra.sweeper.params.seed="0"',
                'hydra.sweeper.params.model="baseline_adaptive"', "data.synthetic.seed=1")
