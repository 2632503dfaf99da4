"""A study's parent run, set up in one place for every study; its summary; one-line errors."""

from __future__ import annotations

import os

import mlflow
import pytest

from anyq.app import compare as compare_app
from anyq.errors import first_line
from anyq.errors import ReportError
from anyq.reporting.latest_runs import experiment_id, latest_runs
from anyq.tracking.runs import close_run, open_run
from anyq.tracking.store import tracking_uri
from anyq.tracking.study_parent import ROLE_TAG, STUDY_TAG, child_runs, open_study_parent, record_summary
from anyq.tracking.trial_runs import STUDY_NAME_TAG, TRIAL_NUMBER_TAG


def test_first_line_of_an_error():
    assert first_line(ValueError("bad value\nTraceback ...")) == "bad value"
    assert first_line(ValueError("  \n")) == "ValueError"
    assert first_line(KeyError("x"), with_type=True) == "KeyError: 'x'"
    assert first_line(RuntimeError(), with_type=True) == "RuntimeError"
    assert first_line(ValueError("a" * 900)) == "a" * 500
    assert first_line("plain message\nmore") == "plain message"


def test_tracking_uri_is_put_back_as_it_was(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    outer = f"sqlite:///{tmp_path / 'outer.db'}"
    inner = f"sqlite:///{tmp_path / 'inner.db'}"
    with tracking_uri(outer):
        assert mlflow.get_tracking_uri() == outer
        with tracking_uri(inner):
            assert mlflow.get_tracking_uri() == inner
        assert mlflow.get_tracking_uri() == outer
        with tracking_uri():  # only saves: what the block sets is undone
            mlflow.set_tracking_uri(inner)
        assert mlflow.get_tracking_uri() == outer
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_open_study_parent_reuses_the_studys_parent_and_finds_its_children(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlruns = tmp_path / "mlruns"
    first = open_study_parent(None, mlruns, "ablation", "seeds", {"study_kind": "grid"})
    assert first.uri == f"sqlite:///{mlruns.resolve() / 'mlflow.db'}"
    parent = first.run()
    assert parent.info.status == "RUNNING"
    assert parent.data.tags[ROLE_TAG] == "study" and parent.data.tags[STUDY_TAG] == "seeds"
    assert parent.info.run_name == "seeds"
    with open_run(first.client, first.experiment_id, run_name="cell", tags={}, parent_run_id=first.run_id):
        pass
    with pytest.raises(RuntimeError), open_run(first.client, first.experiment_id, run_name="broken", tags={},
                                                parent_run_id=first.run_id):
        raise RuntimeError("boom")
    close_run(first.client, first.run_id, "FINISHED")

    again = open_study_parent(None, mlruns, "ablation", "seeds", {"study_kind": "grid"})
    assert again.run_id == first.run_id and again.run().info.status == "RUNNING"
    assert [r.info.run_name for r in child_runs(again.client, again.run(), "FINISHED")] == ["cell"]
    assert sorted(r.info.status for r in child_runs(again.client, again.run())) == ["FAILED", "FINISHED"]
    fresh = open_study_parent(None, mlruns, "ablation", "seeds", {}, fresh=True)
    assert fresh.run_id != first.run_id and fresh.experiment_id == first.experiment_id


def test_record_summary_logs_on_the_parent_and_tags_the_winning_trial(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = open_study_parent(None, tmp_path / "mlruns", "sweep", "s", {})
    trial_runs = {}
    for number in range(3):
        with open_run(study.client, study.experiment_id, run_name=f"t{number}", parent_run_id=study.run_id,
                      tags={STUDY_NAME_TAG: "s", TRIAL_NUMBER_TAG: str(number)}) as run:
            trial_runs[number] = run.run_id
    summary = {"study_name": "s", "directions": ["minimize"], "objectives": ["val/crps"],
               "trials_by_state": {"COMPLETE": 3}, "best": {"number": 1, "value": 0.5, "params": {"lr": 0.01}},
               "importances": {"lr": 1.0}}
    record_summary(study.client, study.run_id, summary)
    parent = study.run()
    assert parent.data.metrics["best_value"] == 0.5 and parent.data.metrics["trials/complete"] == 3
    assert parent.data.metrics["importance/lr"] == 1.0 and parent.data.tags["best_trial"] == "1"
    tagged = {n for n, run_id in trial_runs.items()
              if study.client.get_run(run_id).data.tags.get("best_trial") == "true"}
    assert tagged == {1}


def test_unknown_experiment_is_a_report_error_and_compare_exits_with_its_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = open_study_parent(None, tmp_path / "mlruns", "present", "s", {})
    with pytest.raises(ReportError, match=r"no MLflow experiment named 'absent' in sqlite:///"):
        experiment_id(study.client, "absent")
    with pytest.raises(SystemExit) as exited:
        compare_app.main(["--experiment", "absent", "--tracking-uri", study.uri])
    assert exited.value.code == 2  # as anyq-report: bad input, one line
    assert capsys.readouterr().err == (f"anyq-compare: error: no MLflow experiment named 'absent' in {study.uri} "
                                       f"(did you mean present?)\n")


def test_compare_on_an_experiment_of_study_runs_names_its_studies_instead_of_an_empty_table(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = open_study_parent(None, tmp_path / "mlruns", "adaptive_attention", "sweep_a", {})
    with open_run(study.client, study.experiment_id, run_name="trial", parent_run_id=study.run_id, tags={}):
        pass
    close_run(study.client, study.run_id, "FINISHED")
    with pytest.raises(SystemExit) as exited:
        compare_app.main(["--experiment", "adaptive_attention", "--tracking-uri", study.uri])
    assert exited.value.code == 2
    assert capsys.readouterr().err == ("anyq-compare: error: experiment 'adaptive_attention' has no finished run "
                                       "outside a study: its runs belong to studies (sweep_a); compare a study's "
                                       "runs with: anyq-report --study sweep_a\n")
    study.client.create_experiment("none")
    with pytest.raises(ReportError, match=r"^experiment 'none' has no finished run outside a study: train one"):
        latest_runs(study.client, "none", 2)


def test_compare_lists_each_runs_baseline_first(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = open_study_parent(None, tmp_path / "mlruns", "anyq", "s", {})  # a store with experiment anyq
    client, experiment = study.client, study.experiment_id
    baseline = client.create_run(experiment, tags={"variant": "baseline_adaptive", "role": "baseline"}).info.run_id
    model = client.create_run(experiment, tags={"variant": "adaptive_attention",
                                                "baseline_run_id": baseline}).info.run_id
    gone = client.create_run(experiment, tags={"variant": "adaptive_attention",
                                               "baseline_run_id": "0" * 32}).info.run_id  # its baseline is gone
    for run_id, crps in ((gone, 119.0), (baseline, 120.5), (model, 118.25)):
        client.log_metric(run_id, "test/crps", crps)
        client.set_terminated(run_id, "FINISHED")
    compare_app.main(["--experiment", "anyq", "--tracking-uri", study.uri, "--last", "3"])
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()
            if line.startswith(("baseline_", "adaptive_"))]
    assert rows[0] == ["baseline_adaptive", "120.50"]  # the one baseline there is, first
    assert sorted(rows[1:]) == [["adaptive_attention", "118.25"], ["adaptive_attention", "119.00"]]


def test_a_mistyped_experiment_is_one_line_with_the_closest_name(tmp_path, monkeypatch, capsys):
    """anyq-compare and anyq-report --experiment: the closest experiment or study name, and no
    second clause about runs of an experiment that does not exist."""
    from anyq.app import report as report_app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = open_study_parent(None, tmp_path / "mlruns", "present", "sweep_a", {})
    with pytest.raises(SystemExit) as exited:
        compare_app.main(["--experiment", "presnt", "--tracking-uri", study.uri])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (f"anyq-compare: error: no MLflow experiment named 'presnt' in {study.uri} "
                                       "(did you mean present?)\n")
    with pytest.raises(SystemExit) as exited:
        report_app.main(["--experiment", "presnt", "--tracking-uri", study.uri, "--out", str(tmp_path / "r")])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "anyq-report: error: no MLflow experiment named 'presnt' (did you mean present?)"]
