"""Exact selection of the k lowest scores across many arrays, without sorting them.

Scores are produced on demand by callables (one per parameter), so no concatenated copy of all
scores is ever held: peak extra memory is one parameter's scores plus the candidates near the cut.

1. A random sample of the scores brackets the k-th smallest value between ``lo`` and ``hi``.
2. One pass counts the scores below ``lo`` and keeps the few in ``[lo, hi]``; ``np.partition`` on those
   candidates gives the exact k-th value ``t``. If the sample's bracket missed (rare), the pass is
   repeated with an open bracket, which is exact whatever the data.
3. One pass builds the masks: scores above ``t`` are kept, scores below are pruned, and of the scores
   equal to ``t`` just enough are pruned, the first in array order, to prune exactly ``k``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

ScoreFn = Callable[[], np.ndarray]

SAMPLE_SIZE = 1 << 16


def select_lowest(score_fns: Sequence[ScoreFn], sizes: Sequence[int], k: int,
                  sample_size: int = SAMPLE_SIZE, seed: int = 0) -> list[np.ndarray]:
    """Keep-masks (flat bool arrays) that prune exactly the ``k`` lowest scores of all arrays together.

    Args:
        score_fns: one callable per array, returning its scores as a flat float array; called up to
            three times each and must return the same values every time.
        sizes: the length of each array.
        k: how many entries to prune, 0 <= k <= sum(sizes).
        sample_size: scores sampled to bracket the cut; totals up to 4× this skip the sampling.
        seed: seed of the sample, so the selection is deterministic.

    Ties at the cut are broken by position: earlier arrays, then earlier indices, are pruned first.
    """
    total = int(sum(sizes))
    if not 0 <= k <= total:
        raise ValueError(f"k must be in [0, {total}], got {k}.")
    if k == 0:
        return [np.ones(n, dtype=bool) for n in sizes]
    if k == total:
        return [np.zeros(n, dtype=bool) for n in sizes]

    lo, hi = -math.inf, math.inf
    if total > 4 * sample_size:
        lo, hi = _bracket(score_fns, sizes, k, total, sample_size, seed)
    below, candidates = _count_and_collect(score_fns, lo, hi)
    if not below < k <= below + candidates.size:
        below, candidates = _count_and_collect(score_fns, -math.inf, math.inf)
    index = k - below - 1
    cut = np.partition(candidates, index)[index]
    ties_to_prune = k - below - int(np.count_nonzero(candidates < cut))

    masks = []
    for fn in score_fns:
        scores = fn()
        keep = scores > cut
        if ties_to_prune > 0:
            ties = np.flatnonzero(scores == cut)
            keep[ties[ties_to_prune:]] = True
            ties_to_prune -= min(ties_to_prune, ties.size)
        else:
            keep |= scores == cut
        masks.append(keep)
    return masks


def _bracket(score_fns, sizes, k, total, sample_size, seed) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    parts = []
    for fn, n in zip(score_fns, sizes):
        m = max(1, round(sample_size * n / total))
        parts.append(fn()[rng.integers(0, n, size=m)])
    sample = np.sort(np.concatenate(parts))
    m = sample.size
    q = k / total
    # 6 standard deviations of a sample quantile either side, plus a little for small samples.
    margin = 6.0 * math.sqrt(m * q * (1.0 - q)) + 8
    lo_i, hi_i = math.floor(q * m - margin), math.ceil(q * m + margin)
    lo = float(sample[lo_i]) if lo_i >= 0 else -math.inf
    hi = float(sample[hi_i]) if hi_i < m else math.inf
    return lo, hi


def _count_and_collect(score_fns, lo: float, hi: float) -> tuple[int, np.ndarray]:
    below = 0
    parts = []
    for fn in score_fns:
        scores = fn()
        is_below = scores < lo
        below += int(np.count_nonzero(is_below))
        parts.append(scores[~is_below & (scores <= hi)])
    return below, np.concatenate(parts)
