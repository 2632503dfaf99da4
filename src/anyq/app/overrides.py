"""The overrides of an ``anyq-train`` command line, checked before Hydra composes them.

Hydra reports a misspelled key, an unknown option of a config group or an override it cannot
parse only after it has loaded its plugins (and with them torch, Lightning and MLflow), in
several lines, offering the schema's own registrations (``model_schema``) as options and
``+key=`` for a key that merely has a typo. This check runs first, on the config tree
(``conf/``: the groups and their options) and the structured schema
(:class:`anyq.training.schema.AppConfig`: every key and its type), and turns the first bad
override into one line that names it, the closest valid key or option, and how to quote a
value Hydra would split. Hydra's own settings (``hydra.*``, ``hydra/…=``: the sweeper, its
sampler and pruner, the launcher) are checked by composing them with Hydra's compose API, which
loads Hydra's plugins, so only a command line that sets one pays for it. Deletions (``~key``)
and packaged group overrides (``group@pkg=``) are left to Hydra; sweep syntax (``seed=0,1``,
``choice(…)``, ``interval(…)``) is accepted with ``-m``.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from anyq.errors import OverrideError, closest, first_line
from anyq.sweeping.hydra_private import command_line
from anyq.training.schema import AppConfig


SEARCH_SPACE = "hydra.sweeper.params."


def check_command_line(argv: Sequence[str], conf: str | Path) -> None:
    """Check the overrides of ``argv`` (``sys.argv[1:]``) against the config tree ``conf``.

    Raises:
        OverrideError: the first override that does not parse, names no key of the schema, no
            option of its group, or holds a value its key's type refuses.
    Command lines Hydra reads in another way (``--help``, ``--shell-completion``, another
    ``--config-dir``/``--config-path``/``--config-name``, flags Hydra refuses) are left to Hydra.
    """
    if "--version" in argv:
        return
    args = command_line(argv)
    if args is None:  # a flag Hydra refuses; one it takes only before the overrides is said so here
        late = next((i for i, a in enumerate(argv) if a in ("-m", "--multirun") and i > 0 and "=" in argv[i - 1]), None)
        if late is not None:
            rest = " ".join(a for i, a in enumerate(argv) if i != late)
            raise OverrideError(f"{argv[late]} goes before the overrides: {argv[late]} {rest}")
        return
    if args.help or args.hydra_help or args.shell_completion:
        return
    if args.config_dir or args.config_path or args.config_name:
        return
    check_overrides(args.overrides, conf, multirun=is_multirun(args))


def is_multirun(args: argparse.Namespace) -> bool:
    """Whether Hydra's parsed command line ``args`` asks for a multirun (``-m``, ``--multirun``,
    ``hydra.mode=MULTIRUN``)."""
    return bool(args.multirun) or any(o.replace(" ", "") == "hydra.mode=MULTIRUN" for o in args.overrides)


def check_overrides(overrides: Sequence[str], conf: str | Path, *, multirun: bool = False) -> None:
    """Check each override in turn (see :func:`check_command_line`); OverrideError for the first bad one."""
    parser = OverridesParser.create()
    parsed: list[Override] = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as exc:
            raise OverrideError(f"override {text!r} cannot be parsed ({first_line(exc)}); {quoting(text)}") from None
    if any(o.key_or_group.startswith("hydra.searchpath") for o in parsed):
        return  # other config folders: their groups are Hydra's to find
    groups = config_groups(str(Path(conf).resolve()))
    for override in parsed:
        _check(override, groups, multirun)
    _check_hydra_settings(parsed, conf)


def _is_hydra(override: Override) -> bool:
    key = override.key_or_group
    return (key == "hydra" or key.startswith(("hydra.", "hydra/"))) and not key.startswith(SEARCH_SPACE)


def _check_hydra_settings(parsed: Sequence[Override], conf: str | Path) -> None:
    """Compose Hydra's part of the config with the command line's Hydra settings (and the plain
    group choices that bring Hydra settings, such as ``sweep=``); OverrideError naming the first
    setting that does not compose, with the closest option or key."""
    hydra_overrides = [o for o in parsed if _is_hydra(o) and not o.is_delete() and o.key_or_group != "hydra.mode"]
    if not hydra_overrides:
        return
    selections = [o.input_line for o in parsed if not _is_hydra(o) and "." not in o.key_or_group
                  and not o.is_sweep_override() and not o.is_delete() and o.input_line]
    if _compose_error(conf, [*selections, *(o.input_line for o in hydra_overrides)]) is None:
        return
    for override in hydra_overrides:
        exc = _compose_error(conf, [*selections, override.input_line])
        if exc is not None:
            raise OverrideError(_hydra_problem(override, exc, conf, selections)) from None


def _compose_error(conf: str | Path, overrides: list[str]) -> Optional[Exception]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(conf).resolve()), version_base="1.3"):
            compose("config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        return exc
    finally:
        GlobalHydra.instance().clear()
    return None


def _hydra_problem(override: Override, exc: Exception, conf: str | Path, selections: list[str]) -> str:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException

    text, key = override.input_line, override.key_or_group
    if isinstance(exc, MissingConfigException) and "/" in key:
        option = str(override.value())
        options = [o for o in (exc.options or []) if not o.endswith("_schema")]
        near = closest(option, options)
        hint = f"did you mean {near}? " if near else ""
        return f"override {text!r}: {option!r} is not an option of {key} ({hint}options: {', '.join(sorted(options))})"
    if "." in key:
        parent, _, leaf = key.rpartition(".")
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(Path(conf).resolve()), version_base="1.3"):
                node = OmegaConf.select(compose("config", overrides=selections, return_hydra_config=True), parent)
        finally:
            GlobalHydra.instance().clear()
        if isinstance(node, DictConfig) and leaf not in node:
            near = closest(leaf, node.keys())
            hint = f"did you mean {parent}.{near}?" if near else f"keys: {', '.join(sorted(map(str, node.keys())))}"
            return f"override {text!r}: no key {leaf!r} in {parent}; {hint}"
    return f"override {text!r} does not compose: {first_line(exc)}"


def quoting(text: str) -> str:
    """How to pass ``text``'s value as one string (Hydra splits on ``=``, ``,``, brackets, quotes).
    Through the Makefile's ``ARGS`` (``ANYQ_ARGS_FROM_MAKE`` set) the recipe's shell takes one
    more level of quotes, so the hint is the ``ARGS`` that reaches the app with them."""
    key, sep, value = text.partition("=")
    if not sep:
        return "an override is key=value, +key=value or ~key"
    inner, outer = ("'", '"') if '"' in value else ('"', "'")
    override = f"{key}={inner}{value}{inner}"
    if os.environ.get("ANYQ_ARGS_FROM_MAKE"):
        return "quote the value, once for make's shell too: ARGS=\"" + shlex.quote(override).replace('"', '\\"') + '"'
    return f"quote the value: {outer}{override}{outer}"


@cache
def config_groups(conf: str) -> dict[str, tuple[str, ...]]:
    """Each config group of the tree (``model``, ``model/sampler``, ...) and its options: the
    YAML files in its folder. The schema's registrations are not files, so never options."""
    root = Path(conf)
    groups: dict[str, tuple[str, ...]] = {}
    for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
        group = folder.relative_to(root).as_posix()
        if group == "hydra" or group.startswith("hydra/"):
            continue
        groups[group] = tuple(sorted(p.stem for p in folder.glob("*.yaml")))
    for path in (root / "sweep", root / "ablation"):  # symlinked folders: rglob does not follow them
        if path.is_dir():
            groups[path.name] = tuple(sorted(p.stem for p in path.glob("*.yaml")))
    return groups


@cache
def _schema() -> DictConfig:
    return OmegaConf.structured(AppConfig)


def _values(override: Override) -> Optional[list[Any]]:
    """The plain values an override sets: one, each of a choice sweep; None for ranges and globs."""
    if not override.is_sweep_override():
        return [override.value()]
    value = override.value()
    return list(value.list) if isinstance(value, ChoiceSweep) else None


def _check(override: Override, groups: dict[str, tuple[str, ...]], multirun: bool) -> None:
    key = override.key_or_group
    text = override.input_line or key
    if key.startswith(SEARCH_SPACE) and not override.is_delete():
        value = override.value()  # "choice(2,4)" quoted, or a sweep Hydra has already read
        if isinstance(value, ChoiceSweep) and value.simple_form:  # Hydra refuses `a,b` on its own settings
            raise OverrideError(f"override {text!r}: a search-space entry is one string the sweeper reads; "
                                f"{quoting(text)}")
        dimension = (f"{key.removeprefix(SEARCH_SPACE)}={value}" if isinstance(value, str)
                     else text.removeprefix("+").removeprefix(SEARCH_SPACE))
        _check_search_space(text, dimension, groups)
        return
    if key == "hydra" or key.startswith(("hydra.", "hydra/")) or override.is_delete() or override.package:
        return
    if override.is_sweep_override() and not multirun:
        raise OverrideError(f"override {text!r} is a sweep over several values: add -m to run each, "
                            f"or {quoting(text)}")
    if key in groups:
        _check_choice(text, key, groups[key], _values(override))
        return
    if "/" in key:
        near = closest(key, groups)
        hint = f"; did you mean {near}?" if near else f"; groups: {', '.join(sorted(groups))}"
        raise OverrideError(f"override {text!r}: no config group {key!r}{hint}")
    declared = _walk(text, key, groups)
    if override.is_add() and not override.is_force_add() and declared:
        raise OverrideError(f"override {text!r}: {key} is already in the config; set it without the '+'")
    for value in _values(override) or []:
        _check_type(text, key, value, groups)


def _check_search_space(text: str, dimension_text: str, groups: dict[str, tuple[str, ...]]) -> None:
    """A dimension of the sweep's search space (``hydra.sweeper.params.<key>=<sweep>``) names a
    key or group like an override; what the engine checks beyond that stays the engine's."""
    try:
        (dimension,) = OverridesParser.create().parse_overrides([dimension_text])
    except (HydraException, ValueError):
        return  # the engine reads its own vocabulary and says what it cannot
    try:
        _check(dimension, groups, multirun=True)
    except OverrideError as exc:
        raise OverrideError(f"override {text!r}: search space: {str(exc).split(': ', 1)[1]}") from None


def _check_choice(text: str, group: str, options: tuple[str, ...], values: Optional[list[Any]]) -> None:
    for value in values or []:
        if value is None or (isinstance(value, str) and value in options):
            continue
        near = closest(str(value), options) if isinstance(value, str) else None
        hint = f"did you mean {near}? " if near else ""
        raise OverrideError(f"override {text!r}: {value!r} is not an option of {group} "
                            f"({hint}options: {', '.join(options)})")


def _walk(text: str, key: str, groups: dict[str, tuple[str, ...]]) -> bool:
    """Whether dotted ``key`` is a key the schema declares (False for one below an open
    mapping, a list or ``Any``: those keys are the user's). OverrideError naming the first
    part that is no key, with the closest one."""
    node: Any = _schema()
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        if isinstance(node, ListConfig) or (isinstance(node, DictConfig) and not _is_structured(node)):
            return False  # a list, a free mapping (tracking.tags) or Any
        if not isinstance(node, DictConfig):
            if node is None and i > 0:
                return False  # an optional section left empty: its keys are not known here
            raise OverrideError(f"override {text!r}: {where} is a value, not a section")
        if part not in node:
            candidates = list(node.keys()) + ([g for g in groups if "/" not in g] if i == 0 else [])
            near = closest(part, candidates)
            inside = f" in {where}" if where else ""
            hint = f"; did you mean {'.'.join([*parts[:i], near]) if near not in groups else near}?" if near else ""
            if not near and text.startswith("+"):  # '+' adds keys only to open sections (tracking.tags)
                hint = f"; the schema declares every key{inside or ' at the top'}, so '+' cannot add one here"
            raise OverrideError(f"override {text!r}: no key {part!r}{inside}{hint}")
        node = None if OmegaConf.is_missing(node, part) else node[part]
    return True


def _is_structured(node: DictConfig) -> bool:
    object_type = OmegaConf.get_type(node)
    return object_type is not None and is_dataclass(object_type)


def _check_type(text: str, key: str, value: Any, groups: dict[str, tuple[str, ...]]) -> None:
    """Set ``value`` on a copy of the schema as Hydra would (``OmegaConf.update``, merging)."""
    trial = _schema().copy()
    try:
        OmegaConf.update(trial, key, value, merge=True)
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        group = key.replace(".", "/")
        hint = f"; to choose a config of group {group}, write {group}={value}" if group in groups else ""
        raise OverrideError(f"override {text!r}: {first_line(exc)}{hint}") from None


def confirm_store(argv: Sequence[str], conf: str | Path) -> Optional[str]:
    """The tracking URI a confirm command (``confirm.study=<sweep>``) reads its sweep from, or
    None for any other command line.

    Read from the same files Hydra composes (``conf/config.yaml``'s ``paths`` and ``tracking``
    choices, their files, the command line's ``paths.*`` and ``tracking.*``), so that a missing
    store is reported before Hydra creates the run's output folder under ``paths.root``.

    Raises:
        OverrideError: a confirm command line that asks for a multirun (``-m``, ``--multirun``,
            ``hydra.mode=MULTIRUN``): a confirm study is one job that trains its seeds itself,
            and Hydra's sweeper would run it as a sweep's trial instead.
    """
    args = command_line(argv)
    if args is None or args.config_dir or args.config_path or args.config_name:
        return None
    overrides = [o for o in OverridesParser.create().parse_overrides(args.overrides)
                 if not o.is_delete() and not o.package]
    study = next((o for o in overrides if o.key_or_group == "confirm.study"), None)
    if study is None or not (study.is_sweep_override() or study.value()):
        return None
    if is_multirun(args):
        raise OverrideError("a confirm study is one job that trains its seeds itself (--seeds N, confirm.seeds=N); "
                            "it takes no -m/--multirun (hydra.mode=MULTIRUN)")
    if study.is_sweep_override():
        return None  # refused by check_command_line
    values = {o.key_or_group: o.value() for o in overrides if not o.is_sweep_override()}
    root = Path(conf)
    defaults = OmegaConf.load(root / "config.yaml").get("defaults", [])
    # unresolved: a choice may interpolate another group's (``optional data_recipe: ${data}``)
    chosen = {k: v for entry in defaults if isinstance(entry, DictConfig)
              for k, v in OmegaConf.to_container(entry, resolve=False).items()}
    sections = {}
    for group in ("paths", "tracking"):
        node = OmegaConf.load(root / group / f"{values.get(group, chosen.get(group))}.yaml")
        node.pop("defaults", None)
        sections[group] = node
    cfg = OmegaConf.create(sections)
    for key, value in values.items():
        if key.startswith(("paths.", "tracking.")):
            OmegaConf.update(cfg, key, value, merge=True)
    from anyq.tracking.store import resolve_tracking_uri  # loads MLflow: only for a confirm command

    return resolve_tracking_uri(cfg.tracking.get("tracking_uri"), str(cfg.paths.mlruns))
