"""Search spaces in Hydra's override grammar, mapped to current Optuna distributions.

``choice(a, b)`` is categorical; ``range(1, 5)`` means what Hydra says (1, 2, 3, 4: the stop
is excluded); ``interval(a, b)`` is continuous (integer if both ends are integers) and
``tag(log, interval(a, b))`` log-scaled. Anything else is a fixed override passed to every
trial unchanged.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


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
