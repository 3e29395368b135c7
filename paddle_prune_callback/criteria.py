"""Importance scores: the lower a weight's score, the sooner it is pruned.

Each criterion maps a parameter's weights ``w`` and the mean of its squared gradients ``g2`` (both
float32 numpy arrays of the parameter's shape) to a new array of non-negative scores.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np


class Criterion(NamedTuple):
    name: str
    needs_gradients: bool
    score: Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]
    formula: str


def _magnitude(w: np.ndarray, g2: np.ndarray | None) -> np.ndarray:
    return np.abs(w)


def _gradient(w: np.ndarray, g2: np.ndarray | None) -> np.ndarray:
    return np.array(g2, dtype=np.float32, copy=True)


def _fisher(w: np.ndarray, g2: np.ndarray | None) -> np.ndarray:
    # Optimal Brain Damage with the empirical Fisher as the Hessian diagonal: the estimated increase of
    # the loss when the weight is set to zero.
    scores = np.multiply(w, w, dtype=np.float32)
    scores *= g2
    scores *= 0.5
    return scores


CRITERIA = {
    "magnitude": Criterion("magnitude", False, _magnitude, "|w|"),
    "gradient": Criterion("gradient", True, _gradient, "mean(g²)"),
    "fisher": Criterion("fisher", True, _fisher, "½·mean(g²)·w²"),
}
