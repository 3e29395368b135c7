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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_bracket_matches_full_sort(seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(n).astype(np.float32) ** 2 for n in (100_000, 30_000, 170_000)]
    arrays[1][:5000] = 0.25                       # a block of ties near the cut
    k = 123_457
    keep = select_lowest(*fns(arrays), k, sample_size=4096)
    flat = np.concatenate(arrays)
    order = np.argsort(flat, kind="stable")       # stable: ties by position, as select_lowest breaks them
    expected = np.ones(flat.size, bool)
    expected[order[:k]] = False
    np.testing.assert_array_equal(np.concatenate(keep), expected)


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
