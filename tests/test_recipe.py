"""One recipe through the loop: sweeps, ablation cells and confirm runs train as the main job does."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from anyq.app.confirm_study import full_budget, seed_config
from anyq.app.paths import config_dir
from anyq.tracking.recipe_tags import RECIPE_TAG, recipe_tags
from anyq.training.recipe import recipe_hash, recipe_name, recipe_settings
from anyq.training.schema import AppConfig
from conftest import compose_config

SWEEPS = ("sweep=adaptive_attention", "sweep=pareto", "sweep=sampler")
# the main preset's lr, schedule, warm-up, weight averaging, calendar, conformal calibration, early stopping
RECIPE_VALUES = ("optim.lr", "optim.schedule", "optim.warmup_updates", "trainer.ema_decay",
                 "data.calendar.enabled", "model.conformal", "trainer.early_stopping.enabled")


def composed(*overrides: str):
    """The config exactly as ``anyq-train <overrides>`` composes it (no test sizes)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def confirm_command(root: Path):
    """``anyq-train confirm.study=adaptive_attention`` as composed (the default trainer, no test sizes)."""
    cfg = composed("confirm.study=adaptive_attention", f"paths.root={root}")
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "outputs" / "confirm")
        del cfg["hydra"]
    return cfg


@pytest.mark.parametrize("sweep", SWEEPS)
def test_a_sweep_trains_at_the_main_presets_recipe_and_its_own_budget(sweep):
    main, trial = composed("experiment=cpu_demo"), composed(sweep)
    for key in RECIPE_VALUES:
        assert OmegaConf.select(trial, key) == OmegaConf.select(main, key), key
    assert (trial.optim.lr, trial.optim.schedule, trial.trainer.ema_decay, trial.data.calendar.enabled,
            trial.model.conformal) == (0.008, "cosine", 0.995, True, "per_level")
    assert recipe_hash(trial) == recipe_hash(main)
    assert recipe_name(trial.hydra.runtime.choices) == "cpu_demo"
    # what a sweep changes: its budget, and one torch thread per trial
    assert (trial.trainer.max_epochs, trial.trainer.max_steps, trial.trainer.val_check_interval) == (None, 300, 100)
    assert (main.trainer.max_steps, main.trainer.val_check_interval) == (2000, 200)
    assert trial.trainer.num_threads == 1


def test_another_preset_on_the_command_line_is_the_sweeps_recipe():
    trial, guide = composed("sweep=adaptive_attention", "experiment=guide_full"), composed("experiment=guide_full")
    assert (trial.optim.lr, trial.optim.warmup_updates, trial.optim.schedule) == (0.0005, 800, "inverse_sqrt")
    assert recipe_hash(trial) == recipe_hash(guide) != recipe_hash(composed("experiment=cpu_demo"))
    assert recipe_name(trial.hydra.runtime.choices) == "guide_full"
    assert trial.trainer.max_steps == 300  # the sweep's budget still


def test_ablation_and_main_study_carry_the_main_jobs_recipe():
    main = composed("experiment=cpu_demo")
    for overrides in (["ablation=variants"], ["study=main"], ["experiment=cpu_demo", "study=main"]):
        cfg = composed(*overrides)
        assert recipe_hash(cfg) == recipe_hash(main), overrides
        assert recipe_name(cfg.hydra.runtime.choices) == "cpu_demo"
        assert cfg.trainer.num_threads == 1
    assert composed("ablation=variants").trainer.max_steps == 600  # its own (demo) budget
    assert recipe_hash(composed()) != recipe_hash(main)  # config.yaml alone is another recipe
    assert recipe_name(composed().hydra.runtime.choices) == "default"


def test_confirm_runs_take_the_trials_recipe_at_the_main_jobs_budget(tmp_path: Path):
    """A sweep trial's logged config, as confirm reads it back, and the seed configs it trains."""
    trial = compose_config(tmp_path, ["sweep=adaptive_attention", "model.attention.adaptive_temp=1.5"], job="trial")
    logged = OmegaConf.merge(OmegaConf.structured(AppConfig), OmegaConf.to_container(trial, resolve=True))
    command = confirm_command(tmp_path)
    full_budget(logged, command)
    seeds = [seed_config(logged, command, s, "adaptive_attention-confirm", "parent", "adaptive_attention", 3,
                         "cpu_demo") for s in (0, 1)]
    main = compose_config(tmp_path, ["experiment=cpu_demo"], job="main")
    for cfg in seeds:
        assert recipe_hash(cfg) == recipe_hash(main) == recipe_hash(trial)
        assert cfg.model.attention.adaptive_temp == 1.5  # the trial's searched setting
        assert (cfg.trainer.max_epochs, cfg.trainer.max_steps, cfg.trainer.val_check_interval) == \
            (main.trainer.max_epochs, main.trainer.max_steps, main.trainer.val_check_interval) == (None, 2000, 200)
        assert recipe_tags(cfg)[RECIPE_TAG] == "cpu_demo" == cfg.tracking.tags[RECIPE_TAG]
        assert cfg.trainer.num_threads == 1
    assert trial.trainer.max_steps == 300


def test_the_hash_follows_recipe_settings_only(tmp_path: Path):
    base = compose_config(tmp_path, ["experiment=cpu_demo"])
    settings = recipe_settings(base)
    assert settings["optim.lr"] == 0.008 and settings["model.conformal"] == "per_level"
    assert "data.calendar.enabled" in settings and "data.calendar.inputs" not in settings
    assert not any(key.startswith(("trainer.max_", "model.attention", "seed", "trainer.num_threads"))
                   for key in settings)

    def changed(key: str, value) -> str:
        cfg = compose_config(tmp_path, ["experiment=cpu_demo"])
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value, merge=False)
        return recipe_hash(cfg)

    same = recipe_hash(base)
    for key, value in (("trainer.max_steps", 300), ("trainer.val_check_interval", 100), ("seed", 4),
                       ("model.attention.n_heads", 4), ("trainer.num_threads", 2),
                       ("data.calendar.inputs", ["hour", "dow"])):
        assert changed(key, value) == same, key
    for key, value in (("optim.lr", 0.004), ("optim.schedule", "inverse_sqrt"), ("trainer.ema_decay", None),
                       ("data.calendar.enabled", False), ("model.conformal", "none"),
                       ("trainer.early_stopping.patience", 5), ("data.train_batch_size", 32)):
        assert changed(key, value) != same, key


def test_the_report_names_the_studys_recipe():
    from anyq.reporting.html import recipe_sentence

    sentence = recipe_sentence({"recipe": "cpu_demo", "recipe_hash": "5b8814a6ee"})
    assert "Recipe: <code>cpu_demo</code>, hash <code>5b8814a6ee</code>" in sentence
    assert recipe_sentence({}) == ""  # a study recorded before recipes were
