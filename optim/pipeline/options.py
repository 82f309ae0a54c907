"""How a configuration key is declared: ``Option`` (kind, default, bounds, help) and
``ConfigError``, the one error every invalid key raises.

The run's keys are declared in ``optim.pipeline.config``; each stage type declares its own keys
beside its function in ``optim.pipeline.stages``. Tests:
``tests/optim/pipeline/test_pipeline_config.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["ConfigError", "Option"]

_NUMBER = (int, float)
_KIND_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false",
               "str": "a string", "floats": "a list of numbers", "strs": "a list of strings"}


class ConfigError(ValueError):
    """An invalid configuration; the message starts with the offending key."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Option:
    """One configuration key: its ``kind`` (``int``, ``float``, ``bool``, ``str``, ``floats``,
    ``strs``), ``default`` (``None``: optional, absent by default), one-line ``help``, allowed
    ``choices``, numeric bounds ``low``/``high`` (inclusive unless ``open`` names the side:
    ``"low"``, ``"high"`` or ``"both"``) and a further ``check`` (``value -> reason or None``)
    for what bounds cannot say, such as the order of a list."""

    kind: str
    default: Any
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    open: str = ""
    check: Callable[[Any], str | None] | None = None

    def __post_init__(self):
        if self.kind not in _KIND_NAMES:
            raise ValueError(f"kind must be one of {', '.join(_KIND_NAMES)}, got {self.kind!r}")
        if self.open not in ("", "low", "high", "both"):
            raise ValueError(f"open must be '', 'low', 'high' or 'both', got {self.open!r}")

    def bounds(self) -> str:
        """The allowed range as text: ``>= 1``, ``> 0``, ``[0, 1)``; empty without bounds."""
        low_open, high_open = self.open in ("low", "both"), self.open in ("high", "both")
        if self.low is None and self.high is None:
            return ""
        if self.high is None:
            return f"{'>' if low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if high_open else '<='} {self.high:g}"
        return f"{'(' if low_open else '['}{self.low:g}, {self.high:g}{')' if high_open else ']'}"

    def _within(self, value: float) -> bool:
        low_open, high_open = self.open in ("low", "both"), self.open in ("high", "both")
        above = self.low is None or (value > self.low if low_open else value >= self.low)
        below = self.high is None or (value < self.high if high_open else value <= self.high)
        return above and below

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed for this key, or ``None`` if it is: the kind, the
        choices, the bounds (of a number, or of each number of a list), then ``check``."""
        if not self._kind_ok(value):
            return f"must be {_KIND_NAMES[self.kind]}, got {value!r} ({type(value).__name__})"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        numbers = value if self.kind == "floats" else [value] if self.kind in ("int", "float") \
            else []
        if any(not self._within(v) for v in numbers):
            bounds = self.bounds()
            verb = "must be" if bounds[0] in "<>" else "must lie in"
            subject = "every value " if self.kind == "floats" else ""
            return f"{subject}{verb} {bounds}, got {value!r}"
        return self.check(value) if self.check is not None else None

    def _kind_ok(self, value: Any) -> bool:
        if self.kind == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if self.kind == "float":
            return _is_number(value)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        if self.kind == "floats":
            return isinstance(value, list) and all(_is_number(v) for v in value)
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
