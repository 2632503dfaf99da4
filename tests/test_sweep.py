"""Sweeps through Hydra multirun with the anyq_optuna engine, tiny budgets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from anyq.sweeping.space import parse_search_space
from anyq.training.recipe import recipe_hash
from conftest import TINY, compose_config, run_cli

SWEEP = ["-m", "sweep=adaptive_attention", "trainer.max_epochs=2", *TINY]
# The sweep file's space replaced by a small one given on the command line.
SMALL_SPACE = [
    "hydra.sweeper.params=null",
    "model.attention.adaptive_temp=interval(0.0, 2.0)",
    "model.attention.n_heads=choice(1, 2)",
    "hydra.sweeper.sampler.n_startup_trials=2",
]
NO_PRUNER = ["hydra.sweeper.pruner=null"]  # tests that expect every trial to COMPLETE



def study(root: Path, name: str = "adaptive_attention") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root}/mlruns/optuna.db")


def mlflow_client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")


def children(root: Path, experiment: str = "adaptive_attention"):
    client = mlflow_client(root)
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], "tags.role = 'study'")
    assert len(parents) == 1
    kids = client.search_runs(
        [exp.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parents[0].info.run_id}'")
    return parents[0], kids


def test_search_space_follows_hydra_grammar():
    space, fixed = parse_search_space(
        {"a": "range(1, 5)", "b": "interval(0.5, 2.0)", "c": "choice(2, 4, 8)",
         "d": "tag(log, interval(0.001, 0.1))", "e": "range(0.0, 1.0, 0.25)"},
        ["f=3", "a=range(2, 9, 3)"],
    )
    assert space["a"] == IntDistribution(2, 8, step=3)  # the command line wins; 9 excluded
    assert space["b"] == FloatDistribution(0.5, 2.0)
    assert space["c"] == CategoricalDistribution([2, 4, 8])
    assert space["d"] == FloatDistribution(0.001, 0.1, log=True)
    assert space["e"] == FloatDistribution(0.0, 0.75, step=0.25)
    assert fixed == ["f=3"]
    space, _ = parse_search_space({"n": "range(1, 5)"}, [])
    assert space["n"].high == 4  # range(1, 5) never yields 5


def test_sweep_completes_n_trials_resumes_and_never_exceeds(tmp_path, capsys):
    run_cli(tmp_path, *SWEEP, *SMALL_SPACE, *NO_PRUNER, "hydra.sweeper.n_trials=3")
    captured = capsys.readouterr()
    out = captured.out
    # the cost of what is left, before the first trial trains; every trial's progress lines name it
    assert "Cost estimate: 4 jobs (3 trials + 1 baseline), " in out
    assert out.index("Cost estimate: ") < out.index("adaptive_attention, trial 0: epoch 1/2  ")
    trials = study(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    parent, kids = children(tmp_path)
    assert parent.info.status == "FINISHED"
    # the main job's recipe, recorded on the parent and on every trial's run
    recipe = parent.data.tags["recipe_hash"]
    assert recipe == recipe_hash(compose_config(tmp_path, ["experiment=cpu_demo"]))
    assert {(k.data.tags["recipe"], k.data.tags["recipe_hash"]) for k in kids} == {("cpu_demo", recipe)}
    assert parent.data.tags["recipe"] == "cpu_demo"
    name = parent.data.tags["study_name"]  # the last line says how to report it and confirm its best trial
    # the store is not the checkout's nor where a reader started here looks: ANYQ_ROOT says where, no make form
    assert out.rstrip().splitlines()[-1] == (f"Report: ANYQ_ROOT={tmp_path.resolve()} anyq-report --study {name}; "
                                             f"its best trial over seeds: anyq-confirm {name} --seeds 5")
    assert "A new study created" not in out + captured.err  # Optuna's own line is the log file's
    sorted_numbers = sorted(int(k.data.tags["optuna.trial_number"]) for k in kids)
    assert sorted_numbers == [0, 1, 2]
    assert all(k.info.status == "FINISHED" for k in kids)
    assert sum(k.data.tags.get("best_trial") == "true" for k in kids) == 1
    assert "best_value" in parent.data.metrics
    for k in kids:  # every trial is compared with the baseline
        assert "delta/crps_vs_baseline" in k.data.metrics

    run_cli(tmp_path, *SWEEP, *SMALL_SPACE, *NO_PRUNER, "hydra.sweeper.n_trials=3")  # nothing left to do
    assert len(study(tmp_path).get_trials()) == 3
    assert "Cost estimate" not in capsys.readouterr().out
    run_cli(tmp_path, *SWEEP, *SMALL_SPACE, *NO_PRUNER, "hydra.sweeper.n_trials=4")  # the total grows by one
    assert "Cost estimate: 1 job (1 trial; their baseline is in the store), " in capsys.readouterr().out
    assert len(study(tmp_path).get_trials()) == 4
    assert len(children(tmp_path)[1]) == 4


def test_interrupted_sweep_resumes_to_n_with_nothing_running(tmp_path, monkeypatch, capsys):
    from anyq.app import train

    real = train.run_job
    calls = {"n": 0}

    def interrupt_second(cfg):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(cfg)

    monkeypatch.setattr(train, "run_job", interrupt_second)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run_cli(tmp_path, *SWEEP, *SMALL_SPACE, *NO_PRUNER, "hydra.sweeper.n_trials=3")
    states = [t.state for t in study(tmp_path).get_trials()]
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.WAITING) == 1

    monkeypatch.setattr(train, "run_job", real)
    capsys.readouterr()
    run_cli(tmp_path, *SWEEP, *SMALL_SPACE, *NO_PRUNER, "hydra.sweeper.n_trials=3")
    out = capsys.readouterr().out
    # the lost trial's retry is priced and counted with the trial left: two jobs, 2/3 then 3/3
    assert "Cost estimate: 2 jobs (2 trials; their baseline is in the store), " in out
    assert [line.split("  ")[3] for line in out.splitlines() if re.match(r"trial \d+ COMPLETE", line)] == ["2/3", "3/3"]
    trials = study(tmp_path).get_trials()
    assert TrialState.RUNNING not in {t.state for t in trials}
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    retried = [t for t in trials if t.system_attrs.get("failed_trial") is not None]
    assert len(retried) == 1 and retried[0].params == trials[1].params


def test_nan_trial_fails_with_reason_and_sweep_goes_on(tmp_path):
    run_cli(tmp_path, *SWEEP, "hydra.sweeper.params=null", "optim.lr=choice(1e30, 0.001)",
            "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=null",
            "trainer.gradient_clip_val=null", "trainer.log_every_n_steps=1")
    trials = study(tmp_path).get_trials()
    assert [t.params["optim.lr"] for t in trials] == [0.001, 1e30, 0.001]  # fixed by the seed
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert "nan" in trials[1].user_attrs["fail_reason"].lower()
    _, kids = children(tmp_path)
    status = {int(k.data.tags["optuna.trial_number"]): k.info.status for k in kids}
    assert status == {0: "FINISHED", 1: "FAILED", 2: "FINISHED"}


def test_pruner_prunes_and_mlflow_marks_pruned(tmp_path, capsys):
    run_cli(tmp_path, *SWEEP, *SMALL_SPACE, "hydra.sweeper.n_trials=2",
            "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.upper=0.0")
    out = capsys.readouterr().out  # no best trial: neither marked nor offered to anyq-confirm
    assert "* best trial" not in out and out.rstrip().endswith("; no trial completed to confirm")
    trials = study(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in trials)  # stopped after epoch 0
    _, kids = children(tmp_path)
    assert all(k.info.status == "KILLED" and k.data.tags["trial_state"] == "PRUNED" for k in kids)


@pytest.mark.slow
def test_two_concurrent_workers_share_one_study(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "anyq.app.train", *SWEEP, *SMALL_SPACE, *NO_PRUNER, "hydra.sweeper.n_trials=5",
           f"paths.root={tmp_path}"]
    workers = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err.decode()[-2000:]
    trials = study(tmp_path).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    _, kids = children(tmp_path)
    assert sorted(int(k.data.tags["optuna.trial_number"]) for k in kids) == [0, 1, 2, 3, 4]
