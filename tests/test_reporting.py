"""Reports from MLflow runs: numbers recomputed from stored forecasts, paired tests, HTML, logging."""

from __future__ import annotations

import base64
import html as html_lib
import io
import json
import math
import re
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from scipy import stats as scipy_stats

from anyq.errors import WindowMismatchError
from anyq.reporting.figures import PIXELS
from anyq.reporting.html import mean_ci as shown_ci
from anyq.reporting.numbers import significant
from anyq.reporting.stats import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    StoredForecasts,
    align,
    diebold_mariano,
    mean_ci,
    paired_crps_test,
)
from anyq.reporting.verdict import BASELINE_NOT_TRAINED, NOT_TRAINED, TOO_FEW_SEEDS, UNJUDGED
from anyq.tracking.readiness import untrained_reasons
from conftest import ABLATION, run_cli, run_report

GRID_FIGURES = {"crps_by_group", "reliability", "crps_by_horizon", "pinball_by_level", "sampler_importance",
                "fan_chart"}


# --- independent scoring of stored forecasts (plain numpy) -----------------------------------


def np_scores(f: np.ndarray, y: np.ndarray, levels: np.ndarray, series: np.ndarray) -> dict[str, float]:
    keep = ~np.isnan(y).any(axis=1)
    f, y, series = f[keep].astype(np.float64), y[keep].astype(np.float64), series[keep]
    levels = levels.astype(np.float64)
    diff = y[..., None] - f
    pin = np.maximum(levels * diff, (levels - 1) * diff)
    at = {round(float(q), 6): i for i, q in enumerate(levels)}
    median = f[..., at[0.5]]
    nz = y != 0
    ratios = [pin[series == s].mean() / np.abs(y[series == s]).mean() for s in np.unique(series)]
    return {
        "crps": 2 * pin.mean(),
        "crps_norm": 200 * np.mean(ratios),
        "coverage-0.9": np.mean((y >= f[..., at[0.05]]) & (y <= f[..., at[0.95]])),
        "coverage-0.95": np.mean((y >= f[..., at[0.025]]) & (y <= f[..., at[0.975]])),
        "marfe": np.abs((y[..., None] < f).mean(axis=(0, 1)) - levels).mean(),
        "mape": 100 * np.mean(np.abs(median - y)[nz] / np.abs(y[nz])),
    }


def local_npz(run) -> dict[str, np.ndarray]:
    path = Path(urlparse(run.info.artifact_uri).path) / "evaluation" / "test_forecasts.npz"
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def t_half_width(values: list[float]) -> float:
    x = np.asarray(values, dtype=float)
    return scipy_stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)


# --- a real ablation study, reported once for the module ---------------------------------------


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    # uncalibrated (the ablation's recipe calibrates, as the main job's does): test/ is the headline
    run_cli(root, *ABLATION, 'hydra.sweeper.params.seed="0,1"', "model.conformal=none")
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    out = root / "reports" / "ablation"
    printed = run_report("--tracking-uri", uri, "--out", str(out))
    return {"root": root, "uri": uri, "out": out, "printed": printed, "client": MlflowClient(uri)}


def test_report_table_equals_scores_recomputed_from_stored_forecasts(ablation):
    client = ablation["client"]
    table = pd.read_csv(ablation["out"] / "comparison.csv", index_col="group")
    assert list(table.index) == ["baseline_adaptive", "adaptive_attention", "seasonal naive"]
    experiment = client.get_experiment_by_name("ablation")
    runs = [r for r in client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
            if r.data.tags.get("role") != "study"]
    ensemble_crps = {}
    for variant in ("baseline_adaptive", "adaptive_attention"):
        members = sorted((r for r in runs if r.data.tags["variant"] == variant), key=lambda r: r.data.tags["seed"])
        assert [r.data.tags["seed"] for r in members] == ["0", "1"]
        # uncalibrated runs lead with test/: the headline columns are its scores
        assert {r.data.tags["headline"] for r in members} == {"test"}
        assert table.loc[variant, "headline/crps"] == table.loc[variant, "test/crps"]
        arrays = [local_npz(r) for r in members]
        scores = [np_scores(a["forecast"], a["target"], a["levels"], a["series_idx"]) for a in arrays]
        for key in ("crps", "crps_norm", "coverage-0.9", "coverage-0.95", "marfe", "mape"):
            values = [s[key] for s in scores]
            logged = [r.data.metrics[f"test/{key}"] for r in members]
            # each run's logged score is its stored forecasts' score (float32 on the way to MLflow) ...
            assert logged == pytest.approx(values, rel=1e-4, abs=1e-6), key
            assert table.loc[variant, f"test/{key}"] == pytest.approx(np.mean(values), rel=1e-4, abs=1e-6), key
            # ... and the interval is the t interval of those scores: compared on the logged values,
            # since a half-width amplifies the float32 rounding of two nearly equal seeds
            assert table.loc[variant, f"test/{key} ±"] == pytest.approx(t_half_width(logged), rel=1e-6, abs=1e-9), key
        oracle = [r.data.metrics["test/oracle_crps"] for r in members]
        assert table.loc[variant, "test/oracle_ratio"] == pytest.approx(
            np.mean([s["crps"] / o for s, o in zip(scores, oracle)]), rel=1e-4)
        for a in arrays[1:]:  # members were scored on the same windows, in the same order here
            assert np.array_equal(a["origin"], arrays[0]["origin"])
            assert np.array_equal(a["series_idx"], arrays[0]["series_idx"])
        mean_forecast = np.mean([a["forecast"].astype(np.float64) for a in arrays], axis=0)
        ensemble_crps[variant] = np_scores(mean_forecast, arrays[0]["target"], arrays[0]["levels"],
                                           arrays[0]["series_idx"])["crps"]
        assert table.loc[variant, "ensemble/crps"] == pytest.approx(ensemble_crps[variant], rel=1e-5)
    # the verdict's difference is that of the seed means, relative to the baseline's
    seed_mean = {v: table.loc[v, "test/crps"] for v in table.index}
    assert table.loc["adaptive_attention", "delta/crps"] == pytest.approx(
        seed_mean["adaptive_attention"] - seed_mean["baseline_adaptive"], rel=1e-4, abs=1e-6)
    assert table.loc["adaptive_attention", "delta/crps %"] == pytest.approx(
        100 * (seed_mean["adaptive_attention"] / seed_mean["baseline_adaptive"] - 1), rel=1e-4, abs=1e-6)
    low, high = table.loc["adaptive_attention", ["ci_low %", "ci_high %"]]
    assert low < table.loc["adaptive_attention", "delta/crps %"] < high
    # two seeds at a cut budget: no better/worse verdict and no p-value
    assert table.loc["adaptive_attention", "verdict"] in (TOO_FEW_SEEDS, *UNJUDGED)
    assert math.isnan(table.loc["adaptive_attention", "p_value"])
    # seasonal naive on the same windows is the reference row
    naive = {r.data.metrics["test/naive_crps"] for r in runs}
    assert len(naive) == 1 and table.loc["seasonal naive", "test/crps"] == pytest.approx(naive.pop())
    assert table.loc["seasonal naive", "verdict"] == "reference"
    printed = ablation["printed"]
    assert "adaptive_attention" in printed and significant(table.loc['adaptive_attention', 'ensemble/crps']) in printed
    assert "seasonal naive" in printed
    assert str(ablation["out"] / "index.html") in printed
    flat = " ".join(printed.split())  # the title wraps to the table's width
    assert "test split: test/ CRPS in data units" in flat and "headline test/" not in flat  # one family, named once
    assert "Headline metric family: <code>test</code>" in (ablation["out"] / "index.html").read_text()


def test_cut_budget_ablation_is_flagged_and_judged_by_no_one(ablation):
    """The tiny budget leaves the models untrained: the page and MLflow say so, no verdict is given."""
    client = ablation["client"]
    experiment = client.get_experiment_by_name("ablation")
    parent = client.search_runs([experiment.experiment_id], "tags.role = 'study'")[0]
    cells = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    untrained = [r for r in cells if r.data.tags["trained_enough"] == "false"]
    assert untrained, "the cut budget was expected to leave the models untrained"
    for run in cells:  # the tag follows from the run's own metrics
        assert run.data.tags["trained_enough"] == ("false" if untrained_reasons(run.data.metrics) else "true")
    for run in untrained:
        assert run.data.tags["trained_enough_reason"] == "; ".join(untrained_reasons(run.data.metrics))
    assert parent.data.tags["trained_enough"] == "false"  # the study's summary
    flagged = {r.data.tags["variant"] for r in untrained}
    assert all(v in parent.data.tags["trained_enough_reason"] for v in flagged)
    html = (ablation["out"] / "index.html").read_text(encoding="utf-8")
    assert "<h2>Not trained enough to judge</h2>" in html
    verdicts = html.split("<h2>Verdicts</h2>")[1].split("</ul>")[0]
    assert "not trained enough to judge" in verdicts
    assert "reasons above" not in verdicts and "test/" in verdicts  # each verdict line gives its reasons
    assert not re.search(r"is (better|worse) than|<td>(better|worse)</td>|class=\"(better|worse)\"", html)
    assert not re.search(r"\d+ better, \d+ worse", html)  # nor seed by seed
    table = pd.read_csv(ablation["out"] / "comparison.csv", index_col="group")
    assert table.loc["adaptive_attention", "verdict"] == (
        NOT_TRAINED if "adaptive_attention" in flagged else BASELINE_NOT_TRAINED)  # its own training first


def _embedded_images(html: str) -> dict[str, bytes]:
    found = re.findall(r'<figure id="([a-z_]+)">.*?src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html, re.S)
    return {name: base64.b64decode(data) for name, data in found}


def test_html_embeds_every_figure_at_its_size(ablation):
    html = (ablation["out"] / "index.html").read_text(encoding="utf-8")
    images = _embedded_images(html)
    assert set(images) == GRID_FIGURES
    for name, png in images.items():
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and image.size == PIXELS, name
        assert mpimg.imread(io.BytesIO(png), format="png").shape[:2] == (PIXELS[1], PIXELS[0])
        assert (ablation["out"] / f"{name}.png").read_bytes() == png  # the PNG beside the page
    assert "<h2>Verdicts</h2>" in html and "adaptive_attention" in html
    client = ablation["client"]
    experiment = client.get_experiment_by_name("ablation")
    parent = client.search_runs([experiment.experiment_id], "tags.role = 'study'")[0]
    cells = {r.info.run_id for r in client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    assert set(re.findall(r'<td class="id">([0-9a-f]{32})</td>', html)) == cells  # the runs table names every cell
    assert parent.info.run_id in html and ablation["uri"] in html


def test_report_is_logged_on_the_parent_run_with_a_saved_ui_view(ablation):
    client = ablation["client"]
    experiment = client.get_experiment_by_name("ablation")
    parent = client.search_runs([experiment.experiment_id], "tags.role = 'study'")[0]
    logged = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"index.html", "comparison.csv", *(f"{n}.png" for n in GRID_FIGURES)} <= logged
    with tempfile.TemporaryDirectory() as tmp:
        copy = client.download_artifacts(parent.info.run_id, "report/index.html", tmp)
        assert Path(copy).read_bytes() == (ablation["out"] / "index.html").read_bytes()
    tags = client.get_experiment(experiment.experiment_id).tags
    envelope = json.loads(tags["mlflow.sharedViewState.anyq-comparison"])
    assert isinstance(envelope["name"], str) and isinstance(envelope["createdAt"], int)
    state = json.loads(envelope["state"])
    assert {"metrics.`test/crps`", "metrics.`delta/crps_vs_baseline`", "metrics.`test/coverage-0.9`",
            "metrics.`test_conformal/crps`", "metrics.`test_conformal/coverage-0.9`", "tags.`headline`"} \
        <= set(state["selectedColumns"])
    assert state["orderByKey"] == "metrics.`test/crps`" and state["orderByAsc"] is True


# --- the paired test on constructed inputs -----------------------------------------------------

LEVELS = np.arange(1, 40) / 40.0


def constructed(shift: float, *, n_series: int = 3, n_origins: int = 60, horizon: int = 24, seed: int = 0):
    """Targets N(0, 1) iid; forecasts: the true quantiles moved by ``shift``."""
    rng = np.random.default_rng(seed)
    n = n_series * n_origins
    target = rng.normal(size=(n, horizon))
    quantiles = np.broadcast_to(scipy_stats.norm.ppf(LEVELS), (n, horizon, LEVELS.size))
    return StoredForecasts(quantiles + shift, target, np.repeat(np.arange(n_series), n_origins),
                           np.tile(np.arange(n_origins) * 24, n_series), LEVELS)


def test_paired_test_textbook_answers():
    reference = constructed(0.3)
    same = paired_crps_test(constructed(0.3), reference)
    assert same.verdict == NO_DIFFERENCE and same.mean_difference == 0.0 and same.p_value == 1.0
    away = paired_crps_test(constructed(0.8), reference)
    assert away.verdict == WORSE and away.mean_difference > 0 and away.statistic > 0 and away.p_value < 0.05
    toward = paired_crps_test(constructed(0.0), reference)
    assert toward.verdict == BETTER and toward.mean_difference < 0 and toward.p_value < 0.05
    assert toward.n_windows == 180 and toward.n_periods == 60
    # alpha is the only thing between "better" and "no detectable difference"
    strict = paired_crps_test(constructed(0.0), reference, alpha=toward.p_value / 2)
    assert strict.verdict == NO_DIFFERENCE and strict.statistic == toward.statistic


def test_diebold_mariano_matches_hand_computed_newey_west():
    rng = np.random.default_rng(3)
    d = rng.normal(0.2, 1.0, size=80) + 0.5 * np.convolve(rng.normal(size=82), [1, 1, 1], "valid")
    # maxlags=0 with the small-sample correction is the one-sample t-test
    statistic, p_value, _ = diebold_mariano(d, maxlags=0)
    t = scipy_stats.ttest_1samp(d, 0.0)
    assert statistic == pytest.approx(t.statistic, rel=1e-10) and p_value == pytest.approx(t.pvalue, rel=1e-8)
    # Bartlett-weighted autocovariances up to lag 3, times T / (T - 1)
    lags, n, e = 3, d.size, d - d.mean()
    gamma = [e[j:] @ e[:n - j] / n for j in range(lags + 1)]
    long_run = gamma[0] + 2 * sum((1 - j / (lags + 1)) * gamma[j] for j in range(1, lags + 1))
    expected = d.mean() / math.sqrt(long_run / n * n / (n - 1))
    statistic, p_value, verdict = diebold_mariano(d, maxlags=lags)
    assert statistic == pytest.approx(expected, rel=1e-10)
    assert p_value == pytest.approx(2 * scipy_stats.t.sf(abs(expected), n - 1), rel=1e-8)
    assert verdict == (WORSE if p_value < 0.05 else NO_DIFFERENCE)


def test_windows_are_aligned_by_series_and_origin_or_refused():
    reference, candidate = constructed(0.3), constructed(0.0)
    shuffled = candidate.take(np.random.default_rng(1).permutation(candidate.origin.size))
    a, b = paired_crps_test(shuffled, reference), paired_crps_test(candidate, reference)
    assert a.verdict == b.verdict and a.n_windows == b.n_windows  # same windows in another order: same test
    assert (a.statistic, a.p_value, a.mean_difference) == pytest.approx((b.statistic, b.p_value, b.mean_difference),
                                                                        rel=1e-10)
    fewer = reference.take(np.arange(reference.origin.size - 1))
    with pytest.raises(WindowMismatchError, match="not on the same test windows"):
        paired_crps_test(candidate, fewer)
    moved = StoredForecasts(reference.forecast, reference.target, reference.series_idx, reference.origin + 1,
                            reference.levels)
    with pytest.raises(WindowMismatchError, match="1|180"):
        align(candidate, moved)
    other_data = StoredForecasts(reference.forecast, reference.target + 1.0, reference.series_idx,
                                 reference.origin, reference.levels)
    with pytest.raises(WindowMismatchError, match="targets differ"):
        align(candidate, other_data)


def test_mean_ci_is_the_student_t_interval():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert ci.mean == 2.5 and ci.n == 4
    assert (ci.high - ci.low) / 2.0 == pytest.approx(3.182446305284263 * 1.2909944487358056 / 2.0, rel=1e-12)
    single = mean_ci([5.0, float("nan")])
    assert single.mean == 5.0 and single.n == 1 and math.isnan(single.low) and math.isnan(single.high)


# --- a sweep study, fabricated in MLflow (no training needed to test its report) ---------------


def _log_forecasts(client: MlflowClient, run_id: str, f: StoredForecasts, tmp: Path) -> None:
    path = tmp / run_id / "test_forecasts.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, forecast=f.forecast.astype(np.float32), target=f.target.astype(np.float32),
             series_idx=f.series_idx, origin=f.origin, levels=f.levels.astype(np.float32))
    client.log_artifact(run_id, str(path), "evaluation")


def _fake_run(client, experiment_id, tmp, f, *, tags, val_crps, status="FINISHED", importance=None):
    run = client.create_run(experiment_id, tags={"seed": "0", **tags})
    run_id = run.info.run_id
    scores = np_scores(f.forecast, f.target, f.levels, f.series_idx)
    for step, value in enumerate(val_crps):
        client.log_metric(run_id, "val/crps", value, step=step)
    for key, value in scores.items():
        client.log_metric(run_id, f"test/{key}", float(value))
    client.log_metric(run_id, "train_seconds", 1.0)
    client.log_param(run_id, "model.sampler.kind", "adaptive")
    _log_forecasts(client, run_id, f, tmp)
    if importance is not None:
        path = tmp / run_id / "sampler_importance.npz"
        np.savez(path, probabilities=importance)
        client.log_artifact(run_id, str(path), "evaluation")
    client.set_terminated(run_id, status=status)
    return run_id


def test_sweep_report_ranks_trials_and_tests_them_against_the_baseline(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("sweep_x", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id, tags={
        "role": "study", "study_name": "sweep_x", "optuna.storage": "sqlite:///elsewhere.db",
        "optuna.directions": "minimize", "optuna.objectives": "val/crps"}).info.run_id
    base = _fake_run(client, experiment_id, tmp_path, constructed(0.3),
                     tags={"variant": "baseline_adaptive", "role": "baseline"}, val_crps=[3.5, 3.4])
    trial = {"mlflow.parentRunId": parent, "variant": "adaptive_attention", "baseline_run_id": base}
    histories = {0: [5.0, 4.0], 1: [3.0, 2.5], 2: [6.0, 5.5], 3: [4.2, 3.9]}
    shifts = {0: 0.3, 1: 0.0, 2: 0.3, 3: 0.8}
    probabilities = np.full((2, 10), 0.1)
    for number, history in histories.items():
        _fake_run(client, experiment_id, tmp_path, constructed(shifts[number]),
                  tags={**trial, "optuna.trial_number": str(number)}, val_crps=history,
                  importance=probabilities if number == 1 else None)
    _fake_run(client, experiment_id, tmp_path, constructed(0.3), status="KILLED", val_crps=[9.0],
              tags={**trial, "optuna.trial_number": "4", "trial_state": "PRUNED"})
    client.set_terminated(parent, "FINISHED")

    out = tmp_path / "report"
    printed = run_report("--tracking-uri", uri, "--study", "sweep_x", "--out", str(out))
    table = pd.read_csv(out / "comparison.csv", index_col="group")
    # best val/crps first; the fabricated runs logged no seasonal naive, its row is empty
    assert list(table.index) == ["baseline_adaptive", "trial 1", "trial 3", "trial 0", "seasonal naive"]
    assert math.isnan(table.loc["seasonal naive", "test/crps"])
    # one seed per trial: an interval from the test windows, no verdict
    assert set(table.loc[["trial 1", "trial 3", "trial 0"], "verdict"]) == {TOO_FEW_SEEDS}
    assert table.loc["trial 1", "ci_high %"] < 0 < table.loc["trial 3", "ci_low %"]
    assert table.loc["trial 0", "delta/crps %"] == 0.0
    images = _embedded_images((out / "index.html").read_text(encoding="utf-8"))
    assert set(images) == GRID_FIGURES | {"optimisation_history"}
    for png in images.values():
        with Image.open(io.BytesIO(png)) as image:
            assert image.size == PIXELS
    assert "trial 1 against baseline_adaptive: too few seeds for a verdict" in printed
    # every trial is listed, the pruned one too; the fabricated storage is elsewhere, so MLflow speaks
    page = html_lib.unescape((out / "index.html").read_text(encoding="utf-8"))
    assert "5 trials (4 COMPLETE, 1 PRUNED), read from the trials' MLflow runs (Optuna storage " \
           "sqlite:///elsewhere.db is not readable from here)" in page
    assert "The sweep recorded no searched parameters, so none can be ranked." in page


def test_confirm_report_names_the_trial_its_settings_and_recipe(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    sweep_id = client.create_experiment("sweep_y", artifact_location=(tmp_path / "sweep").as_uri())
    sweep_parent = client.create_run(sweep_id, tags={
        "role": "study", "study_name": "sweep_y", "optuna.storage": "sqlite:///elsewhere.db",
        "search_space": "model.attention.adaptive_temp=FloatDistribution(high=2.0, log=False, low=0.0, step=None) "
                        "model.attention.n_heads=CategoricalDistribution(choices=(1, 2))"}).info.run_id
    trial = client.create_run(sweep_id, tags={"mlflow.parentRunId": sweep_parent, "optuna.trial_number": "3"})
    for key, value in (("model.attention.adaptive_temp", "0.75"), ("model.attention.n_heads", "2"),
                       ("optim.lr", "0.001")):
        client.log_param(trial.info.run_id, key, value)
    confirm_id = client.create_experiment("sweep_y-confirm", artifact_location=(tmp_path / "confirm").as_uri())
    parent = client.create_run(confirm_id, tags={
        "role": "study", "study_name": "sweep_y-confirm", "study_kind": "confirm", "confirm_of": "sweep_y",
        "confirm_of_run_id": sweep_parent, "confirm_trial": "3", "confirm_trial_run_id": trial.info.run_id,
        "recipe": "cpu_demo", "recipe_hash": "0123456789abcdef0123"}).info.run_id
    child = {"mlflow.parentRunId": parent}
    _fake_run(client, confirm_id, tmp_path, constructed(0.3), tags={**child, "variant": "baseline_adaptive"},
              val_crps=[3.0])
    _fake_run(client, confirm_id, tmp_path, constructed(0.1), tags={**child, "variant": "adaptive_attention"},
              val_crps=[2.0])
    client.set_terminated(parent, "FINISHED")
    out = tmp_path / "report"
    run_report("--tracking-uri", uri, "--study", "sweep_y-confirm", "--out", str(out), "--no-log")
    page = (out / "index.html").read_text(encoding="utf-8")
    section = page.split("<h2>Confirmed trial</h2>")[1].split("<h2>")[0]
    assert "Trial <b>3</b> of sweep" in section and trial.info.run_id in section
    assert "Recipe: <b>cpu_demo (0123456789ab)</b>" in section
    settings = dict(re.findall(r"<td>([\w.]+)</td>\s*<td>([^<]*)</td>", section))
    assert settings == {"model.attention.adaptive_temp": "0.75", "model.attention.n_heads": "2"}  # what it searched


def test_report_errors_are_one_clear_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.search_experiments()  # an empty store (reading a missing one is its own error)
    with pytest.raises(SystemExit) as exit_info:
        run_report("--tracking-uri", uri)
    assert exit_info.value.code == 2
    assert "no study parent run in the store" in capsys.readouterr().err
    run = client.create_run(client.create_experiment("plain"))
    with pytest.raises(SystemExit):
        run_report("--tracking-uri", uri, "--parent-run-id", run.info.run_id)
    assert "is not a study parent run" in capsys.readouterr().err


def test_a_misspelt_study_or_experiment_name_gets_the_name_it_meant(tmp_path):
    from anyq.errors import ReportError
    from anyq.reporting.study_lookup import find_parent
    from anyq.tracking.study_parent import ROLE_TAG, STUDY_TAG

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    sweeps = client.create_experiment("sweeps")
    client.create_run(sweeps, tags={ROLE_TAG: "study", STUDY_TAG: "adaptive_attention"})
    with pytest.raises(ReportError, match=r"no study parent run for study 'adaptive_atention' in the store "
                                          r"\(did you mean adaptive_attention\? train a study first"):
        find_parent(client, study="adaptive_atention")
    with pytest.raises(ReportError, match=r"\(did you mean sweeps\? "):
        find_parent(client, study="sweps")  # an experiment's name works as well
    with pytest.raises(ReportError, match=r"in the store \(studies in the store: adaptive_attention; or train a "
                                          r"study first"):
        find_parent(client, study="zzz")  # nothing near it: the studies there are


def test_a_cell_or_seed_trained_twice_counts_once_the_newest(tmp_path):
    from anyq.reporting.study_runs import newest_per_cell
    from anyq.tracking.study_parent import CELL_TAG

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("twice")

    def run(start: int, **tags: str):
        return client.get_run(client.create_run(experiment, start_time=start, tags=tags).info.run_id)

    cell = {CELL_TAG: "model=baseline_adaptive seed=0", "variant": "baseline_adaptive", "seed": "0"}
    first, second = run(1, **cell), run(2, **cell)  # two workers of one ablation trained the same cell
    other_lr = run(3, **{**cell, CELL_TAG: "model=baseline_adaptive optim.lr=0.01 seed=0"})  # another cell
    loose_old, loose_new = run(4, variant="nbeats_aq", seed="1"), run(5, variant="nbeats_aq", seed="1")
    kept = {r.info.run_id for r in newest_per_cell([second, loose_new, first, other_lr, loose_old])}
    assert kept == {second.info.run_id, other_lr.info.run_id, loose_new.info.run_id}


def test_report_numbers_keep_their_significant_figures_in_fixed_point():
    """A column reads alike: 167.0 beside 166.5 (".4g" wrote 167), 52.00 beside 0.6772, 25000 not 2.5e+04."""
    assert [significant(v) for v in (167.0, 166.5, 52.0, 0.6772, 25012.3, 0.0, -3.21049)] == \
        ["167.0", "166.5", "52.00", "0.6772", "25012", "0.000", "-3.210"]
    assert significant(1.1, 3) == "1.10"
    assert shown_ci(167.0, 1.234) == "167.0 ± 1.2" and shown_ci(0.805, 1.2, "{:.3f}") == "0.805 ± 1.2"


def test_the_runs_table_shows_a_ratio_just_above_one_as_above_one():
    import types

    from anyq.reporting.html import runs_frame

    runs = pd.DataFrame([{"group": "baseline_adaptive", "seed": 0, "variant": "baseline_adaptive", "run_id": "r",
                          "headline": "test", "headline/crps": 167.0, "test/crps": 167.0, "test/coverage-0.9": 0.9,
                          "test/oracle_ratio": 1.1, "test/naive_ratio": 1.0031, "train_seconds": 6.2}])
    row = runs_frame(types.SimpleNamespace(runs=runs)).iloc[0]
    assert row["test CRPS / seasonal naive CRPS"] == "1.003"  # the readiness reason's figure, not "1.00"
    assert row["test CRPS (data units)"] == "167.0" and row["test CRPS / oracle CRPS"] == "1.100"
