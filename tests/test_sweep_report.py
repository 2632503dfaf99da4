"""A real tiny sweep reported: every trial with its parameters, importances, slices; a page that fits."""

from __future__ import annotations

import base64
import html as html_lib
import io
import re

import optuna
import pytest
from PIL import Image

from anyq.errors import BrowserError
from anyq.reporting.browser import ensure_chromium, measure_tables
from anyq.reporting.sweep_trials import MIN_COMPLETE, importances_of, space_keys
from conftest import TINY, run_cli, run_report

SPACE = ["hydra.sweeper.params=null", "model.attention.adaptive_temp=interval(0.0, 2.0)",
         "model.attention.n_heads=choice(1, 2)", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0"]
SWEEP = ["-m", "sweep=adaptive_attention", *TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "tracking.log_model=false", "hydra.sweeper.pruner=null",
         "hydra.sweeper.n_trials=4", *SPACE]
PAGE_WIDTH = 1400


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    run_cli(root, *SWEEP)
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    out = root / "reports" / "adaptive_attention"
    printed = run_report("adaptive_attention", "--tracking-uri", uri, "--out", str(out))
    study = optuna.load_study(study_name="adaptive_attention", storage=f"sqlite:///{root}/mlruns/optuna.db")
    return {"root": root, "uri": uri, "out": out, "printed": printed, "study": study,
            "html": (out / "index.html").read_text(encoding="utf-8")}


def _trial_rows(page: str) -> dict[int, list[str]]:
    """The trials table's rows, by trial number: the cells as text."""
    section = page.split("<h2>Trials: what was searched</h2>")[1].split("</table>")[0]
    header = [html_lib.unescape(h.replace("<wbr>", "")) for h in re.findall(r"<th>(.*?)</th>", section, re.S)]
    rows = {}
    for body in re.findall(r"<tr>(.*?)</tr>", section.split("</thead>")[1], re.S):
        cells = [html_lib.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
        rows[int(cells[0])] = dict(zip(header, cells))
    return rows


def test_sweep_report_lists_every_trial_with_every_searched_parameter(sweep):
    trials = sweep["study"].get_trials()
    assert len(trials) == 4  # one more than the three best the comparison tests
    rows = _trial_rows(sweep["html"])
    assert sorted(rows) == [t.number for t in trials]
    for t in trials:
        row = rows[t.number]
        assert row["state"] == t.state.name
        assert set(t.params) == {"model.attention.adaptive_temp", "model.attention.n_heads"}
        assert row["model.attention.adaptive_temp"] == f"{t.params['model.attention.adaptive_temp']:.4g}"
        assert row["model.attention.n_heads"] == str(t.params["model.attention.n_heads"])
        objective = next(v for k, v in row.items() if k.startswith("validation CRPS (data units), best epoch"))
        assert float(objective) == pytest.approx(t.value, rel=1e-3)
    assert "Optuna study 'adaptive_attention'" in html_lib.unescape(sweep["html"])  # read from the study itself


def test_sweep_report_shows_optunas_importances_and_the_slices(sweep):
    page = sweep["html"]
    expected = optuna.importance.get_param_importances(sweep["study"])
    shares = page.split("<h3>Parameter importances</h3>")[1].split("</table>")[0]
    for name, value in expected.items():
        assert re.search(rf"<td>{re.escape(name)}</td>\s*<td>{value:.3f}</td>", shares), name
    images = dict(re.findall(r'<figure id="([a-z_]+)">.*?src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page, re.S))
    assert {"parameter_importance", "parameter_slices", "optimisation_history"} <= set(images)
    top = next(iter(expected))
    assert "Trials: 4 (4 COMPLETE)" in sweep["printed"] and f"{top} {expected[top]:.2f}" in sweep["printed"]
    for name in ("parameter_importance", "parameter_slices"):
        with Image.open(io.BytesIO(base64.b64decode(images[name]))) as image:
            assert image.format == "PNG" and image.width >= 600


def test_importances_need_two_complete_trials():
    study = optuna.create_study()
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=1.0))
    found, note = importances_of(study, 1)
    assert found == {} and f"at least {MIN_COMPLETE} complete trials" in note and "has 1" in note


def test_search_space_tag_names_its_keys():
    tag = ("model.attention.adaptive_temp=FloatDistribution(high=2.0, log=False, low=0.0, step=None) "
           "model.attention.n_heads=CategoricalDistribution(choices=(1, 2))")
    assert space_keys(tag) == ["model.attention.adaptive_temp", "model.attention.n_heads"]


# --- the page in the browser the project uses for `make ui-check` ------------------------------

@pytest.fixture(scope="module")
def chromium():
    try:
        return ensure_chromium()
    except BrowserError as exc:
        pytest.skip(f"no browser: {exc}")


def test_no_table_is_wider_than_the_page_at_1400_px(sweep, chromium):
    fit = measure_tables(chromium, sweep["out"] / "index.html", width=PAGE_WIDTH)
    assert fit.page <= PAGE_WIDTH and len(fit.tables) >= 7  # trials, importances, comparison, details, ...
    assert fit.too_wide() == [], fit.too_wide()
    assert fit.scroll <= fit.page
    for table in fit.tables:  # each wraps to fit its box, which ends inside the page
        assert table["width"] <= table["boxWidth"] and table["boxRight"] <= fit.page, table


def test_the_measure_sees_a_table_that_does_not_fit(chromium, tmp_path):
    wide = tmp_path / "wide.html"
    wide.write_text("<html><body><table><tr>" + "<td>x</td>" * 3 + "<td>" + "w" * 400 + "</td>"
                    + "</tr></table></body></html>", encoding="utf-8")
    fit = measure_tables(chromium, wide, width=PAGE_WIDTH)
    assert fit.scroll > fit.page and len(fit.too_wide()) == 2
