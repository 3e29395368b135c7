from __future__ import annotations

import numpy as np
import pytest

from paddle_prune_callback import selection
from paddle_prune_callback.selection import select_lowest


def fns(arrays):
    return [lambda a=a: a.copy() for a in arrays], [a.size for a in arrays]


@pytest.mark.parametrize("k", [0, 1, 7, 50, 99, 100])
def test_prunes_exactly_the_k_lowest_of_linspace(k):
    a = np.linspace(0, 1, 100, dtype=np.float32)
    parts = [a[::2], a[1::2]]                    # interleaved across two arrays
    keep = select_lowest(*fns(parts), k)
    assert sum(int((~m).sum()) for m in keep) == k
    pruned_values = np.sort(np.concatenate([p[~m] for p, m in zip(parts, keep)]))
    np.testing.assert_array_equal(pruned_values, a[:k])


def test_ties_are_broken_by_position():
    arrays = [np.zeros(5, np.float32), np.zeros(5, np.float32)]
    keep = select_lowest(*fns(arrays), 7)
    np.testing.assert_array_equal(keep[0], [False] * 5)
    np.testing.assert_array_equal(keep[1], [False, False, True, True, True])


def full_sort_keep(arrays, k):
    """The reference: a stable argsort over everything (ties by position, as select_lowest breaks them)."""
    flat = np.concatenate(arrays)
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[:k]] = False
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_bracket_matches_full_sort(seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(n).astype(np.float32) ** 2 for n in (100_000, 30_000, 170_000)]
    arrays[1][:5000] = 0.25                       # a block of ties near the cut
    k = 123_457
    keep = select_lowest(*fns(arrays), k, sample_size=4096)
    np.testing.assert_array_equal(np.concatenate(keep), full_sort_keep(arrays, k))


@pytest.mark.parametrize("k", [50_000, 150_000, 200_000, 260_000, 299_999])
def test_large_tie_blocks_at_the_ends_of_the_bracket(k):
    # Already-pruned weights (-1), a huge block of exact zeros (g² of inputs that are always zero), then
    # distinct values and a second block of ties: the cut falls inside or next to each block.
    rng = np.random.default_rng(0)
    a = np.concatenate([np.full(60_000, -1.0), np.zeros(120_000), rng.random(60_000) + 1.0, np.full(60_000, 3.0)])
    arrays = [part.astype(np.float32) for part in np.split(rng.permutation(a), [70_000, 200_000])]
    keep = select_lowest(*fns(arrays), k, sample_size=2048)
    np.testing.assert_array_equal(np.concatenate(keep), full_sort_keep(arrays, k))


def test_samplers_only_guide_the_bracket():
    # Samplers that return something else than the scores (here, scaled) can only cost time, never exactness.
    rng = np.random.default_rng(1)
    arrays = [rng.random(200_000).astype(np.float32), rng.random(150_000).astype(np.float32)]
    samplers = [lambda idx, a=a: a[idx] * 1.5 for a in arrays]
    keep = select_lowest(*fns(arrays), 100_000, sample_size=1024, samplers=samplers)
    np.testing.assert_array_equal(np.concatenate(keep), full_sort_keep(arrays, 100_000))


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="scores must not be NaN"):
        select_lowest(*fns([np.full(10, np.nan, np.float32)]), 5)


@pytest.mark.parametrize("bracket", [(0.5, 0.6), (-1.0, 0.01), (2.0, 3.0)])
def test_a_bracket_that_misses_the_cut_falls_back_to_exact(monkeypatch, bracket):
    # Force a wrong sample bracket (below, around part of, above the cut): the result must stay exact.
    monkeypatch.setattr(selection, "_bracket", lambda *args: bracket)
    a = np.linspace(0, 1, 400_000, dtype=np.float32)
    keep = select_lowest(*fns([a]), 300_000, sample_size=1024)
    assert not keep[0][:300_000].any() and keep[0][300_000:].all()


def test_rejects_k_out_of_range():
    with pytest.raises(ValueError, match=r"k must be in \[0, 3\], got 4"):
        select_lowest(*fns([np.zeros(3, np.float32)]), 4)
