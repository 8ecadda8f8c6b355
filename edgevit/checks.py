"""Checks of numbers that come from users and files: command-line flags, configs, metadata.

JSON and argparse hand over whatever they were given: `4.0` where a count belongs, `true` (a bool is
an int in Python), NaN and infinity. A value that passes here is the type the code needs and inside
its range, so nothing downstream divides by zero, loops a billion times or trains on NaN.
"""

from __future__ import annotations

import math

from edgevit.errors import EdgeViTError


def is_int(value) -> bool:
    """A whole number: an int that is not a bool (JSON's 4.0 and true are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite(value) -> bool:
    """A finite real number (int or float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def checked_int(name: str, value, low: int, high: int | None = None) -> int:
    """`value` if it is a whole number in [low, high]; else one error naming `name` and the range."""
    if not is_int(value) or value < low or (high is not None and value > high):
        allowed = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise EdgeViTError(f"{name} must be a whole number {allowed}, not {value!r}")
    return value


def checked_float(
    name: str, value, low: float | None = None, high: float | None = None, *, above: bool = False, below: bool = False
) -> float:
    """`value` as a float if it is finite and within the bounds given (`above`/`below`: strictly);
    else one error naming `name` and the interval."""
    ok = is_finite(value)
    if ok and low is not None:
        ok = value > low if above else value >= low
    if ok and high is not None:
        ok = value < high if below else value <= high
    if not ok:
        raise EdgeViTError(f"{name} must be a finite number{_interval(low, high, above, below)}, not {value!r}")
    return float(value)


def _interval(low: float | None, high: float | None, above: bool, below: bool) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'above' if above else 'of at least'} {low:g}"
    if low is None:
        return f" {'below' if below else 'of at most'} {high:g}"
    return f" in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"
