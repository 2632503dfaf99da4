"""Search spaces in Hydra's override grammar, mapped to current Optuna distributions.

``choice(a, b)`` is categorical; ``range(1, 5)`` means what Hydra says (1, 2, 3, 4: the stop
is excluded); ``interval(a, b)`` is continuous and ``tag(log, interval(a, b))`` log-scaled.
Hydra reads the ends of ``interval`` as floats, so ``int(interval(a, b))`` is an integer
interval, and so is ``interval(a, b)`` with whole ends on a key the config schema types as
``int`` (:func:`fit_space_to_config`). Anything else is a fixed override passed to every
trial unchanged.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from omegaconf import Container, DictConfig, IntegerNode, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from anyq.errors import SpaceError
from anyq.sweeping.hydra_private import config_node


def distribution_for(override: Override) -> BaseDistribution:
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        assert start is not None and stop is not None
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{override.input_line}: empty range")
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(int(start), int(values[-1]), step=int(step))
        return FloatDistribution(float(start), float(values[-1]), step=float(step))
    if isinstance(value, IntervalSweep):
        assert value.start is not None and value.end is not None
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can search")


def parse_search_space(
    params: Mapping[str, Any] | None, arguments: Sequence[str]
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Split config ``params`` plus command-line arguments into a space and fixed overrides.

    Command-line arguments come last, so they override the sweep file's entries.
    """
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        if override.is_sweep_override():
            fixed.pop(key, None)
            space[key] = distribution_for(override)
        else:
            space.pop(key, None)
            fixed[key] = override.input_line
    return space, list(fixed.values())


def as_override(name: str, value: Any) -> str:
    """Render a sampled value so Hydra parses it back to the same type.

    Categorical strings come from Hydra's own encoder, so they are already escaped.
    """
    if isinstance(value, bool) or value is None:
        return f"{name}={'null' if value is None else str(value).lower()}"
    return f"{name}={value!r}" if isinstance(value, float) else f"{name}={value}"


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parent_link_overrides(parent_run_id: str, experiment: str) -> list[str]:
    """What every job of a study needs to nest its run under the study's parent run."""
    return [f"tracking.parent_run_id={parent_run_id}", f"tracking.experiment={quote(experiment)}"]


def grid_of(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every value of each (discrete) distribution, for Optuna's GridSampler."""
    grid: dict[str, list[Any]] = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = int(round((dist.high - dist.low) / dist.step))
            grid[name] = [dist.low + i * dist.step for i in range(n + 1)]
        else:
            raise ValueError(f"grid sampler needs discrete values for {name}")
    return grid


def _config_node(cfg: DictConfig, key: str) -> Any:
    """The node at a dotted key, or None when the config has no such key."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, Container) or leaf not in parent:
        return None
    return config_node(parent, leaf)


def fit_space_to_config(space: dict[str, BaseDistribution], cfg: DictConfig) -> dict[str, BaseDistribution]:
    """Check the space against the composed config before the study asks for a trial.

    A key the schema types ``int`` gets integer values: a float interval or range with whole
    ends becomes an :class:`IntDistribution`; any other float distribution on it raises. A key
    the config lacks raises too (``+key=...`` adds one). Config groups (``model=choice(...)``)
    pass unchanged. Raises :class:`SpaceError`, one line.
    """
    fitted: dict[str, BaseDistribution] = {}
    for name, dist in space.items():
        key = name.lstrip("+~")
        node = None if "/" in key else _config_node(cfg, key)
        if node is None and not name.startswith("+") and "/" not in key and key not in _group_choices(cfg):
            raise SpaceError(f"search space: {key} is not a key of the config (write +{key}=... to add one)")
        if isinstance(node, IntegerNode) and isinstance(dist, FloatDistribution):
            dist = _integer(key, dist)
        fitted[name] = dist
    return fitted


def _group_choices(cfg: DictConfig) -> set[str]:
    try:
        return set(cfg.hydra.runtime.choices.keys())
    except Exception:  # noqa: BLE001 - composed without Hydra's node
        return set()


def _integer(key: str, dist: FloatDistribution) -> IntDistribution:
    ends = [dist.low, dist.high] + ([] if dist.step is None else [dist.step])
    if all(float(v).is_integer() for v in ends):
        return IntDistribution(int(dist.low), int(dist.high), log=dist.log,
                               step=1 if dist.step is None else int(dist.step))
    raise SpaceError(f"search space: {key} is an integer, but its range {dist.low}..{dist.high} is not; "
                     f"use int(interval(a, b)) or range(a, b) with whole ends")


def _values(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """Every choice of a categorical, both ends of a range."""
    return {name: list(dist.choices) if isinstance(dist, CategoricalDistribution)
            else [dist.low, dist.high] for name, dist in space.items()}  # type: ignore[attr-defined]


def representative_overrides(space: dict[str, BaseDistribution]) -> list[list[str]]:
    """Overrides that together try every choice and both ends of every range, for a dry run
    of the composition (as many sets as the longest list of values)."""
    values = _values(space)
    rounds = max((len(v) for v in values.values()), default=0)
    return [[as_override(name, vals[min(i, len(vals) - 1)]) for name, vals in values.items()]
            for i in range(rounds)]


def corner_overrides(space: dict[str, BaseDistribution], limit: int) -> Optional[list[list[str]]]:
    """Every combination of the values :func:`representative_overrides` tries (every choice
    and both ends of every range, crossed), or None when there are more than ``limit``."""
    values = _values(space)
    if math.prod(len(v) for v in values.values()) > limit:
        return None
    return [[as_override(name, value) for name, value in zip(values, combination)]
            for combination in itertools.product(*values.values())]
