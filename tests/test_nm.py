"""N:M math on Paddle tensors, checked against ``paddle.incubate.asp`` and an independent numpy count."""
from __future__ import annotations

import numpy as np
import paddle
import pytest
from paddle.incubate import asp

from paddle_prune_callback.nm import input_axis, nm_group_counts, nm_keep_mask, parse_nm


def numpy_groups(a: np.ndarray, m: int, axis: int, pad) -> np.ndarray:
    moved = np.moveaxis(a, axis, -1)
    padded = np.full(moved.shape[:-1] + (moved.shape[-1] + (-moved.shape[-1] % m),), pad, dtype=a.dtype)
    padded[..., :moved.shape[-1]] = moved
    return padded.reshape(-1, m)


def numpy_zeros_per_group(w: np.ndarray, m: int, axis: int) -> np.ndarray:
    """Zeros in every group of m along axis, padding counted: an independent count for any layout."""
    return m - np.count_nonzero(numpy_groups(w, m, axis, 0.0), axis=1)


def numpy_keep(scores: np.ndarray, zeros: int, m: int, axis: int) -> np.ndarray:
    """The reference selection, group by group: the `zeros` lowest (padding lowest of all, ties by position)."""
    groups = numpy_groups(scores.astype(np.float64), m, axis, -np.inf)
    keep = np.ones(groups.shape, dtype=bool)
    for row, g in zip(keep, groups):
        row[np.argsort(g, kind="stable")[:zeros]] = False
    moved = np.moveaxis(scores, axis, -1).shape
    keep = keep.reshape(moved[:-1] + (-1,))[..., :moved[-1]]
    return np.moveaxis(keep, -1, axis)


@pytest.mark.parametrize("shape, axis", [((64, 32), 0), ((10, 7), 0), ((16, 12, 3, 3), 1), ((8, 6, 3), 1),
                                         ((4, 9, 2, 2, 2), 1)])
@pytest.mark.parametrize("zeros", [1, 2, 3])
def test_keep_mask_matches_the_group_by_group_reference(shape, axis, zeros):
    w = np.random.default_rng(sum(shape)).standard_normal(shape).astype("float32")
    keep = nm_keep_mask(paddle.to_tensor(np.abs(w)), zeros, 4, axis)
    assert keep.dtype == paddle.bool and keep.shape == list(shape)
    np.testing.assert_array_equal(keep.numpy(), numpy_keep(np.abs(w), zeros, 4, axis))
    zeros_found = numpy_zeros_per_group(np.where(keep.numpy(), w, 0), 4, axis)
    assert (zeros_found == zeros).all() if shape[axis] % 4 == 0 else (zeros_found >= zeros).all()


@pytest.mark.parametrize("shape", [(64, 32), (18, 8), (16, 12, 3, 3), (8, 10, 5, 5)])
def test_two_four_is_what_asp_makes_and_accepts(shape):
    """ASP's own layout: it checks and masks ``weight.T`` (Linear [in,out], Conv2D [out,in,kh,kw])."""
    w = np.random.default_rng(len(shape) + shape[0]).standard_normal(shape).astype("float32")
    keep = nm_keep_mask(paddle.to_tensor(np.abs(w)), 2, 4, input_axis(len(shape))).numpy()
    pruned = np.where(keep, w, 0).astype("float32")
    assert asp.check_sparsity(pruned.T, n=2, m=4, func_name=asp.CheckMethod.CHECK_1D)
    asp_mask = asp.create_mask(w.T, func_name=asp.MaskAlgo.MASK_1D, n=2, m=4).T
    np.testing.assert_array_equal(keep, asp_mask.astype(bool))
    assert not asp.check_sparsity(w.T, n=2, m=4, func_name=asp.CheckMethod.CHECK_1D)


def test_asp_prune_model_changes_no_weight_after_our_two_four():
    paddle.seed(1)
    net = paddle.nn.Sequential(paddle.nn.Conv2D(8, 16, 3), paddle.nn.Flatten(), paddle.nn.Linear(16 * 36, 10))
    with paddle.no_grad():
        for p in (net[0].weight, net[2].weight):
            p.multiply_(nm_keep_mask(p.abs(), 2, 4, input_axis(p.ndim)).astype(p.dtype))
    before = {n: p.numpy().copy() for n, p in net.named_parameters()}
    asp.prune_model(net, n=2, m=4, mask_algo="mask_1d", with_mask=False)
    for name, p in net.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[name], err_msg=name)
    fresh = paddle.nn.Linear(16, 8)                  # and a weight that is not 2:4 does change
    dense = fresh.weight.numpy().copy()
    asp.prune_model(paddle.nn.Sequential(fresh), n=2, m=4, mask_algo="mask_1d", with_mask=False)
    assert (fresh.weight.numpy() != dense).sum() == dense.size // 2


def test_partial_group_counts_its_padding_as_zeros():
    scores = paddle.to_tensor(np.arange(1, 7, dtype="float32").reshape(6, 1))      # groups [1..4], [5, 6, pad, pad]
    np.testing.assert_array_equal(nm_keep_mask(scores, 2, 4, 0).numpy().ravel(), [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(nm_keep_mask(scores, 3, 4, 0).numpy().ravel(), [0, 0, 0, 1, 0, 1])
    small = paddle.to_tensor([[3.0], [1.0], [2.0]])                                 # one partial group of 3
    np.testing.assert_array_equal(nm_keep_mask(small, 2, 4, 0).numpy().ravel(), [1, 0, 1])


def test_ties_are_cut_in_position_order_and_marked_weights_go_first():
    scores = paddle.to_tensor([[5.0, 5.0, 5.0, 5.0, 2.0, -1.0, 2.0, 9.0]]).reshape([8, 1])
    np.testing.assert_array_equal(nm_keep_mask(scores, 2, 4, 0).numpy().ravel(), [0, 0, 1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(nm_keep_mask(scores, 1, 4, 0).numpy().ravel(), [0, 1, 1, 1, 1, 0, 1, 1])


def test_group_counts_agree_with_numpy_and_count_negative_zero():
    rng = np.random.default_rng(3)
    for shape, axis, m in [((20, 6), 0, 4), ((5, 13, 3), 1, 4), ((3, 16, 2, 2, 2), 1, 8)]:
        w = rng.standard_normal(shape).astype("float32")
        w[rng.random(shape) < 0.6] = -0.0
        for n in range(1, m):
            ok, total = nm_group_counts(paddle.to_tensor(w), n, m, axis)
            zeros = numpy_zeros_per_group(w, m, axis)
            assert (ok, total) == (int((m - zeros <= n).sum()), zeros.size)
    assert nm_group_counts(paddle.zeros([0, 4]), 2, 4, 0) == (0, 0)


def test_parse_and_bad_arguments():
    assert parse_nm("2:4") == (2, 4) and parse_nm(" 4 : 8 ") == (4, 8) and parse_nm("1:4") == (1, 4)
    for bad in ("2/4", "two:four", "2:4:8", 24):
        with pytest.raises(ValueError, match=r"is not an N:M pattern; write it as 'N:M'"):
            parse_nm(bad)
    for bad in ("4:4", "0:4", "5:4"):
        with pytest.raises(ValueError, match=r"must keep between 1 and M-1 weights per group of M"):
            parse_nm(bad)
    with pytest.raises(ValueError, match=r"`zeros` must be in \[0, 4\] for groups of 4, got 5"):
        nm_keep_mask(paddle.ones([4, 4]), 5, 4, 0)
    with pytest.raises(ValueError, match=r"needs a weight with at least 2 dimensions, got 1"):
        input_axis(1)
    assert input_axis(2) == 0 and input_axis(4) == 1 and input_axis(3) == 1
    assert nm_keep_mask(paddle.ones([4, 4]), 0, 4, 0).numpy().all()
