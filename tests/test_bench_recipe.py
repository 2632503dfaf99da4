"""The recipe study (benchmarks/bench_recipe.py): stops on Ctrl-C as ``anyq-train`` does, and
opens one study from several processes started together on a fresh storage."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna

from conftest import small_csv
from scale_helpers import REPO, clean_env

TINY_RECIPE = ["trainer.max_steps=40", "trainer.val_check_interval=20", "model.backbone.num_blocks=2",
               "model.backbone.layer_width=32", "data.train_batch_size=64"]

# Ctrl-C while trial 0 trains: SIGINT to the process itself at its third training step.
CTRL_C_AT_STEP_3 = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, "benchmarks")
    import bench_recipe
    from anyq.training.stopping import StopOnRequest

    at_step_end = StopOnRequest.on_train_batch_end

    def ctrl_c_at_step_3(self, trainer, *rest):
        if trainer.global_step == 3:
            print("Ctrl-C at step 3", flush=True)
            os.kill(os.getpid(), signal.SIGINT)
        at_step_end(self, trainer, *rest)

    StopOnRequest.on_train_batch_end = ctrl_c_at_step_3
    bench_recipe.main(sys.argv[1:])
""")


def test_ctrl_c_fails_the_running_trial_and_ends_the_study_with_130(tmp_path):
    """Lightning's own Ctrl-C handling (a graceful shutdown, exit 1) never sees the signal: the
    fit stops at a step boundary, trial 0 is recorded FAIL and trials 1 and 2 never start."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    argv = ["--data", str(small_csv(tmp_path / "load.csv")), "--train-end", "2021-02-28", "--val-end", "2021-03-14",
            "--test-end", "2021-03-31", "--n-trials", "3", "--study", "s", "--storage", storage,
            "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
            *(x for o in TINY_RECIPE for x in ("--override", o))]
    done = subprocess.run([sys.executable, "-c", CTRL_C_AT_STEP_3, *argv], capture_output=True, text=True,
                          env=clean_env(OMP_NUM_THREADS="1"), cwd=REPO, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 128 + signal.SIGINT, output[-3000:]
    assert "Ctrl-C at step 3" in done.stdout and "Detected KeyboardInterrupt" not in output
    assert "study 's' stopped by SIGINT" in done.stderr
    study = optuna.load_study(study_name="s", storage=storage)
    assert [(t.number, t.state) for t in study.trials] == [(0, optuna.trial.TrialState.FAIL)]


# Imports done, each process says so and waits for a byte on stdin: the test sends it to all
# at once, so they open the study at the same moment.
TOGETHER = textwrap.dedent("""
    import sys
    sys.path.insert(0, "benchmarks")
    import bench_recipe
    print("ready", flush=True)
    sys.stdin.read(1)
    sys.exit(bench_recipe.main(sys.argv[1:]))
""")


def test_processes_started_together_on_a_fresh_storage_all_open_the_study(tmp_path):
    """The docstring's way to use two cores is to start the command twice: every process opens
    the same study, none fails while another creates Optuna's tables. Without the lock the
    sweeps take, 2 of 4 runs of this test failed ("table trial_intermediate_values already
    exists")."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    csv = small_csv(tmp_path / "load.csv")
    argv = ["--report-only", "--data", str(csv), "--train-end", "2021-02-28", "--val-end", "2021-03-14",
            "--test-end", "2021-03-31", "--study", "s", "--storage", storage, "--workdir", str(tmp_path / "work")]
    processes = [subprocess.Popen([sys.executable, "-c", TOGETHER, *argv, "--out", str(tmp_path / f"out{i}")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=clean_env(OMP_NUM_THREADS="1"), cwd=REPO) for i in range(6)]
    assert [p.stdout.readline().strip() for p in processes] == ["ready"] * 6
    for p in processes:
        p.stdin.write("g")
        p.stdin.flush()
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, "\n".join(o[-2000:] for o in outputs)
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["s"]
    assert all((tmp_path / f"out{i}" / "s.md").is_file() for i in range(6))
