"""The config tree on disk (``conf/``): where it is, and the model variants it declares.

``conf/model/<variant>.yaml`` is the one definition of a variant: its file name is the name
``model=<variant>`` selects and its defaults list picks the sampler and attention settings.
Everything else that needs the variants (the forecaster's switches in tests and benchmarks,
the baseline of a run, the report's order, the figures' full model, the grid sweeper's
baseline cells) reads them from here. The ablation study (``conf/ablation/variants.yaml``)
lists the variants in the order reports show them; a test keeps that list equal to the files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from anyq.training.schema import SCHEMAS

#: The variant every run is compared with (``conf/model/baseline_adaptive.yaml``).
BASELINE_VARIANT = "baseline_adaptive"
#: The study that runs every variant; its ``model`` parameter lists them in report order.
ABLATION_FILE = Path("ablation") / "variants.yaml"
#: The settings in which variants differ (docs/design.md, variants): ``model.sampler.kind``,
#: ``model.attention.enabled`` and ``model.attention.modulation``.
SWITCHES: dict[str, tuple[str, ...]] = {"sampler": ("kind",), "attention": ("enabled", "modulation")}


def project_root() -> Path:
    """The checkout holding ``conf/``: ``ANYQ_ROOT`` if set, else the source tree's root."""
    if os.environ.get("ANYQ_ROOT"):
        return Path(os.environ["ANYQ_ROOT"]).resolve()
    return Path(__file__).resolve().parents[3]


def work_root() -> Path:
    """Where runs, outputs and reports go: ``ANYQ_ROOT`` if set, else the current directory,
    as ``paths.root`` (``conf/paths/default.yaml``) resolves for ``anyq-train``. Every command
    that reads the store (``anyq-report``, ``anyq-compare``, ``anyq-predict``) looks here, so it
    finds what a job started in the same directory wrote."""
    return Path(os.environ.get("ANYQ_ROOT") or ".").resolve()


def config_dir() -> str:
    """``ANYQ_CONFIG_DIR`` if set, else ``conf/`` under :func:`project_root`."""
    return str(Path(os.environ.get("ANYQ_CONFIG_DIR", project_root() / "conf")).resolve())


def variant_names(conf: str | Path | None = None) -> tuple[str, ...]:
    """The variants of ``conf/model/*.yaml``: in the ablation study's order, any file the study
    does not list after it, by name."""
    root = Path(conf or config_dir())
    files = sorted(p.stem for p in (root / "model").glob("*.yaml"))
    order = [name for name in ablation_variants(root) if name in files]
    return tuple(order + [name for name in files if name not in order])


def ablation_variants(conf: str | Path | None = None) -> list[str]:
    """The ``model`` values the ablation study sweeps (``conf/ablation/variants.yaml``)."""
    path = Path(conf or config_dir()) / ABLATION_FILE
    if not path.is_file():
        return []
    params = OmegaConf.load(path).hydra.sweeper.params
    return [name.strip() for name in str(params.model).split(",")]


def compose_model(variant: str, conf: str | Path | None = None) -> DictConfig:
    """The ``model`` section that ``model=<variant>`` composes, merged onto the schema (a fresh,
    writable copy). ValueError for a name without a file in ``conf/model/``."""
    root = str(Path(conf or config_dir()).resolve())
    if variant not in variant_names(root):
        raise ValueError(f"model.variant={variant!r} is not one of {list(variant_names(root))} (conf/model/*.yaml)")
    model = OmegaConf.create(_composed(root, "model", variant))
    if model.variant != variant:
        raise ValueError(f"conf/model/{variant}.yaml sets variant: {model.variant}; it must name its file")
    return model


@functools.cache
def _composed(conf: str, group: str, option: str) -> dict[str, Any]:
    """``<conf>/<group>/<option>.yaml`` composed as Hydra does for the forms a config group of
    this tree uses: its schema (``/<name>@_here_``), ``sub: option`` entries of its subgroups, then ``_self_``.
    Any other defaults entry is a ValueError (a test compares this with Hydra's own compose)."""
    path = Path(conf) / group / f"{option}.yaml"
    body = OmegaConf.load(path)
    defaults = body.pop("defaults", ["_self_"])
    node = OmegaConf.create({})
    for entry in defaults:
        if entry == "_self_":
            node = OmegaConf.merge(node, body)
        elif isinstance(entry, str) and (group, _schema_name(entry)) in SCHEMAS:
            node = OmegaConf.merge(node, OmegaConf.structured(SCHEMAS[(group, _schema_name(entry))]))
        elif isinstance(entry, DictConfig) and len(entry) == 1:
            ((sub, choice),) = entry.items()
            node = OmegaConf.merge(node, {sub: _composed(conf, f"{group}/{sub}", str(choice))})
        else:
            raise ValueError(f"{path}: defaults entry {entry!r} is not one this loader reads")
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return container


def _schema_name(entry: str) -> str:
    """``/model_schema@_here_`` (a group file's reference to its schema) -> ``model_schema``."""
    return entry.removeprefix("/").removesuffix("@_here_")


def switches(variant: str) -> dict[str, dict[str, Any]]:
    """The :data:`SWITCHES` values of ``variant`` as its file composes them."""
    model = compose_model(variant)
    return {section: {key: model[section][key] for key in keys} for section, keys in SWITCHES.items()}


def variant_config(
    variant: str, sampler: Mapping[str, Any], attention: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``sampler`` and ``attention`` mappings with the switches of ``variant`` applied."""
    on = switches(variant)
    return {**dict(sampler), **on["sampler"]}, {**dict(attention), **on["attention"]}


def full_variant(conf: str | Path | None = None) -> str:
    """The full model: the one variant with every switch on (adaptive sampler, attention with
    importance modulation). ValueError unless exactly one variant is."""
    full = [name for name in variant_names(conf)
            if switches(name) == {"sampler": {"kind": "adaptive"}, "attention": {"enabled": True, "modulation": True}}]
    if len(full) != 1:
        raise ValueError(f"conf/model must hold exactly one variant with every switch on, found {full}")
    return full[0]


#: The variant names in report order, read from ``conf/model`` once at import.
VARIANTS: tuple[str, ...] = variant_names()
