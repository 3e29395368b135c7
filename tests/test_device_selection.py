"""The device selection (Paddle ops) against a full stable sort and against the numpy selection; and proof
that a prune event and sparsity() make no host copy of weights or scores when the device path runs."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddle_prune_callback import Pruner
from paddle_prune_callback.device_selection import select_lowest_on_device
from paddle_prune_callback import masks
from paddle_prune_callback.selection import select_lowest


def full_sort_keep(arrays, k):
    flat = np.concatenate(arrays)
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[:k]] = False
    return keep


def device_fns(arrays):
    tensors = [paddle.to_tensor(a) for a in arrays]
    return [lambda t=t: t.clone() for t in tensors], [a.size for a in arrays]


def tie_blocks(seed=0):
    rng = np.random.default_rng(seed)
    a = np.concatenate([np.full(60_000, -1.0), np.zeros(120_000), rng.random(60_000) + 1.0, np.full(60_000, 3.0)])
    return [part.astype(np.float32) for part in np.split(rng.permutation(a), [70_000, 200_000])]


@pytest.mark.parametrize("k", [0, 1, 50_000, 150_000, 200_000, 260_000, 299_999, 300_000])
@pytest.mark.parametrize("sample_size", [2048, 1 << 20])     # sampled bracket, and the open-bracket fallback
def test_device_selection_matches_full_sort_and_numpy(k, sample_size):
    arrays = tie_blocks()
    keep = select_lowest_on_device(*device_fns(arrays), k, sample_size=sample_size)
    assert all(m.dtype == paddle.bool for m in keep)
    got = np.concatenate([m.numpy() for m in keep])
    np.testing.assert_array_equal(got, full_sort_keep(arrays, k))
    host = select_lowest([lambda a=a: a.copy() for a in arrays], [a.size for a in arrays], k, sample_size=sample_size)
    np.testing.assert_array_equal(got, np.concatenate(host))


def test_device_selection_of_distinct_values():
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(n).astype(np.float32) ** 2 for n in (100_000, 30_000, 170_000)]
    keep = select_lowest_on_device(*device_fns(arrays), 123_457, sample_size=4096)
    np.testing.assert_array_equal(np.concatenate([m.numpy() for m in keep]), full_sort_keep(arrays, 123_457))


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="scores must not be NaN"):
        select_lowest_on_device(*device_fns([np.full(10, np.nan, np.float32)]), 3)


class Many(paddle.nn.Layer):
    def __init__(self, n=24, width=96):
        super().__init__()
        self.layers = paddle.nn.LayerList([paddle.nn.Linear(width, width) for _ in range(n)])


@pytest.mark.parametrize("criterion, scope", [("magnitude", "global"), ("fisher", "global"), ("fisher", "layer")])
def test_device_path_prunes_like_the_host_path_without_host_copies(monkeypatch, criterion, scope):
    """A prune event and sparsity() with Tensor.numpy and np.from_dlpack raising for anything larger than
    the histogram's sample share: no host copy of weights, scores or masks (what a GPU run needs)."""
    a, b = Many(), Many()
    b.set_state_dict(a.state_dict())
    x = paddle.randn([4, 96])

    def record(net, pruner):
        y = x
        for layer in net.layers:
            y = paddle.tanh(layer(y))
        y.sum().backward()
        pruner.step()
        net.clear_gradients()

    def run(net):
        pruner = Pruner(net, criterion=criterion, scope=scope).attach()
        record(net, pruner)
        pruner.prune(sparsity=0.3)
        record(net, pruner)
        return pruner.prune(sparsity=0.8)

    expected = run(a)
    monkeypatch.setattr(masks, "HOST_VIEWS_ON_CPU", False)      # the GPU path: Paddle ops only
    real_numpy = paddle.Tensor.numpy

    def guarded(t, *args, **kwargs):
        if int(np.prod(t.shape)) > 4096:        # a parameter has 9,216 weights; a sample share is < 3,000
            raise AssertionError(f"host copy of a tensor of shape {t.shape}")
        return real_numpy(t, *args, **kwargs)

    monkeypatch.setattr(paddle.Tensor, "numpy", guarded)
    monkeypatch.setattr(np, "from_dlpack", lambda *a, **k: (_ for _ in ()).throw(AssertionError("from_dlpack")))
    got = run(b)
    monkeypatch.undo()
    assert got == expected
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


@pytest.mark.parametrize("k", [10_000, 40_000, 70_000])
def test_subnormal_scores_are_ordered_exactly(k):
    """Paddle's float == treats subnormals as equal to 0; the selection must not (fisher scores of
    vanishing gradients are subnormal)."""
    rng = np.random.default_rng(1)
    a = np.concatenate([np.zeros(20_000), np.full(20_000, 1e-40), np.full(20_000, 2e-40), rng.random(20_000)])
    arrays = [part.astype(np.float32) for part in np.split(rng.permutation(a), [30_000])]
    for sample_size in (2048, 1 << 20):
        keep = select_lowest_on_device(*device_fns(arrays), k, sample_size=sample_size)
        np.testing.assert_array_equal(np.concatenate([m.numpy() for m in keep]), full_sort_keep(arrays, k))
