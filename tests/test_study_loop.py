"""The researcher's loop end to end: make run as a study, the MLflow UI, confirm, progress lines."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from anyq.app import report as report_app
from anyq.app.paths import project_root
from anyq.errors import BrowserError
from anyq.reporting.browser import capture_runs_page, ensure_chromium
from anyq.reporting.study_progress import CellProgress, Clock, TrialProgress
from anyq.sweeping.engine import trials_left
from anyq.tracking.study_parent import child_runs
from anyq.tracking.view import KIND_TAG, TRAINING_KIND, VIEW_TAG
from conftest import TINY, run_cli, run_report

ROOT = project_root()
BIN = Path(sys.executable).parent
QUICK = [*TINY, "trainer.max_epochs=1", "tracking.log_model=false"]


def client_at(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")


def finished_runs(client: MlflowClient) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(ids, "attributes.status = 'FINISHED'", max_results=1000)
            if r.data.tags.get("role") != "study"]


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """``make run`` exactly as a user types it, into experiment x of a store under a tmp root."""
    root = tmp_path_factory.mktemp("main")
    args = " ".join(["tracking.experiment=x", f"paths.root={root}", *QUICK])
    done = subprocess.run(["make", "--no-print-directory", "run", f"ARGS={args}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    return {"root": root, "done": done, "client": client_at(root)}


@pytest.mark.slow
def test_make_run_follows_overrides_and_is_a_study(main_job):
    done, client = main_job["done"], main_job["client"]
    assert done.returncode == 0, done.stderr[-2000:]
    experiment = client.get_experiment_by_name("x")
    assert experiment is not None and client.get_experiment_by_name("main") is None
    parents = client.search_runs([experiment.experiment_id], "tags.role = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["study_name"] == "x"
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'")
    assert sorted(r.data.tags["variant"] for r in children) == ["adaptive_attention", "baseline_adaptive"]
    assert all(r.info.status == "FINISHED" for r in children)
    # side by side, the model job waited for the baseline job's run instead of training another
    (baseline,) = client.search_runs([experiment.experiment_id], "tags.variant = 'baseline_adaptive'")
    (model,) = [r for r in children if r.data.tags["variant"] == "adaptive_attention"]
    assert model.data.tags["baseline_run_id"] == baseline.info.run_id
    for run in children:  # the closing table names each run of x in that store
        assert run.info.run_id[:8] in done.stdout
    assert f"parent run {parent.info.run_id}" in done.stdout
    assert "cells 2/2 done" in done.stdout  # progress of the grid study
    # piped: one plain line per epoch instead of a redrawn bar
    lines = re.findall(r"^(\w+): epoch 1/1  train/loss=\S+ .*val/crps=\S+ .*ETA 0:00:00$", done.stdout, re.M)
    assert sorted(lines) == ["adaptive_attention", "baseline_adaptive"]  # each line says whose it is
    assert not re.search(r"(Epoch \d+/\d+|Testing) +━", done.stdout)
    assert "\r" not in done.stdout
    assert str(main_job["root"]) in done.stdout  # the store it wrote to


@pytest.mark.slow
def test_report_right_after_make_run(main_job, capsys):
    root = main_job["root"]
    out = root / "reports" / "x"
    report_app.main(["x", "--tracking-uri", f"sqlite:///{root}/mlruns/mlflow.db", "--out", str(out)])
    printed = capsys.readouterr().out
    assert re.search(r"Found study 'x' \(grid, 2 finished runs: adaptive_attention, baseline_adaptive\) in "
                     r"experiment 'x'", printed)
    page = (out / "index.html").read_text()
    assert "adaptive_attention" in page and "Diebold-Mariano" in page
    assert 'id="reliability"' in page or "Reliability" in page
    assert "workflowType=machine_learning&viewStateShareKey=anyq-comparison" in printed


@pytest.mark.slow
def test_runs_carry_dataset_input_and_source_tags(main_job):
    client = main_job["client"]
    experiment = client.get_experiment_by_name("x")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "variant" in r.data.tags]
    assert len(runs) == 2
    for run in runs:
        inputs = run.inputs.dataset_inputs
        assert len(inputs) == 1
        dataset = inputs[0].dataset
        assert dataset.digest == run.data.tags["data_fingerprint"]
        assert dataset.name == "synthetic"
        assert json.loads(dataset.source)["uri"] == "synthetic"
        assert {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]} == {"unique_id", "ds", "y"}
        assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
        assert run.data.tags["mlflow.source.name"] == "anyq-train"
        assert run.data.tags["mlflow.source.type"] == "LOCAL"
    tags = experiment.tags
    assert tags[KIND_TAG] == TRAINING_KIND
    state = json.loads(json.loads(tags[VIEW_TAG])["state"])
    assert {"metrics.`test/crps`", "metrics.`delta/crps_vs_baseline`", "metrics.`delta/coverage-0.9_vs_baseline`",
            "metrics.`test/coverage-0.9`", "metrics.`test/oracle_ratio`", "tags.`variant`", "tags.`seed`",
            "attributes.`Dataset`"} <= set(state["selectedColumns"])


@pytest.fixture(scope="module")
def chromium():
    try:
        return ensure_chromium()  # apt-get update && apt-get install chromium when missing
    except BrowserError as exc:
        pytest.skip(f"no browser: {exc}")


@pytest.mark.integration  # Chromium, installed with apt-get when missing
def test_mlflow_runs_page_in_a_real_browser(main_job, chromium):
    root, client = main_job["root"], main_job["client"]
    experiment = client.get_experiment_by_name("x")
    shot = root / "reports" / "ui" / "x_runs.png"
    page = capture_runs_page(f"sqlite:///{root}/mlruns/mlflow.db", (root / "mlruns" / "artifacts").as_uri(),
                             experiment.experiment_id, shot, chromium=chromium)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for text in ("Model training", "anyq comparison", "test/crps", "delta/crps_vs_baseline",
                 "delta/coverage-0.9_vs_baseline", "test/coverage-0.9", "test/oracle_ratio", "variant", "seed",
                 "adaptive_attention-seed0", "baseline_adaptive-seed0", "anyq-train"):
        assert text in page.dom, text
    fingerprint = client.search_runs([experiment.experiment_id], "tags.variant = 'adaptive_attention'")[0] \
        .data.tags["data_fingerprint"]
    assert f"synthetic ({fingerprint[:12]}" in page.dom or fingerprint[:8] in page.dom  # the Dataset column
    if os.environ.get("ANYQ_DOCS_SCREENSHOTS"):  # refresh the picture in docs/
        shutil.copy(shot, ROOT / "docs" / "img" / "mlflow_runs.png")


# --- confirm a sweep's winner; one progress line per trial ------------------------------------

SWEEP = ["-m", "sweep=adaptive_attention", *QUICK, "trainer.max_epochs=2", "hydra.sweeper.params=null",
         "model.attention.adaptive_temp=interval(0.0, 2.0)", "hydra.sweeper.n_trials=2",
         "hydra.sweeper.pruner=null"]


# confirm trains at the main job's budget (2,000 steps) unless told: here the trials' own, so the
# sweep's seed-0 baseline (same budget) is found again
CONFIRM_BUDGET = ["trainer.max_epochs=2", "trainer.max_steps=300", "trainer.val_check_interval=100"]


@pytest.mark.slow
def test_piped_sweep_prints_a_line_per_trial_and_confirm_trains_only_what_is_missing(tmp_path):
    log = tmp_path / "sweep.log"
    with log.open("w") as out:  # piped to a file, as `make sweep > sweep.log`
        done = subprocess.run([str(BIN / "anyq-train"), *SWEEP, f"paths.root={tmp_path}"], stdout=out,
                              stderr=subprocess.STDOUT, timeout=900)
    text = log.read_text()
    assert done.returncode == 0, text[-2000:]
    lines = re.findall(r"^trial (\d+) (\w+)  val/crps=(\S+)  best=(\S+) \(trial (\d+)\)  (\d)/2  elapsed \S+  "
                       r"ETA \S+$", text, flags=re.M)
    assert [(n, s, d) for n, s, _, _, _, d in lines] == [("0", "COMPLETE", "1"), ("1", "COMPLETE", "2")]
    study = optuna.load_study(study_name="adaptive_attention", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    assert float(lines[-1][3]) == pytest.approx(study.best_value, rel=1e-4)
    assert "\r" not in text  # no bar redraws in a file
    assert "Study 'adaptive_attention': trials" in text  # the final table

    client = client_at(tmp_path)
    before = {r.info.run_id for r in finished_runs(client)}
    assert len(before) == 3  # two trials and the seed-0 baseline
    run_cli(tmp_path, "confirm.study=adaptive_attention", "confirm.seeds=2", *CONFIRM_BUDGET)
    new = [r for r in finished_runs(client) if r.info.run_id not in before]
    best = study.best_trial.number
    confirmed = [r for r in new if r.data.tags.get("confirm_of") == "adaptive_attention"
                 and r.data.tags["variant"] == "adaptive_attention"]
    baselines = [r for r in new if r.data.tags.get("variant") == "baseline_adaptive"]
    assert sorted(r.data.tags["seed"] for r in confirmed) == ["0", "1"]
    assert {r.data.tags["confirm_trial"] for r in confirmed} == {str(best)}
    assert [r.data.tags["seed"] for r in baselines] == ["1"]  # seed 0's baseline came from the sweep
    assert len(new) == 3
    params = json.loads(client.search_runs(
        [client.get_experiment_by_name("adaptive_attention").experiment_id], "tags.role = 'study'")[0]
        .data.tags["best_params"])
    for run in confirmed:  # the best trial's configuration, trained again
        assert float(run.data.params["model.attention.adaptive_temp"]) == pytest.approx(
            params["model.attention.adaptive_temp"])

    experiment = client.get_experiment_by_name("adaptive_attention-confirm")
    parent = client.search_runs([experiment.experiment_id], "tags.role = 'study'")[0]
    assert parent.data.tags["confirm_of"] == "adaptive_attention" and parent.info.status == "FINISHED"
    # two seeds: an interval and no better/worse verdict (nor one for models not trained enough)
    assert parent.data.tags["verdict"] in ("too few seeds for a verdict", "not trained enough to judge",
                                           "baseline not trained enough to judge")
    assert "confirm/p_value" not in parent.data.metrics
    assert parent.data.metrics["confirm/relative_ci_low"] <= parent.data.metrics["confirm/relative_difference"] \
        <= parent.data.metrics["confirm/relative_ci_high"]
    assert parent.data.metrics["confirm/crps_ci_low"] <= parent.data.metrics["confirm/crps_mean"] \
        <= parent.data.metrics["confirm/crps_ci_high"]
    assert (tmp_path / "reports" / "adaptive_attention-confirm" / "index.html").is_file()

    run_cli(tmp_path, "confirm.study=adaptive_attention", "confirm.seeds=2", *CONFIRM_BUDGET)  # a rerun trains nothing
    assert len(finished_runs(client)) == len(before) + 3

    # the other trial (say, a resumed sweep's new best): a parent of its own beside the first,
    # which keeps its runs and tags; the report of the name shows the newest
    other = 1 - best
    run_cli(tmp_path, "confirm.study=adaptive_attention", "confirm.seeds=1", f"confirm.trial={other}", *CONFIRM_BUDGET)
    parents = {p.data.tags["confirm_trial"]: p for p in client.search_runs([experiment.experiment_id],
                                                                           "tags.role = 'study'")}
    assert sorted(parents) == sorted([str(best), str(other)])
    assert parents[str(best)].info.run_id == parent.info.run_id
    for number, seeds in ((str(best), ["0", "1"]), (str(other), ["0"])):
        kids = child_runs(client, parents[number], "FINISHED")
        assert sorted(k.data.tags["seed"] for k in kids if k.data.tags["variant"] == "adaptive_attention") == seeds
        assert {k.data.tags["confirm_trial"] for k in kids if k.data.tags["variant"] == "adaptive_attention"} == {number}
    page = (tmp_path / "reports" / "adaptive_attention-confirm" / "index.html").read_text()
    assert f"Trial <b>{other}</b>" in page and f"Trial <b>{best}</b>" not in page
    printed = run_report("adaptive_attention-confirm", "--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                         "--out", str(tmp_path / "confirm-page"), "--no-log")
    assert "Study 'adaptive_attention-confirm' (confirm), test split" in " ".join(printed.split())

    out = tmp_path / "reports" / "adaptive_attention"
    report_app.main(["adaptive_attention", "--tracking-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                     "--out", str(out), "--no-log"])
    assert 'href="../adaptive_attention-confirm/index.html"' in (out / "index.html").read_text()


# --- progress lines on a study built by hand ----------------------------------------------------

def test_trial_lines_name_number_state_value_best_and_count(capsys):
    study = optuna.create_study()
    progress = TrialProgress(4, ["val/crps"])
    progress.start(study)
    for value in (3.0, 1.5, 2.0):
        study.add_trial(optuna.trial.create_trial(value=value, state=TrialState.COMPLETE))
        progress(study, len(study.trials) - 1, TrialState.COMPLETE)
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED))
    progress(study, 3, TrialState.PRUNED)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[:4] for line in lines] == [
        ["trial 0 COMPLETE", "val/crps=3.0000", "best=3.0000 (trial 0)", "1/4"],
        ["trial 1 COMPLETE", "val/crps=1.5000", "best=1.5000 (trial 1)", "2/4"],
        ["trial 2 COMPLETE", "val/crps=2.0000", "best=1.5000 (trial 1)", "3/4"],  # 5 figures, not "2"
        ["trial 3 PRUNED", "val/crps=-", "best=1.5000 (trial 1)", "4/4"],
    ]
    assert lines[-1].endswith("ETA 0:00:00")


def test_a_lost_trial_is_settled_by_its_retry_in_the_count_and_the_trials_left(capsys):
    study = optuna.create_study()
    progress = TrialProgress(3, ["val/crps"])
    progress.start(study)
    lost = study.ask()
    study.tell(lost, state=TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback(max_retry=2)(study, study.trials[0])  # as the engine does for a lost trial
    progress(study, 0, TrialState.FAIL)
    assert trials_left(study, 3) == 3  # the retry and two new trials: what a resumed sweep prices
    for value in (2.0, 1.0, 3.0):
        trial = study.ask()  # the WAITING retry first
        study.tell(trial, value)
        progress(study, trial.number, TrialState.COMPLETE)
    assert trials_left(study, 3) == 0
    assert [line.split("  ")[3] for line in capsys.readouterr().out.splitlines()] == ["0/3", "1/3", "2/3", "3/3"]
    assert study.trials[1].system_attrs["failed_trial"] == 0


def test_eta_is_the_mean_pace_of_this_runs_units(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("anyq.reporting.study_progress.time.monotonic", lambda: now[0])
    clock = Clock(total=10, done_before=4)  # 4 finished in an earlier run: not timed
    now[0] = 130.0
    assert clock.eta(done=4) != clock.eta(done=4)  # nothing timed yet: unknown (NaN)
    assert clock.eta(done=7) == pytest.approx(30.0 / 3 * 3)


def test_cell_lines_count_done_over_total(capsys):
    progress = CellProgress("ablation", total=3, done_before=1)
    progress.cell_done("model=nbeats_aq seed=0", ok=True)
    progress.cell_done("model=both_off seed=0", ok=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("study ablation: cells 2/3 done  (model=nbeats_aq seed=0: FINISHED)")
    assert lines[1].startswith("study ablation: cells 3/3 done  (model=both_off seed=0: FAILED)")


def test_confirm_picks_the_best_or_the_pareto_trial_best_on_the_first_objective(tmp_path):
    from anyq.app.confirm_study import chosen_trial

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.create_experiment("s", artifact_location=(tmp_path / "artifacts").as_uri())
    single = client.create_run(experiment_id, tags={"best_trial": "4"})
    assert chosen_trial(client, client.get_run(single.info.run_id), None) == 4
    assert chosen_trial(client, client.get_run(single.info.run_id), 2) == 2  # confirm.trial=2 wins
    pareto = client.create_run(experiment_id, tags={"pareto_trials": "[1, 3, 5]",
                                                    "optuna.objectives": "val/crps,val/coverage_error",
                                                    "optuna.directions": "minimize,minimize"})
    client.log_dict(pareto.info.run_id, {"pareto_front": [
        {"number": 1, "values": [150.0, 0.01]}, {"number": 3, "values": [148.0, 0.05]},
        {"number": 5, "values": [149.0, 0.02]}]}, "study_summary.json")
    assert chosen_trial(client, client.get_run(pareto.info.run_id), None) == 3


def test_a_trial_that_cannot_be_confirmed_says_what_became_of_it(tmp_path):
    from anyq.app.confirm_study import trial_run
    from anyq.errors import ConfigError

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.create_experiment("s", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id, tags={"study_name": "s"})
    for number, status, extra in [(0, "FINISHED", {}), (1, "FAILED", {}), (2, "KILLED", {"trial_state": "PRUNED"}),
                                  (3, "FINISHED", {})]:
        run = client.create_run(experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent.info.run_id,
                                                     "optuna.trial_number": str(number), **extra})
        client.set_terminated(run.info.run_id, status)
    client.create_run(experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent.info.run_id})  # a baseline: no trial
    parent = client.get_run(parent.info.run_id)
    assert trial_run(client, parent, 3).data.tags["optuna.trial_number"] == "3"
    for number, what in [(1, "its run is FAILED"), (2, "its run is PRUNED"), (9, "the sweep has no run of it")]:
        with pytest.raises(ConfigError) as info:
            trial_run(client, parent, number)
        assert str(info.value) == f"sweep 's': trial {number} cannot be confirmed ({what}); finished trials: 0, 3"


def test_stages_print_plain_lines_when_piped(capsys):
    from rich.console import Console

    from anyq.reporting.study_progress import Stages

    with Stages("report", 2, Console(file=sys.stdout, force_terminal=False)) as stage:
        stage("reading runs")
        stage("drawing figures")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  elapsed")[0] for line in lines] == ["report: stage 1/2: reading runs",
                                                               "report: stage 2/2: drawing figures"]


def test_confirm_of_an_unknown_sweep_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "mlruns").mkdir()
    MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db").search_experiments()  # a store without the sweep
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tmp_path, "confirm.study=nope")
    assert exit_info.value.code == 2
    assert "anyq-train: error: no study parent run for study 'nope'" in capsys.readouterr().err
