"""The range of every numeric setting, declared once beside its default.

A setting's range lives in its dataclass field (``lr: float = ranged(5e-4, gt=0)``), and
:func:`check_settings` walks a config against its dataclass, nested ones included, so a new
knob is checked by declaring it. Whatever its declared range, a float setting is never NaN
or infinite (a NaN compares false with every bound and would pass a hand-written ``< 0``
test). Below every other package, so that the model's, the schema's and the sweep
engine's settings all use it.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Optional

from anyq.errors import SettingError

RANGE = "anyq.range"  # the field metadata key


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``ge``/``gt`` below, ``le``/``lt`` above (None: unbounded), plus
    ``also``, values outside the bounds that mean something (``{-1: "no limit"}``)."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    also: Mapping[float, str] = field(default_factory=dict)

    def holds(self, value: float) -> bool:
        if value in self.also:
            return True
        if not math.isfinite(value):
            return False
        return not ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
                    or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt))

    def describe(self) -> str:
        """``in [0, 1)``, ``> 0``, ``>= 1, or -1 for no limit``: how the bounds read in an error."""
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if low is not None and high is not None:
            text = (f"in {'[' if self.ge is not None else '('}{_number(low)}, "
                    f"{_number(high)}{']' if self.le is not None else ')'}")
        elif low is not None:
            text = f"{'>=' if self.ge is not None else '>'} {_number(low)}"
        elif high is not None:
            text = f"{'<=' if self.le is not None else '<'} {_number(high)}"
        else:
            text = "a finite number"
        extra = "".join(f", or {_number(v)} for {meaning}" for v, meaning in self.also.items())
        return text + extra


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else str(value)


def ranged(default: Any = MISSING, *, ge: Optional[float] = None, gt: Optional[float] = None,
           le: Optional[float] = None, lt: Optional[float] = None,
           also: Optional[Mapping[float, str]] = None, factory: Any = MISSING) -> Any:
    """A dataclass field with ``default`` (or ``factory()``, for a list of numbers whose every
    item is bounded) whose value must lie in the given bounds."""
    bounds = Range(ge=ge, gt=gt, le=le, lt=lt, also=dict(also or {}))
    return field(default=default, default_factory=factory, metadata={RANGE: bounds})


def declared_range(f: Field[Any]) -> Optional[Range]:
    return f.metadata.get(RANGE)


def check_choice(key: str, value: Any, allowed: Sequence[str]) -> None:
    """A setting that names one of a fixed set of options.

    Raises:
        SettingError: ``value`` is not in ``allowed`` (one line naming ``key`` and the options).
    """
    if value not in allowed:
        raise SettingError(f"{key}={value!r} must be one of {list(allowed)}", (key,))


def check_settings(cls: type, values: Any, prefix: str = "", only: Optional[set[str]] = None) -> None:
    """Every field of dataclass ``cls`` in ``values`` (a mapping, a DictConfig or an instance)
    lies in its declared range, and no float is NaN or infinite; nested dataclasses are
    walked. ``only`` limits the check to these field names (the rest may be absent).

    Raises:
        SettingError: naming the first setting out of range (``prefix`` + field name).
    """
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        kind = _unwrap_optional(hints[f.name])
        if kind is bool or (isinstance(kind, type) and issubclass(kind, str)) or typing.get_origin(kind) is dict:
            continue  # not a number: typed by the schema, choices checked where they are read
        value = values.get(f.name) if isinstance(values, Mapping) else getattr(values, f.name, None)
        key = f"{prefix}{f.name}"
        if is_dataclass(kind):
            if value is not None:
                check_settings(kind, value, f"{key}.")
            continue
        for item in _numbers(value):
            bounds = declared_range(f)
            if bounds is not None and not bounds.holds(item):
                finite = "" if math.isfinite(item) else "a finite number "
                raise SettingError(f"{key}={_shown(value)} must be {finite}{bounds.describe()}", (key,))
            if isinstance(item, float) and not math.isfinite(item):
                raise SettingError(f"{key}={_shown(value)} must be a finite number", (key,))


def _unwrap_optional(kind: Any) -> Any:
    if typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else kind
    return kind


def _numbers(value: Any) -> list[float]:
    """The numbers a setting holds: itself, or the items of a list (``coverage``); bools and
    text are not numbers."""
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return []


def _shown(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    try:
        return str(list(value))
    except TypeError:
        return str(value)
