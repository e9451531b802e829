"""Up-front checks of config values: each failure is a ``ConfigValueError`` naming the option and the value."""

from __future__ import annotations

import math
from typing import Any, Iterable

from shala_pl.errors import ConfigValueError


def require(ok: bool, option: str, expected: str, value: Any, note: str = "") -> None:
    if not ok:
        raise ConfigValueError(f"{option} must be {expected}, got {value!r}" + (f" ({note})" if note else ""))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(option: str, value: Any) -> None:
    require(_is_int(value) and value > 0, option, "a positive integer", value)


def non_negative_int(option: str, value: Any) -> None:
    require(_is_int(value) and value >= 0, option, "an integer >= 0", value)


def positive(option: str, value: Any, note: str = "") -> None:
    require(_is_number(value) and value > 0, option, "a number > 0", value, note)


def non_negative(option: str, value: Any) -> None:
    require(_is_number(value) and value >= 0, option, "a number >= 0", value)


def probability(option: str, value: Any) -> None:
    """In (0, 1]."""
    require(_is_number(value) and 0 < value <= 1, option, "in (0, 1]", value)


def fraction_below_one(option: str, value: Any) -> None:
    """In [0, 1)."""
    require(_is_number(value) and 0 <= value < 1, option, "in [0, 1)", value)


def one_of(option: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    require(value in choices, option, f"one of {', '.join(choices)}", value)
