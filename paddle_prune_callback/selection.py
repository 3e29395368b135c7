"""Exact selection of the k lowest scores across many arrays, without sorting them.

Scores are produced on demand by callables (one per parameter), so no concatenated copy of all
scores is ever held: peak extra memory is one parameter's scores plus the candidates near the cut.

1. A random sample of the scores brackets the k-th smallest value between ``lo`` and ``hi``. Given
   samplers, only the sampled scores are computed.
2. One pass counts the scores below ``lo``, equal to ``lo`` and equal to ``hi``, and keeps the few
   strictly between; ``np.partition`` on those candidates gives the exact k-th value ``t``. Ties are
   counted, not kept, so a large block of equal scores at the cut (exact zeros of g² for inputs that
   are always zero, already-pruned weights) costs no memory, nor time in ``np.partition``, which slows
   down tenfold on such blocks. Without a sample (small totals), or if the sample's bracket missed
   (rare), the bracket is [lowest score, +inf], which is exact whatever the data.
3. One pass builds the masks: scores above ``t`` are kept, scores below are pruned, and of the scores
   equal to ``t`` just enough are pruned, the first in array order, to prune exactly ``k``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np

ScoreFn = Callable[[], np.ndarray]
SampleFn = Callable[[np.ndarray], np.ndarray]

SAMPLE_SIZE = 1 << 16


def select_lowest(score_fns: Sequence[ScoreFn], sizes: Sequence[int], k: int,
                  sample_size: int = SAMPLE_SIZE, seed: int = 0,
                  samplers: Optional[Sequence[SampleFn]] = None) -> list[np.ndarray]:
    """Keep-masks (flat bool arrays) that prune exactly the ``k`` lowest scores of all arrays together.

    Args:
        score_fns: one callable per array, returning its scores as a flat float array; called up to
            three times each and must return the same values every time.
        sizes: the length of each array.
        k: how many entries to prune, 0 <= k <= sum(sizes).
        sample_size: scores sampled to bracket the cut; totals up to 4× this skip the sampling.
        seed: seed of the sample, so the selection is deterministic.
        samplers: optional, one callable per array returning its scores at the given indices (close to
            ``fn()[idx]``: the bracket only needs to be near the cut, the result is exact regardless).
            Without them the bracket computes every score once more.

    Ties at the cut are broken by position: earlier arrays, then earlier indices, are pruned first.
    """
    total = int(sum(sizes))
    if not 0 <= k <= total:
        raise ValueError(f"k must be in [0, {total}], got {k}.")
    if k == 0:
        return [np.ones(n, dtype=bool) for n in sizes]
    if k == total:
        return [np.zeros(n, dtype=bool) for n in sizes]

    found = None
    if total > 4 * sample_size:
        if samplers is None:
            samplers = [lambda idx, fn=fn: fn()[idx] for fn in score_fns]
        lo, hi = _bracket(samplers, sizes, k, total, sample_size, seed)
        found = _kth(k, lo, hi, *_count_and_collect(score_fns, lo, hi))
    if found is None:
        # The lowest score as the lower end: the block of already-pruned weights is counted, not sorted.
        lo = min(float(np.min(fn())) for fn in score_fns)
        found = _kth(k, lo, math.inf, *_count_and_collect(score_fns, lo, math.inf))
    if found is None:
        raise ValueError("scores must not be NaN.")
    cut, smaller = found
    ties_to_prune = k - smaller

    masks = []
    for fn in score_fns:
        scores = fn()
        if ties_to_prune > 0:
            keep = scores > cut
            ties = np.flatnonzero(scores == cut)
            keep[ties[ties_to_prune:]] = True
            ties_to_prune -= min(ties_to_prune, ties.size)
        else:
            keep = scores >= cut
        masks.append(keep)
    return masks


def _bracket(samplers, sizes, k, total, sample_size, seed) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    parts = []
    for sample, n in zip(samplers, sizes):
        m = max(1, round(sample_size * n / total))
        parts.append(sample(rng.integers(0, n, size=m)))
    sample = np.sort(np.concatenate(parts))
    m = sample.size
    lo_i, hi_i = bracket_indices(m, k, total)
    lo = float(sample[lo_i]) if lo_i >= 0 else -math.inf
    hi = float(sample[hi_i]) if hi_i < m else math.inf
    return lo, hi


def bracket_indices(m: int, k: int, total: int) -> tuple[int, int]:
    """Positions in a sorted sample of ``m`` scores that bracket the ``k``-th smallest of ``total``:
    6 standard deviations of a sample quantile either side, plus a little for small samples. Positions
    outside ``[0, m)`` mean an open end."""
    q = k / total
    margin = 6.0 * math.sqrt(m * q * (1.0 - q)) + 8
    return math.floor(q * m - margin), math.ceil(q * m + margin)


def _count_and_collect(score_fns, lo: float, hi: float) -> tuple[int, int, np.ndarray, int]:
    """Counts of the scores below ``lo``, equal to ``lo`` and equal to ``hi`` (if above ``lo``), and the
    scores strictly between ``lo`` and ``hi``."""
    below = at_lo = at_hi = 0
    parts = []
    for fn in score_fns:
        scores = fn()
        below += int(np.count_nonzero(scores < lo))
        at_lo += int(np.count_nonzero(scores == lo))
        if hi > lo:
            at_hi += int(np.count_nonzero(scores == hi))
        inside = scores > lo
        inside &= scores < hi
        parts.append(scores[inside])
    return below, at_lo, np.concatenate(parts), at_hi


def _kth(k: int, lo: float, hi: float, below: int, at_lo: int, inside: np.ndarray, at_hi: int):
    """The k-th smallest score (1-based) and how many scores are strictly below it, from the counts of
    :func:`_count_and_collect`; None when it is not in ``[lo, hi]``."""
    if k <= below:
        return None
    if k <= below + at_lo:
        return lo, below
    rank = k - below - at_lo
    if rank <= inside.size:
        cut = np.partition(inside, rank - 1)[rank - 1]
        return cut, below + at_lo + int(np.count_nonzero(inside < cut))
    if rank <= inside.size + at_hi:
        return hi, below + at_lo + inside.size
    return None
