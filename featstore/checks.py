"""Argument checks shared by every part of featstore: each raises ValueError
naming the argument and the bad value, and returns the value normalised."""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["non_negative_int", "one_of", "positive_int", "positive_number"]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int if it is an integer >= 1.

    Raises:
        ValueError: naming ``name`` and the bad value.
    """
    return _int_from(name, value, 1, "a positive integer")


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an int if it is an integer >= 0 (a count or an index).

    Raises:
        ValueError: naming ``name`` and the bad value.
    """
    return _int_from(name, value, 0, "a non-negative integer")


def _int_from(name: str, value: Any, low: int, what: str) -> int:
    if not _is_int(value) or value < low:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def one_of(name: str, value: Any, choices: Any) -> Any:
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: naming ``name``, the bad value and the choices.
    """
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not one of {sorted(choices)}")
    return value


def positive_number(name: str, value: Any, *, allow_none: bool = False, unit: str = "") -> float | None:
    """``value`` as a float if it is a finite number > 0 (or None, when ``allow_none``).

    Raises:
        ValueError: naming ``name``, the unit and the bad value.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        what = f"a positive finite number{' of ' + unit if unit else ''}{' or None' if allow_none else ''}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)
