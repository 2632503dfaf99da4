"""A config is validated by the checks the networks' constructors run, without building them."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from anyq.model.checks import check_model_config
from anyq.model.forecaster import forecaster_from_config
from anyq.training.config_tree import compose_model

BAD = [
    ("attention", "n_heads", 5, "model.attention.d_model=32 is not divisible by model.attention.n_heads=5"),
    ("attention", "patch_length", 5, "data.history_length=168 is not divisible by model.attention.patch_length=5"),
    ("attention", "dropout", 1.0, "model.attention.dropout=1.0 must be in [0, 1)"),
    ("sampler", "num_adaptive_quantiles", 0, "model.sampler.num_adaptive_quantiles=0 must be >= 1"),
    ("sampler", "temperature", 0.0, "model.sampler.temperature=0.0 must be > 0"),
    ("sampler", "signal", "loss", "model.sampler.signal='loss' must be one of"),
    ("backbone", "layer_width", 0, "model.backbone.layer_width=0 must be >= 1"),
    ("backbone", "conditioning", "add", "model.backbone.conditioning='add' must be one of"),
    ("backbone", "kind", "tft", "model.backbone.kind='tft' is not supported"),
    ("sampler", "bins", 3, "unknown key(s) model.sampler.bins"),
    (None, "monotone", "isotonic", "model.monotone='isotonic' must be one of"),
    (None, "monotone_grid", 1, "model.monotone_grid=1 must be >= 2"),
    (None, "conformal", "cqr", "model.conformal='cqr' must be one of"),
    (None, "scaler", "minmax", "model.scaler='minmax' must be one of ['max_abs', 'mean_abs', 'level', 'robust', 'standard']"),
]


def model_section(variant: str = "adaptive_attention") -> dict:
    model = OmegaConf.to_container(compose_model(variant))
    assert isinstance(model, dict)
    return model


@pytest.mark.parametrize("section, key, value, message", BAD)
def test_the_settings_check_and_the_constructors_refuse_alike(section, key, value, message):
    model = model_section()
    (model[section] if section else model)[key] = value
    with pytest.raises(ValueError) as checked:
        check_model_config(model, 168, 48)
    with pytest.raises(ValueError) as built:
        forecaster_from_config(model, 168, 48)
    assert message in str(checked.value)
    assert str(checked.value) == str(built.value)


@pytest.mark.parametrize("variant", ["nbeats_aq", "baseline_adaptive", "adaptive_attention", "both_off"])
def test_a_valid_config_passes_without_building_a_network(monkeypatch, variant):
    def no_parameters(*args, **kwargs):
        raise AssertionError("a network was built")

    monkeypatch.setattr(torch.nn.Linear, "__init__", no_parameters)
    check_model_config(model_section(variant), 168, 48)


def test_attention_knobs_are_not_checked_when_attention_is_off():
    model = model_section("baseline_adaptive")
    model["attention"]["n_heads"] = 5  # would not divide d_model, but nothing uses it
    check_model_config(model, 168, 48)
    forecaster_from_config(model, 168, 48)


def test_validate_config_builds_no_network(compose_cfg, monkeypatch):
    from anyq.training.validation import validate_config
    from anyq.errors import ConfigError

    cfg = compose_cfg("model=adaptive_attention")
    monkeypatch.setattr(torch.nn.Linear, "__init__", lambda *a, **k: pytest.fail("a network was built"))
    validate_config(cfg)
    cfg.model.attention.n_heads = 5
    with pytest.raises(ConfigError, match="not divisible by model.attention.n_heads=5"):
        validate_config(cfg)


@pytest.mark.parametrize("num", [1, 9, 19, 39, 99])
def test_the_torch_free_coverage_check_agrees_with_the_grid_the_scorer_reads(num):
    """``check_evaluation`` computes the grid's span itself (no torch); it refuses exactly the
    coverage levels :func:`anyq.metrics.levels.level_bracket` cannot read off ``evaluation_grid``."""
    from omegaconf import OmegaConf

    from anyq.errors import ConfigError
    from anyq.metrics.levels import evaluation_grid, level_bracket
    from anyq.training.schema import check_evaluation

    for p in (0.5, 0.8, 0.9, 0.95, 0.98):
        try:
            level_bracket(evaluation_grid(num), (1 - p) / 2)
            level_bracket(evaluation_grid(num), (1 + p) / 2)
            readable = True
        except ValueError:
            readable = False
        config = OmegaConf.create({"num_levels": num, "val_num_levels": num, "coverage": [p]})
        try:
            check_evaluation(config)
            accepted = True
        except ConfigError:
            accepted = False
        assert accepted == readable, (num, p)
