"""Small argument validators shared by the schedule, the engine and the callback.

Each raises ``TypeError`` or ``ValueError`` naming the argument, echoing the value and saying the fix.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence


def check_fraction(name: str, value: Any) -> float:
    """A real number in [0, 1): a sparsity."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a number in [0, 1), got {value!r} of type {type(value).__name__}; "
            f"pass a float such as 0.9."
        )
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be in [0, 1), got {value!r}; a sparsity of 1.0 would remove every weight "
            f"(at least one weight per parameter is always kept), pass e.g. 0.9."
        )
    return value


def check_threshold(value: Any) -> float:
    """A finite, positive real number: the score below which weights are pruned."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`threshold` must be a positive number, got {value!r} of type {type(value).__name__}."
        )
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(
            f"`threshold` must be a finite number > 0 (scores are >= 0), got {value!r}."
        )
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")
    return value


def check_epochs(value: Any, name: str = "prune_epochs") -> tuple[int, ...]:
    """A non-empty, strictly increasing sequence of non-negative indices (epochs, or steps for
    ``name="prune_steps"``); a ``range`` works as it is."""
    unit = "step" if name == "prune_steps" else "epoch"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        example = "range(200, 6000, 200)" if unit == "step" else "[1, 3, 5]"
        raise TypeError(f"`{name}` must be a list of 0-based {unit} indices such as {example}, got {value!r}.")
    if len(value) == 0:
        raise ValueError(f"`{name}` is empty; list at least one 0-based {unit} index, e.g. [0].")
    shown = list(value) if len(value) <= 20 else value
    for e in value:
        if isinstance(e, bool) or not isinstance(e, numbers.Integral):
            raise TypeError(f"`{name}` must hold integers, got {e!r} in {shown!r}.")
        if e < 0:
            raise ValueError(f"`{name}` must be >= 0 ({unit}s are 0-based), got {e} in {shown!r}.")
    indices = [int(e) for e in value]
    if len(set(indices)) != len(indices):
        raise ValueError(f"`{name}` has duplicates: {indices!r}; list each {unit} once.")
    if indices != sorted(indices):
        raise ValueError(f"`{name}` must be in increasing order, got {indices!r}; pass {sorted(indices)!r}.")
    return tuple(indices)


def check_verbose(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`verbose` must be 0 (silent), 1 or 2, got {value!r}.")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return value
