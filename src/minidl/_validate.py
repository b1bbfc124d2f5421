"""Checks of hyper-parameters, shared by optimizers, schedulers and data sets."""

from __future__ import annotations

import math

__all__ = ["check_int", "check_real"]


def check_real(
    where: str,
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float after checking it is a finite real number in the given range.

    The message names the caller, the argument, the value and the allowed range, e.g.
    ``SGD: momentum must be in [0, 1), got 1.5``.
    """
    # An unbounded side is open: the value must be finite.
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    bounds = f"{left}{_fmt(low, '-inf')}, {_fmt(high, 'inf')}{right}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be a finite number in {bounds}, got {value!r}")
    number = float(value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        raise ValueError(f"{where}: {name} must be in {bounds}, got {value!r}")
    return number


def check_int(where: str, name: str, value: object, *, low: int = 1) -> int:
    """Return ``value`` after checking it is an integer ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{where}: {name} must be an integer >= {low}, got {value!r}")
    return value


def _fmt(bound: float | None, default: str) -> str:
    if bound is None:
        return default
    return f"{bound:g}"
