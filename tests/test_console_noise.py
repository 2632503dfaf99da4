"""Library chatter stays off the console and in the job's log file."""

from __future__ import annotations

import io
import logging
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from anyq.app.console import ConsoleNoise
from anyq.serving.publish import load_served
from conftest import STEP_BUDGET, TINY

BIN = Path(sys.executable).parent
NOISE = ("litlogger", "`Trainer(limit_train_batches=1.0)` was configured",
         "`Trainer(limit_val_batches=1.0)` was configured", "`Trainer(limit_test_batches=1.0)` was configured")


def test_a_run_keeps_lightnings_chatter_in_its_log_file_only(tmp_path):
    done = subprocess.run([str(BIN / "anyq-train"), *TINY, *STEP_BUDGET, f"paths.root={tmp_path}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    (log,) = [p for p in (tmp_path / "outputs").rglob("*.log")]
    kept = log.read_text()
    for text in NOISE:
        assert text not in console, text
        assert text in kept, text
    assert "test/crps=" in console and "against its baseline" in console  # what the user needs stays
    # the served model is logged (its input example checked against the signature), silently
    assert "Validating input example" not in console
    run_id = re.search(r"run_id=([0-9a-f]{32})", console).group(1)
    served = load_served(f"runs:/{run_id}/model", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert served.spec.horizon_length == 48

    # the printed scoring command, pasted as is, scores the same model on the same (tiny) data,
    # quietly: no Lightning tip, no warning about the callbacks that wrote the checkpoint
    # (the baseline trained for the comparison prints its own: its model, not the job's)
    model, baseline = [shlex.split(c) for c in re.findall(r"\(score it: (anyq-train .*)\)$", console, re.MULTILINE)]
    assert "data.synthetic.n_series=3" in model and model[-2] == "task=test"
    assert "model=baseline_adaptive" in baseline and "model.attention.n_heads=2" not in baseline
    assert "model.backbone.layer_width=32" in baseline  # the backbone is the job's
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    baseline_run = client.get_run(client.get_run(run_id).data.tags["baseline_run_id"])
    crps = lambda text: float(re.search(r"test/crps=(\S+) run_id", text).group(1))  # noqa: E731
    for command, expected in ((model, crps(console)), (baseline, baseline_run.data.metrics["test/crps"])):
        scored = subprocess.run([str(BIN / "anyq-train"), *command[1:]], capture_output=True, text=True, timeout=600)
        assert scored.returncode == 0, scored.stderr[-3000:]
        quiet = scored.stdout + scored.stderr
        assert crps(quiet) == pytest.approx(expected, rel=1e-5)
        for text in (*NOISE, "litmodels", "callbacks used to create the checkpoint", "on other data"):
            assert text not in quiet, text


def test_lightning_and_hydra_status_lines_stay_off_the_console():
    noise = ConsoleNoise()
    record = lambda text: logging.LogRecord("x", logging.INFO, __file__, 1, text, None, None)  # noqa: E731
    for text in ("`Trainer.fit` stopped: `max_steps=2000` reached.", "Restored all states from the checkpoint at a.ckpt",
                 "Joblib.Parallel(n_jobs=2,backend=loky,prefer=processes) is launching 2 jobs",
                 "A new study created in RDB with name: adaptive_attention",
                 "Using an existing study with `study_name='adaptive_attention'` instead of creating a new one."):
        assert not noise.filter(record(text)), text
    for text in ("Launching jobs, sweep output dir : multirun/x", "`Trainer.fit` stopped: the loss is NaN"):
        assert noise.filter(record(text)), text  # what a user acts on stays


def test_noisy_warnings_reach_the_file_handler_but_not_the_console():
    console, kept = io.StringIO(), io.StringIO()
    to_console, to_file = logging.StreamHandler(console), logging.StreamHandler(kept)
    logging.captureWarnings(False)  # an earlier in-process run may have routed them already
    to_console.addFilter(ConsoleNoise())  # routes warnings to logging
    logger = logging.getLogger("py.warnings")
    logger.addHandler(to_console)
    logger.addHandler(to_file)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("Heartbeat of storage is supposed to be used with Study.optimize.", UserWarning)
            warnings.warn("`x` is deprecated and will be removed", FutureWarning)
            warnings.warn("The number of training batches (3) is smaller than the logging interval "
                          "Trainer(log_every_n_steps=50).", UserWarning)
            warnings.warn("The dirpath has changed from 'a/checkpoints' to 'b/checkpoints', therefore "
                          "`best_model_score` will not be reloaded", UserWarning)
            warnings.warn("You're resuming from a checkpoint that ended before the epoch ended and your dataloader "
                          "is not resumable. This can cause unreliable results if further training is done.")
            warnings.warn("a warning a user should read", UserWarning)
    finally:
        logger.removeHandler(to_console)
        logger.removeHandler(to_file)
        logging.captureWarnings(False)
    assert "Heartbeat" in kept.getvalue() and "deprecated" in kept.getvalue()
    assert "logging interval" in kept.getvalue()
    for noise in ("Heartbeat", "deprecated", "logging interval", "dirpath has changed", "resuming from"):
        assert noise in kept.getvalue()
        assert noise not in console.getvalue()
    assert "a warning a user should read" in console.getvalue()


def test_a_config_error_is_one_line_on_the_console_and_kept_in_the_log_file(tmp_path):
    missing = tmp_path / "no_such.csv"
    done = subprocess.run([str(BIN / "anyq-train"), "data=csv", f"data.path={missing}", f"paths.root={tmp_path}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    line = f"data.path={missing}: data file not found"
    assert (done.stdout + done.stderr).count(line) == 1
    assert done.stderr.strip() == f"anyq-train: error: {line}"
    (log,) = (tmp_path / "outputs").rglob("*.log")
    assert line in log.read_text()
