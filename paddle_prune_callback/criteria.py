"""Importance scores: the lower a weight's score, the sooner it is pruned.

Each criterion maps a parameter's weights ``w`` and the mean of its squared gradients ``g2`` (float32
Paddle tensors of the parameter's shape, on its device; ``g2`` is None for criteria that need no
gradients) to a NEW float32 tensor of non-negative scores. The inputs are never changed in place.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np
import paddle


class Criterion(NamedTuple):
    name: str
    needs_gradients: bool
    score: Callable[[paddle.Tensor, Optional[paddle.Tensor]], paddle.Tensor]
    formula: str
    #: The same scores in numpy, written into ``out`` (float32 arrays: zero-copy views of CPU tensors), with
    #: the same operations in the same order, so bitwise equal; None: the engine uses ``score`` everywhere.
    host_score: Optional[Callable[[np.ndarray, Optional[np.ndarray], np.ndarray], None]] = None


def _magnitude(w: paddle.Tensor, g2: Optional[paddle.Tensor]) -> paddle.Tensor:
    return paddle.abs(w)


def _gradient(w: paddle.Tensor, g2: Optional[paddle.Tensor]) -> paddle.Tensor:
    return g2.clone()


def _fisher(w: paddle.Tensor, g2: Optional[paddle.Tensor]) -> paddle.Tensor:
    # Optimal Brain Damage with the empirical Fisher as the Hessian diagonal: the estimated increase of
    # the loss when the weight is set to zero.
    return w * w * g2 * 0.5


def _hybrid(w: paddle.Tensor, g2: Optional[paddle.Tensor]) -> paddle.Tensor:
    # The square of the geometric mean of magnitude² and the OBD saliency: ranks like |w|·F^¼. Within a
    # layer it follows |w| more than OBD does; across layers it budgets between magnitude, which starves
    # layers of large fan-in (small weights), and OBD, which over-prunes the convolutions.
    return w * w * paddle.sqrt(g2)


def _magnitude_host(w: np.ndarray, g2: Optional[np.ndarray], out: np.ndarray) -> None:
    np.abs(w, out=out)


def _gradient_host(w: np.ndarray, g2: Optional[np.ndarray], out: np.ndarray) -> None:
    np.copyto(out, g2)


def _fisher_host(w: np.ndarray, g2: Optional[np.ndarray], out: np.ndarray) -> None:
    np.multiply(w, w, out=out)
    out *= g2
    out *= np.float32(0.5)


CRITERIA = {
    "magnitude": Criterion("magnitude", False, _magnitude, "|w|", _magnitude_host),
    "gradient": Criterion("gradient", True, _gradient, "mean(g²)", _gradient_host),
    "fisher": Criterion("fisher", True, _fisher, "½·mean(g²)·w²", _fisher_host),
    # No numpy twin: Paddle's CPU sqrt is not numpy's (39 % of 1M random float32 inputs differ in the last
    # bit, measured), and the scores must be the same on every path.
    "hybrid": Criterion("hybrid", True, _hybrid, "w²·sqrt(mean(g²))"),
}
