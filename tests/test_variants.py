"""Variants and model settings have one definition: conf/model/*.yaml and anyq.model.config.

Every place that needs the variants reads them from the config tree, so these tests fail
when a variant file and the code, the reports or the sweeper disagree.
"""

from __future__ import annotations

import inspect
import shutil
from dataclasses import MISSING, fields
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from anyq.app.paths import config_dir
from anyq.data.datamodule import ForecastDataModule, WindowSettings
from anyq.model import AdaptiveAttention, NBeatsAQ, QuantileSampler
from anyq.model.config import AttentionConfig, BackboneConfig, SamplerConfig
from anyq.model.forecaster import AnyQuantileForecaster
from anyq.reporting.figures import headline_group
from anyq.tracking.baseline import (
    BASELINE_OWN_TAG,
    BASELINE_RESETS,
    BASELINE_SIGNATURE_TAG,
    BASELINE_VARIANT,
    BASELINE_VARIANT_TAG,
    FROM_BASELINE_VARIANT,
    baseline_config,
    baseline_tags,
    config_signature,
    is_baseline,
)
from anyq.training.builders import build_model, build_trainer, trainer_settings
from anyq.training.config_tree import (
    VARIANTS,
    ablation_variants,
    compose_model,
    full_variant,
    variant_config,
    variant_names,
)
from anyq.training.schema import DataConfig, TrainerConfig
from hydra_plugins.anyq_grid_sweeper.config import AnyqGridSweeperConf

CONF = Path(config_dir())
FILES = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def _switches(model: AnyQuantileForecaster) -> tuple[str, bool, bool]:
    return model.sampler.kind, model.attention is not None, model.attention is not None and model.attention.modulation


def test_every_variant_file_is_a_variant_everywhere() -> None:
    assert sorted(VARIANTS) == FILES and len(FILES) == 6
    assert sorted(ablation_variants()) == FILES  # the ablation study runs every variant, each once
    assert list(VARIANTS) == ablation_variants()  # report order = the study's order
    assert AnyqGridSweeperConf().first == f"model={BASELINE_VARIANT}" and BASELINE_VARIANT in FILES
    assert full_variant() == "adaptive_attention"


def test_the_design_table_of_variants_is_what_the_files_compose() -> None:
    """DESIGN.md's table (docs/design.md): two switches per variant."""
    built = {name: _switches(_tiny(name)) for name in VARIANTS}
    assert built == {
        "nbeats_aq": ("uniform", False, False),
        "baseline_adaptive": ("adaptive", False, False),
        "adaptive_attention": ("adaptive", True, True),
        "sampler_off": ("uniform", True, True),
        "modulation_off": ("adaptive", True, False),
        "both_off": ("uniform", True, False),
    }


def _tiny(variant: str) -> AnyQuantileForecaster:
    from anyq.model import build_forecaster

    sampler, attention = variant_config(variant, {"num_bins": 10}, {"patch_length": 12, "d_model": 8, "n_heads": 2})
    return build_forecaster(48, 24, {"num_blocks": 1, "layer_width": 8}, sampler, attention)


@pytest.mark.parametrize("variant", FILES)
def test_model_group_loads_as_hydra_composes_it(compose_cfg, variant: str) -> None:
    """The config tree's own reading of conf/model equals Hydra's, and so does the model built."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra_model = compose("config", overrides=[f"model={variant}"]).model
    ours = compose_model(variant)
    assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydra_model, resolve=True)
    assert ours.variant == variant
    cfg = compose_cfg(f"model={variant}")
    assert _switches(build_model(cfg)) == (ours.sampler.kind, ours.attention.enabled,
                                           ours.attention.enabled and ours.attention.modulation)


def test_a_new_variant_file_is_found_and_must_join_the_study(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    text = (conf / "model" / "both_off.yaml").read_text().replace("variant: both_off", "variant: plain_uniform")
    (conf / "model" / "plain_uniform.yaml").write_text(text)
    assert variant_names(conf)[-1] == "plain_uniform"  # found, listed after the study's own
    assert sorted(ablation_variants(conf)) != sorted(variant_names(conf))  # what the first test catches
    assert compose_model("plain_uniform", conf).attention.enabled
    with pytest.raises(ValueError, match="model.variant='full' is not one of"):
        compose_model("full")


def test_headline_figure_shows_the_full_model() -> None:
    comparison = SimpleNamespace(groups=["baseline_adaptive", "sampler_off", "adaptive_attention"],
                                 baseline="baseline_adaptive")
    assert headline_group(comparison) == "adaptive_attention"


def _flat(cfg) -> dict[str, object]:
    out: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def test_baseline_differs_from_the_run_exactly_in_the_documented_settings(compose_cfg) -> None:
    run = compose_cfg("model=adaptive_attention", "model.sampler.num_adaptive_quantiles=7",
                      "model.sampler.min_prob=0.001", "model.backbone.dropout=0.2", "model.attention.n_heads=4",
                      "seed=3", "optim.lr=0.01", "trainer.max_epochs=2", "model.conformal=per_level")
    base = baseline_config(run)
    run_flat, base_flat = _flat(run), _flat(base)
    assert set(run_flat) == set(base_flat)
    differ = {key for key in run_flat if run_flat[key] != base_flat[key]}
    owned = {key for key in run_flat if key.split(".")[0] == "model" and key.split(".")[1] in FROM_BASELINE_VARIANT}
    reset = {key for key in run_flat if any(key == r or key.startswith(f"{r}.") for r in BASELINE_RESETS)}
    assert differ <= owned | reset
    # the baseline's own settings are its file's, whatever the run's are
    expected = compose_model(BASELINE_VARIANT)
    for key in FROM_BASELINE_VARIANT:
        assert base.model[key] == expected[key]
    assert base.model.sampler.num_adaptive_quantiles == 3 and base.model.sampler.min_prob == 0.002
    assert not base.model.attention.enabled
    # shared: backbone, seed, optimiser, budget, conformal
    assert (base.model.backbone.dropout, base.seed, base.optim.lr, base.trainer.max_epochs, base.model.conformal) == (
        0.2, 3, 0.01, 2, "per_level")
    assert {"model.variant", "model.sampler.num_adaptive_quantiles", "model.sampler.min_prob",
            "model.attention.enabled"} <= differ
    assert is_baseline(base) and not is_baseline(run)


def test_a_sampler_sweep_has_one_baseline(compose_cfg) -> None:
    trials = [compose_cfg("model=adaptive_attention", f"model.sampler.num_adaptive_quantiles={n}",
                          f"model.sampler.temperature={t}") for n, t in ((1, 0.5), (5, 2.0))]
    signatures = {config_signature(baseline_config(cfg), "fp") for cfg in trials}
    assert len(signatures) == 1
    assert len({config_signature(cfg, "fp") for cfg in trials}) == 2
    tags = baseline_tags(trials[0], "fp")
    assert tags == {BASELINE_SIGNATURE_TAG: signatures.pop(), BASELINE_VARIANT_TAG: "baseline_adaptive",
                    BASELINE_OWN_TAG: "model.variant,model.sampler,model.attention"}


@pytest.mark.parametrize("cls, settings, skip", [
    (NBeatsAQ, BackboneConfig, {"kind"}),
    (QuantileSampler, SamplerConfig, set()),
    (AdaptiveAttention, AttentionConfig, {"enabled"}),
])
def test_constructor_defaults_are_the_schema_defaults(cls, settings, skip) -> None:
    params = inspect.signature(cls.__init__).parameters
    for f in fields(settings):
        if f.name in skip:
            continue
        assert f.default is not MISSING and params[f.name].default == f.default, f.name


def test_datamodule_reads_the_schema_and_the_trainer_every_trainer_key(compose_cfg) -> None:
    assert "train_batch_size" not in inspect.signature(ForecastDataModule.__init__).parameters
    assert set(WindowSettings.__annotations__) <= {f.name for f in fields(DataConfig)}
    cfg = compose_cfg("trainer.gradient_clip_val=0.5", "trainer.log_every_n_steps=3", "trainer.limit_val_batches=2")
    settings = trainer_settings(cfg.trainer)
    unused = {f.name for f in fields(TrainerConfig)} - set(settings)
    # read by the job and build_trainer's callbacks (early stopping, averaging, progress lines)
    assert unused == {"num_threads", "early_stopping", "ema_decay", "progress_every_s", "progress_lines"}
    trainer = build_trainer(cfg, checkpoints=False)
    assert (trainer.gradient_clip_val, trainer.log_every_n_steps, trainer.limit_val_batches) == (0.5, 3, 2)


def test_a_variant_file_names_itself(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "model" / "copy.yaml").write_text((conf / "model" / "both_off.yaml").read_text())
    with pytest.raises(ValueError, match="conf/model/copy.yaml sets variant: both_off; it must name its file"):
        compose_model("copy", conf)


def test_a_served_spec_from_before_the_sampler_signal_keeps_the_raw_signal() -> None:
    from anyq.serving.bundle import SPEC_FORMAT, ForecasterSpec

    model = compose_model("adaptive_attention")
    sampler = {k: v for k, v in model.sampler.items() if k != "signal"}
    spec = ForecasterSpec.from_dict({
        "format": SPEC_FORMAT, "variant": "adaptive_attention", "history_length": 48, "horizon_length": 24,
        "model": {"backbone": dict(model.backbone), "sampler": sampler,
                  "attention": {**model.attention, "patch_length": 12}},
    })
    forecaster = spec.build()
    assert forecaster.sampler.signal == "raw" and forecaster.monotone == "none"
    assert ForecasterSpec.from_dict(spec.to_dict() | {"model": {**spec.model_config(), "sampler": dict(
        model.sampler)}}).build().sampler.signal == "calibration"
