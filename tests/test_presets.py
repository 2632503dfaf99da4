"""Experiment presets: each composes to its documented values and passes a fast dev run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from omegaconf import DictConfig, open_dict

from anyq.app.job import run_job
from anyq.app.paths import config_dir
from anyq.training.builders import load_dataset
from anyq.training.schema import register_configs
from conftest import run_cli, small_csv

register_configs()

PRESETS = sorted(p.stem for p in Path(config_dir(), "experiment").glob("*.yaml"))
# Small data, widths and evaluation batches (a fast dev run scores one batch); the presets'
# structure (block and head counts, training batch sizes, schedules) stays.
SMALL_EVAL = "data.eval_batch_size=64"
SHRINK = {
    "guide_full": ["model.backbone.layer_width=16", "model.attention.d_model=16", "model.attention.d_ff=32",
                   "data.synthetic.n_series=3", "data.synthetic.years=1", SMALL_EVAL],
    "paper_mhlv": ["model.backbone.layer_width=16", SMALL_EVAL],
    "cpu_demo": ["data.synthetic.n_series=3", "data.synthetic.years=1", SMALL_EVAL],
}


def compose_preset(root: Path, *overrides: str) -> DictConfig:
    """Compose like ``anyq-train`` does, without the tests' TINY budget (it would mask the preset)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root={root}", *overrides], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "outputs" / "run")
        del cfg["hydra"]
    GlobalHydra.instance().clear()
    return cfg


def write_mhlv_like(path: Path, start: str = "2016-06-01", end: str = "2018-12-31 23:00") -> Path:
    """Two hourly series in the MHLV file's layout and date format; the second starts late
    and has a gap, as MHLV series do. Covers the paper's validation and test years."""
    index = pd.date_range(start, end, freq="h")
    hours = np.arange(len(index))
    rng = np.random.default_rng(0)
    frames = []
    for k, (scale, late) in enumerate(((30000.0, 0), (5000.0, 24 * 60))):
        y = scale * (1 + 0.15 * np.sin(2 * np.pi * hours / 24) + 0.05 * np.sin(2 * np.pi * hours / 168))
        y = y + rng.normal(0, 0.01 * scale, len(index))
        if k == 1:
            y[5000:5010] = np.nan
        frames.append(pd.DataFrame({"unique_id": f"Var{k + 1}", "ds": index[late:].strftime("%d-%b-%Y %H:%M:%S"),
                                    "y": y[late:]}))
    pd.concat(frames, ignore_index=True).to_csv(path)  # with the unnamed index column MHLV has
    return path


def test_every_preset_is_tested():
    assert set(PRESETS) == set(SHRINK)


def test_guide_full_is_the_guides_configuration(tmp_path):
    cfg = compose_preset(tmp_path, "experiment=guide_full")
    att, smp = cfg.model.attention, cfg.model.sampler
    assert (att.d_model, att.n_heads, att.num_blocks, att.d_ff, att.adaptive_temp) == (256, 8, 2, 1024, 1.0)
    assert (smp.num_adaptive_quantiles, smp.num_bins, smp.momentum, smp.temperature) == (3, 100, 0.99, 1.0)
    assert (cfg.trainer.max_epochs, cfg.data.train_batch_size, cfg.optim.lr, cfg.optim.warmup_updates) == (
        20, 512, 0.0005, 800)
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.accumulate_grad_batches) == (2.0, 4)
    assert cfg.model.variant == "adaptive_attention"
    # no variant or dataset is pinned: ablations compose with the guide's sizes
    other = compose_preset(tmp_path, "experiment=guide_full", "model=modulation_off")
    assert other.model.variant == "modulation_off" and other.model.attention.d_model == 256


def test_paper_mhlv_is_the_papers_configuration(tmp_path):
    cfg = compose_preset(tmp_path, "experiment=paper_mhlv")
    bb = cfg.model.backbone
    assert cfg.model.variant == "nbeats_aq" and cfg.model.sampler.kind == "uniform"
    assert not cfg.model.attention.enabled
    assert (bb.num_blocks, bb.num_layers, bb.layer_width) == (30, 3, 1024)
    assert (cfg.data.train_batch_size, cfg.optim.lr, cfg.optim.warmup_updates, cfg.trainer.max_epochs) == (
        1024, 0.0005, 400, 15)
    assert (cfg.data.history_length, cfg.data.horizon_length, cfg.data.name) == (168, 48, "mhlv")
    assert cfg.data.path == f"{tmp_path}/data/mhlv/M/df_y.csv"


def test_paper_mhlv_splits_are_the_papers_boundaries(tmp_path):
    """[2006-01-01, 2017-01-01, 2018-01-01, 2019-01-01): first target hour of each split."""
    path = write_mhlv_like(tmp_path / "df_y.csv")
    cfg = compose_preset(tmp_path, "experiment=paper_mhlv", f"data.path={path}")
    dataset = load_dataset(cfg.data)
    index = dataset.panel.index
    splits = dataset.splits
    assert index[splits.val[0]] == pd.Timestamp("2017-01-01 00:00")
    assert index[splits.test[0]] == pd.Timestamp("2018-01-01 00:00")
    assert splits.test[1] == len(index) and index[-1] == pd.Timestamp("2018-12-31 23:00")


def test_a_file_gets_the_file_recipe_and_the_synthetic_panel_the_schemas(tmp_path):
    """``data=csv`` brings conf/data_recipe/csv.yaml: a training origin at every hour and the
    ``level`` scaler; the synthetic generator keeps the schema's every 4th hour and ``max_abs``,
    and an override on the command line still wins."""
    from anyq.training.builders import build_datamodule, build_model

    csv = small_csv(tmp_path / "mine.csv")
    for source, step, scaler in ((["data=csv", f"data.path={csv}"], 1, "level"),
                                 ([SHRINK["cpu_demo"][0]], 4, "max_abs")):
        cfg = compose_preset(tmp_path, "experiment=cpu_demo", "tracking=none", *source)
        assert cfg.data.train_step == step and build_model(cfg).scaler == scaler
        windows = build_datamodule(cfg.data, load_dataset(cfg.data), 0).train_windows
        origins = windows.origin[windows.series_idx == 0]
        assert len(origins) > 100 and set(np.diff(origins)) == {step}
    mine = compose_preset(tmp_path, "experiment=cpu_demo", "data=csv", f"data.path={csv}", "model.scaler=max_abs")
    assert mine.model.scaler == "max_abs" and mine.data.train_step == 1
    # the recipe's other knobs are the same for both sources
    file_cfg = compose_preset(tmp_path, "experiment=cpu_demo", "data=csv", f"data.path={csv}")
    synthetic_cfg = compose_preset(tmp_path, "experiment=cpu_demo")
    assert file_cfg.optim == synthetic_cfg.optim and file_cfg.trainer == synthetic_cfg.trainer


@pytest.mark.parametrize("preset", sorted(SHRINK))
def test_preset_fast_dev_run(tmp_path, preset):
    overrides = [f"experiment={preset}", "trainer.fast_dev_run=true", "tracking=none",
                 "trainer.enable_progress_bar=false", *SHRINK[preset]]
    if preset == "paper_mhlv":
        overrides.append(f"data.path={write_mhlv_like(tmp_path / 'df_y.csv')}")
    cfg = compose_preset(tmp_path, *overrides)
    summary = run_job(cfg)
    assert np.isfinite(summary["test/crps"]) and summary["test/crps"] > 0
    assert 0.0 <= summary["test/coverage-0.9"] <= 1.0



def test_paper_seed_ensemble_runs_under_one_parent(tmp_path):
    """``-m experiment=paper_mhlv seed=...``: one parent, a child per seed with its forecasts."""
    path = write_mhlv_like(tmp_path / "df_y.csv", start="2016-09-01")
    run_cli(tmp_path, "-m", "experiment=paper_mhlv", "seed=0,1", f"data.path={path}",  # mechanics only:
            "trainer.fast_dev_run=true", "data.train_batch_size=64", "model.backbone.num_blocks=2",  # tiny
            *SHRINK["paper_mhlv"])
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("paper_mhlv")
    parents = client.search_runs([experiment.experiment_id], "tags.role = 'study'")
    assert [p.data.tags["study_name"] for p in parents] == ["paper_mhlv"]
    assert parents[0].info.status == "FINISHED"
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parents[0].info.run_id}'")
    assert sorted(c.data.tags["seed"] for c in children) == ["0", "1"]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["variant"] == "nbeats_aq"
        assert "baseline_run_id" not in child.data.tags  # no baseline comparison in this preset
        files = {a.path for a in client.list_artifacts(child.info.run_id, "evaluation")}
        assert "evaluation/test_forecasts.npz" in files
