"""Exact selection of the k lowest scores in Paddle ops, on the scores' device.

The same algorithm as :mod:`~paddle_prune_callback.selection` (read its docstring), with every pass over
the scores done by Paddle ops where the scores live: a sample brackets the k-th value, one pass counts the
scores below / at the bracket's ends and collects the few strictly inside, a sort of those candidates gives
the exact cut, and one pass builds the masks, pruning exactly k with ties broken by position (a running
count of the ties at the cut). Only scalars (counts and the cut) reach the host. Peak extra memory is one
parameter's scores, its tie count (int32) and the candidates.

Equality is tested as ``v <= s <= v``: Paddle's ``==`` on floats treats values within the smallest normal
float of each other as equal (a subnormal equals 0), while its ``<`` and ``>`` are exact, and counts that
mix the two would not add up.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import paddle

from .selection import SAMPLE_SIZE, bracket_indices

DeviceScoreFn = Callable[[], paddle.Tensor]
DeviceSampleFn = Callable[[np.ndarray], paddle.Tensor]


def select_lowest_on_device(score_fns: Sequence[DeviceScoreFn], sizes: Sequence[int], k: int,
                            sample_size: int = SAMPLE_SIZE, seed: int = 0,
                            samplers: Optional[Sequence[DeviceSampleFn]] = None) -> list[paddle.Tensor]:
    """Keep-masks (flat bool tensors, on each score's device) that prune exactly the ``k`` lowest scores.

    Args:
        score_fns: one callable per array, returning its scores as a flat float32 tensor; called up to
            three times each and must return the same values every time.
        sizes, k, sample_size, seed: as in :func:`~paddle_prune_callback.selection.select_lowest`.
        samplers: optional, one callable per array returning its scores (a tensor) at the given indices.

    Ties at the cut are broken by position: earlier arrays, then earlier indices, are pruned first.
    """
    total = int(sum(sizes))
    if not 0 <= k <= total:
        raise ValueError(f"k must be in [0, {total}], got {k}.")
    with paddle.no_grad():
        if k == 0 or k == total:
            return [paddle.full_like(fn(), k == 0, dtype="bool") for fn in score_fns]
        found = None
        if total > 4 * sample_size:
            if samplers is None:
                samplers = [lambda idx, fn=fn: paddle.gather(fn(), paddle.to_tensor(idx)) for fn in score_fns]
            lo, hi = _bracket(samplers, sizes, k, total, sample_size, seed)
            found = _kth(k, lo, hi, *_count_and_collect(score_fns, lo, hi))
        if found is None:
            lo = min(float(fn().min()) for fn in score_fns)
            found = _kth(k, lo, math.inf, *_count_and_collect(score_fns, lo, math.inf))
        if found is None:
            raise ValueError("scores must not be NaN.")
        cut, smaller = found
        ties_to_prune = k - smaller
        masks = []
        for fn in score_fns:
            scores = fn()
            keep = scores > cut
            if ties_to_prune > 0:
                ties = _equal(scores, cut)
                n_ties = int(ties.sum())
                if n_ties:
                    # The first `ties_to_prune` ties in order are pruned; the later ones are kept.
                    later = paddle.cumsum(ties.astype("int32")) > ties_to_prune
                    keep = paddle.logical_or(keep, paddle.logical_and(ties, later))
                    ties_to_prune -= min(ties_to_prune, n_ties)
            else:
                keep = scores >= cut
            masks.append(keep)
        return masks


def _equal(scores: paddle.Tensor, value: float) -> paddle.Tensor:
    return paddle.logical_and(scores >= value, scores <= value)


def _bracket(samplers, sizes, k, total, sample_size, seed) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    parts = []
    for sample, n in zip(samplers, sizes):
        m = max(1, round(sample_size * n / total))
        parts.append(sample(rng.integers(0, n, size=m)).astype("float32"))
    sample = paddle.sort(paddle.concat(parts))
    m = int(sample.shape[0])
    lo_i, hi_i = bracket_indices(m, k, total)
    lo = float(sample[lo_i]) if lo_i >= 0 else -math.inf
    hi = float(sample[hi_i]) if hi_i < m else math.inf
    return lo, hi


def _count_and_collect(score_fns, lo: float, hi: float) -> tuple[int, int, paddle.Tensor, int]:
    below = at_lo = at_hi = 0
    parts = []
    for fn in score_fns:
        scores = fn()
        below += int((scores < lo).sum())
        at_lo += int(_equal(scores, lo).sum())
        if hi > lo:
            at_hi += int(_equal(scores, hi).sum())
        inside = paddle.masked_select(scores, paddle.logical_and(scores > lo, scores < hi))
        parts.append(inside)
    return below, at_lo, paddle.concat(parts), at_hi


def _kth(k: int, lo: float, hi: float, below: int, at_lo: int, inside: paddle.Tensor, at_hi: int):
    if k <= below:
        return None
    if k <= below + at_lo:
        return lo, below
    rank = k - below - at_lo
    size = int(inside.shape[0])
    if rank <= size:
        cut = float(paddle.sort(inside)[rank - 1])
        return cut, below + at_lo + int((inside < cut).sum())
    if rank <= size + at_hi:
        return hi, below + at_lo + size
    return None
