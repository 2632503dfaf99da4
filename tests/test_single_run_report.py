"""A single run on the user's own CSV: its baseline comparison on the terminal, then a report page."""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from anyq.app import report as report_app
from anyq.reporting.figures import fan_chart, pick_window, sampler_importance
from anyq.reporting.table import print_runs
from anyq.reporting.stats import StoredForecasts
from anyq.reporting.study_runs import load_runs_study
from anyq.training.builders import load_dataset
from conftest import TINY, compose_config, run_cli

QUICK = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "tracking.log_model=false"]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """``anyq-train data=csv data.path=<file> …`` on a small CSV, stdout kept."""
    root = tmp_path_factory.mktemp("single")
    csv = root / "load.csv"
    load_dataset(compose_config(root, [], job="csv").data).panel.to_long().to_csv(csv, index=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run_cli(root, "data=csv", f"data.path={csv}", "data.split.proportions=[0.667,0.1665,0.1665]", *QUICK)
    return root, out.getvalue()


def test_csv_run_prints_its_baseline_comparison_and_make_report_writes_its_page(single_run, capsys):
    root, printed = single_run
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("anyq")
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    (model,) = [r for r in runs if r.data.tags["variant"] == "adaptive_attention"]
    (baseline,) = [r for r in runs if r.data.tags["variant"] == "baseline_adaptive"]
    assert model.data.tags["baseline_run_id"] == baseline.info.run_id
    # the table that closes `make run`, with the run and its baseline, and the Δ in the data's units
    lines = printed.splitlines()
    first = next(i for i, line in enumerate(lines) if f"Run {model.info.run_id} against its baseline" in line)
    last = next(i for i, line in enumerate(lines) if line.startswith("Report: "))
    table = lines[first:last]
    assert all(len(line) <= 80 for line in table), "\n".join(table)  # an 80-column terminal takes it whole
    rows = {m.group(1): line.split() for line in table
            if (m := re.match(r"(adaptive_attention|baseline_adaptive)\s", line))}
    # variant, test CRPS, oracle, cov90, cov95, Δ CRPS, train s, run id: the headline is the model's own
    # forecast (test), so no hl columns repeat the test ones
    assert model.data.tags["headline"] == baseline.data.tags["headline"] == "test"
    assert [len(row) for row in rows.values()] == [8, 8]
    assert rows["adaptive_attention"][-1] == model.info.run_id[:8]
    assert rows["baseline_adaptive"][-1] == baseline.info.run_id[:8]
    assert rows["adaptive_attention"][2] == rows["baseline_adaptive"][2] == "-"  # no oracle for a CSV
    test_crps, delta = rows["adaptive_attention"][1], rows["adaptive_attention"][5]
    assert float(test_crps) == pytest.approx(model.data.metrics["test/crps"], abs=0.05)
    # Δ is written to the CRPS columns' decimal places, rounded
    assert len(delta.split(".")[-1]) == len(test_crps.split(".")[-1])
    assert abs(float(delta) - model.data.metrics["delta/crps_vs_baseline"]) <= 0.5 * 10 ** -len(delta.split(".")[-1])
    legend = " ".join(" ".join(table[table.index(next(line for line in table if line.startswith("test: "))):]).split())
    assert "test: the model's own forecast, each run's headline" in legend and "negative = better" in legend
    # a store outside the checkout: the reader's command with ANYQ_ROOT, not make's (which reads the checkout's)
    assert f"Report: ANYQ_ROOT={root.resolve()} anyq-report --experiment anyq\n" in printed

    # `make report` with no name: the newest thing in the store is this single run
    out = root / "reports" / "anyq"
    report_app.main(["--tracking-uri", f"sqlite:///{root}/mlruns/mlflow.db", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "Found 2 runs trained outside a study in experiment 'anyq'" in printed
    assert f"logging it on run {model.info.run_id}" in printed  # no parent run: the newest run keeps it
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<h1>Experiment anyq</h1>" in page
    assert model.info.run_id in page and baseline.info.run_id in page
    assert "adaptive_attention against baseline_adaptive" in page  # its verdict line
    logged = {a.path for a in client.list_artifacts(model.info.run_id, "report")}
    assert "report/index.html" in logged  # kept with the run it reports
    # the run's own readiness tags are its own, not a study summary
    assert client.get_run(model.info.run_id).data.tags.get("trained_enough") == model.data.tags.get("trained_enough")


def test_report_by_experiment_name_finds_its_single_runs(single_run, capsys):
    root, _ = single_run
    out = root / "reports" / "by-name"
    report_app.main(["--experiment", "anyq", "--tracking-uri", f"sqlite:///{root}/mlruns/mlflow.db",
                     "--out", str(out), "--no-log"])
    assert "trained outside a study in experiment 'anyq'" in capsys.readouterr().out
    assert (out / "index.html").is_file()
    # make report STUDY=anyq: the name of an experiment with no study behind it
    report_app.main(["--study", "anyq", "--tracking-uri", f"sqlite:///{root}/mlruns/mlflow.db",
                     "--out", str(root / "reports" / "by-study"), "--no-log"])
    assert "trained outside a study in experiment 'anyq'" in capsys.readouterr().out


def test_a_command_run_again_with_the_same_seed_counts_as_one_seed(tmp_path):
    """Two runs of one command and seed are one seed of the report's comparison, the newer one."""
    for _ in range(2):
        with contextlib.redirect_stdout(io.StringIO()):
            run_cli(tmp_path, *QUICK)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("anyq")
    runs = client.search_runs([experiment.experiment_id], "tags.variant = 'adaptive_attention'",
                              order_by=["attributes.start_time DESC"])
    assert len(runs) == 2 and runs[0].info.start_time >= runs[1].info.start_time
    study = load_runs_study(client, f"sqlite:///{tmp_path}/mlruns/mlflow.db", runs[0])
    assert [r.info.run_id for r in study.groups["adaptive_attention"]] == [runs[0].info.run_id]
    assert len(study.groups["baseline_adaptive"]) == 1  # the baseline trained once, reused by the rerun


def test_stored_windows_carry_series_names_and_dates_for_the_fan_chart(single_run, tmp_path):
    root, _ = single_run
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("anyq")
    (model,) = client.search_runs([experiment.experiment_id], "tags.variant = 'adaptive_attention'")
    path = client.download_artifacts(model.info.run_id, "evaluation/test_forecasts.npz", str(tmp_path))
    with np.load(path) as arrays:
        stored = StoredForecasts.from_arrays(arrays)
    frame = pd.read_csv(root / "load.csv")
    assert list(stored.series_ids) == sorted(frame["unique_id"].astype(str).unique())
    assert stored.index_start == pd.Timestamp(frame["ds"].min()).isoformat()
    window = pick_window(stored)
    origin, series = int(stored.origin[window]), int(stored.series_idx[window])
    stamp = pd.Timestamp(frame["ds"].min()) + pd.Timedelta(hours=origin)
    # the window's first target hour is that timestamp in the user's file
    mine = frame[(frame["unique_id"].astype(str) == stored.series_ids[series]) & (pd.to_datetime(frame["ds"]) == stamp)]
    assert mine["y"].to_numpy(np.float32)[0] == pytest.approx(float(stored.target[window, 0]), rel=1e-6)
    title = fan_chart(stored, 168, "adaptive_attention").axes[0].get_title()
    assert f"series {stored.series_ids[series]}" in title and f"{stamp:%Y-%m-%d %H:%M}" in title
    assert "origin t =" not in title


def test_one_importance_snapshot_is_drawn_over_the_levels_not_an_epoch_axis():
    one = sampler_importance(np.full((1, 10), 0.1), "adaptive attention").axes[0]
    assert one.get_xlabel() == "quantile level q (sampler bins)" and "epoch" not in one.get_ylabel()
    assert [round(p.get_height(), 6) for p in one.patches] == [1.0] * 10  # uniform: 1 everywhere
    many = sampler_importance(np.full((3, 10), 0.1), "adaptive attention").axes[0]
    assert many.get_ylabel() == "epoch (end of)"
    assert all(float(t).is_integer() for t in many.get_yticks() if 1 <= t <= 3)


def stored_run(client: MlflowClient, experiment_id: str, variant: str, headline: str, metrics: dict[str, float],
               seed: int = 0, data: tuple[str, str] = ("synthetic", "f00d")):
    run = client.create_run(experiment_id, tags={"variant": variant, "headline": headline, "seed": str(seed),
                                                 "dataset": data[0], "data_fingerprint": data[1]})
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, "FINISHED")
    return client.get_run(run.info.run_id)


def test_main_job_table_fits_80_columns_and_shows_both_families(tmp_path, capsys):
    """`make run`'s two variants with split-conformal headlines: the headline family's CRPS and
    coverage beside the model's own forecast's, every line within 80 columns."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("main", artifact_location=(tmp_path / "artifacts").as_uri())
    scores = {"test/crps": 123.456, "test/oracle_ratio": 1.1834, "test/coverage-0.9": 0.8714,
              "test/coverage-0.95": 0.9251, "test/crps_norm": 4.512, "test/marfe": 0.0213, "train_seconds": 187.4,
              "test_conformal/crps": 121.981, "test_conformal/coverage-0.9": 0.9016}
    baseline = stored_run(client, experiment, "baseline_adaptive", "test_conformal", scores)
    model = stored_run(client, experiment, "adaptive_attention", "test_conformal",
                       {**scores, "test/crps": 120.246, "test_conformal/crps": 119.004,
                        "delta/crps_vs_baseline": 120.246 - 123.456, "train_seconds": 1210.6})
    print_runs([baseline, model], title=f"Run {model.info.run_id} against its baseline (experiment 'main'): "
                                        f"test split")
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("baseline_", "adaptive_"))}
    # variant, hl CRPS, hl cov90, test CRPS, oracle, cov90, cov95, Δ CRPS, train s, run id
    assert rows == {
        "baseline_adaptive": ["baseline_adaptive", "121.98", "0.902", "123.46", "1.183", "0.871", "0.925", "-",
                              "187", baseline.info.run_id[:8]],
        "adaptive_attention": ["adaptive_attention", "119.00", "0.902", "120.25", "1.183", "0.871", "0.925", "-3.21",
                               "1211", model.info.run_id[:8]]}
    legend = " ".join(" ".join(lines).split())
    assert "hl: the headline forecast (test_conformal); test: the model's own;" in legend

    # runs that lead with different families: each row names its own
    raw = stored_run(client, experiment, "baseline_adaptive", "test", {"test/crps": 2469.13, "test_conformal/crps": 1.0})
    print_runs([raw, model])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("baseline_", "adaptive_"))}
    assert rows["baseline_adaptive"][:4] == ["baseline_adaptive", "test", "2469.1", "-"]  # hl = test/ for this run
    assert rows["adaptive_attention"][:5] == ["adaptive_attention", "test_conformal", "119.0", "0.902", "120.2"]
    assert "hl: each run's headline forecast (column headline)" in " ".join(" ".join(lines).split())


def test_a_study_table_names_each_rows_seed_when_the_seeds_differ(tmp_path, capsys):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("ablation", artifact_location=(tmp_path / "artifacts").as_uri())
    runs = [stored_run(client, experiment, variant, "test", {"test/crps": crps}, seed=seed)
            for variant, seed, crps in [("baseline_adaptive", 0, 115.1), ("baseline_adaptive", 1, 114.2),
                                        ("sampler_off", 2, 116.3)]]
    print_runs(runs)
    rows = [line.split()[:3] for line in capsys.readouterr().out.splitlines() if line.startswith(("baseline_", "sampler_"))]
    assert rows == [["baseline_adaptive", "0", "115.10"], ["baseline_adaptive", "1", "114.20"],
                    ["sampler_off", "2", "116.30"]]


def test_the_report_hint_is_typed_where_the_command_started(tmp_path, monkeypatch):
    from anyq.app.paths import project_root, report_hint, ui_hint

    monkeypatch.delenv("ANYQ_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert report_hint("anyq", tmp_path) == "anyq-report --experiment anyq"  # the store here: as it is
    assert report_hint("s", tmp_path / "elsewhere", "study") == f"ANYQ_ROOT={tmp_path / 'elsewhere'} anyq-report --study s"
    assert report_hint("s", project_root(), "study") == (f"ANYQ_ROOT={project_root()} anyq-report --study s"
                                                         "   (make report STUDY=s)")
    monkeypatch.chdir(project_root())  # where make runs
    assert report_hint("anyq", project_root()) == "anyq-report --experiment anyq   (make report EXPERIMENT=anyq)"
    assert ui_hint(f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}") == "make ui  (http://127.0.0.1:5000)"
    assert ui_hint(f"sqlite:///{tmp_path}/mlruns/mlflow.db") == \
        f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlruns/mlflow.db"


def test_runs_of_several_data_sets_get_a_table_each_at_their_own_scale(tmp_path, capsys):
    """A CRPS of 3,087 beside one of 1.856 would print 1.9: each data set has its own table,
    its own decimals and its own baseline."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("anyq", artifact_location=(tmp_path / "artifacts").as_uri())
    synthetic = [stored_run(client, experiment, variant, "test", {"test/crps": crps}) for variant, crps in
                 [("baseline_adaptive", 3087.31), ("adaptive_attention", 3233.24)]]
    own = [stored_run(client, experiment, variant, "test", {"test/crps": crps}, data=("load.csv", "beef"))
           for variant, crps in [("baseline_adaptive", 1.85632), ("adaptive_attention", 1.86331)]]
    print_runs([synthetic[0], own[0], synthetic[1], own[1]], title="Experiment 'anyq': test split")
    text = capsys.readouterr().out
    assert "Experiment 'anyq': test split, data synthetic (fingerprint f00d)" in text
    assert "Experiment 'anyq': test split, data load.csv (fingerprint beef)" in text
    rows = [line.split()[:2] for line in text.splitlines() if line.startswith(("baseline_", "adaptive_"))]
    assert rows == [["baseline_adaptive", "3087.3"], ["adaptive_attention", "3233.2"],
                    ["baseline_adaptive", "1.8563"], ["adaptive_attention", "1.8633"]]


def test_make_ui_offers_the_saved_view_of_every_experiment_with_runs(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    for name, tags in (("main", {"role": "study", "study_name": "main"}), ("anyq", {"variant": "nbeats_aq"})):
        experiment = client.create_experiment(name, artifact_location=(tmp_path / name).as_uri())
        client.create_run(experiment, tags=tags)
    client.create_experiment("empty", artifact_location=(tmp_path / "empty").as_uri())
    report_app.main(["--view-only", "--tracking-uri", uri])
    named = re.findall(r"saved view 'anyq comparison' of experiment '(\w+)'", capsys.readouterr().out)
    assert sorted(named) == ["anyq", "main"]  # single runs too; no view for an experiment without runs


def test_anyq_compare_lists_trained_runs_not_scored_checkpoints(tmp_path):
    from anyq.reporting.latest_runs import latest_runs

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("anyq", artifact_location=(tmp_path / "artifacts").as_uri())
    trained = stored_run(client, experiment, "nbeats_aq", "test", {"test/crps": 2.0})
    scored = client.create_run(experiment, tags={"variant": "nbeats_aq", "task": "test"})
    client.set_terminated(scored.info.run_id, "FINISHED")
    assert [r.info.run_id for r in latest_runs(client, "anyq", 4)] == [trained.info.run_id]
