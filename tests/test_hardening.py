"""Issue 9's engine defects, each against an independent reference: every float dtype scored and counted
right, sparse embeddings, atomic prunes, zeros in the starting weights, hold_zeros and masks re-applied at
train begin."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest
from conftest import MLP, classification_data

import paddle_prune_callback.engine as engine
from paddle_prune_callback import PruningCallback, Pruner

DTYPES = ["float16", "bfloat16", "float32", "float64"]


def host32(p) -> np.ndarray:
    """The weights as float32 host values (bf16's .numpy() gives raw bits: convert in Paddle first)."""
    return p.astype("float32").numpy().ravel()


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_float_dtype_is_scored_and_counted_right(dtype):
    net = MLP()
    net.to(dtype=dtype)
    before = {n: host32(p) for n, p in net.named_parameters() if p.ndim >= 2 and "norm" not in n}
    result = Pruner(net, criterion="magnitude").prune(sparsity=0.9)
    # Reference: the k lowest |w| over both weights (each keeps its largest), ties by position.
    flat = np.concatenate([np.abs(w) for w in before.values()])
    start = 0
    for w in before.values():
        flat[start + int(np.argmax(np.abs(w)))] = np.inf
        start += w.size
    k = round(0.9 * flat.size)
    expected_pruned = np.zeros(flat.size, dtype=bool)
    expected_pruned[np.argsort(flat, kind="stable")[:k]] = True
    after = np.concatenate([host32(p) for n, p in net.named_parameters() if n in before])
    np.testing.assert_array_equal(after == 0, expected_pruned | (np.concatenate(list(before.values())) == 0))
    np.testing.assert_array_equal(after[~expected_pruned], np.concatenate(list(before.values()))[~expected_pruned])
    assert result["global"] == np.count_nonzero(after == 0) / after.size == k / flat.size


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_non_finite_weights_of_every_dtype_are_refused(dtype):
    net = MLP()
    w = net.fc1.weight.numpy()
    w[3, 2] = np.nan
    net.fc1.weight.set_value(w)
    net.to(dtype=dtype)
    before = host32(net.fc2.weight)
    with pytest.raises(FloatingPointError, match=r"parameter 'fc1.weight' has non-finite weights"):
        Pruner(net, criterion="magnitude").prune(sparsity=0.5)
    np.testing.assert_array_equal(host32(net.fc2.weight), before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_zero_counts_as_zero(dtype):
    net = MLP()
    w = -np.abs(net.fc1.weight.numpy())
    w[:, :4] = -0.0
    net.fc1.weight.set_value(w)
    net.to(dtype=dtype)
    assert np.signbit(host32(net.fc1.weight).reshape(8, 16)[:, :4]).all()
    pruner = Pruner(net, parameters=["fc1.weight"], criterion="magnitude")
    assert pruner.sparsity()["fc1.weight"] == 32 / 128 and pruner.table()[0][3] == 32


def test_float64_through_fit():
    net = MLP()
    net.to(dtype="float64")
    x = np.random.default_rng(0).standard_normal((64, 8))
    data = paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor((x[:, :4].argmax(1))[:, None])])
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.AdamW(0.01, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    cb = PruningCallback(0.8, [0, 1], criterion="fisher", verbose=0)
    model.fit(data, epochs=3, batch_size=16, verbose=0, callbacks=[cb])
    total = 8 * 16 + 16 * 4
    zeros = sum(int((p.numpy() == 0).sum()) for p in (net.fc1.weight, net.fc2.weight))
    assert zeros == round(0.8 * total) and cb.sparsity()["global"] == zeros / total


class WithSparseEmbedding(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.emb = paddle.nn.Embedding(50, 8, sparse=True)
        self.fc = paddle.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.emb(x).mean(axis=1))


def embedding_data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, size=(64, 5)).astype("int64")
    return paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor((x[:, 0] % 4)[:, None])])


@pytest.mark.parametrize("criterion", ["magnitude", "fisher"])
def test_sparse_embedding_left_out_by_default(criterion):
    net = WithSparseEmbedding()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.1, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    cb = PruningCallback(0.5, [0, 1], criterion=criterion, verbose=0)
    model.fit(embedding_data(), epochs=3, batch_size=16, verbose=0, callbacks=[cb])
    assert list(cb.pruner.parameters) == ["fc.weight"]
    assert int((net.fc.weight.numpy() == 0).sum()) == 16 and np.count_nonzero(net.emb.weight.numpy() == 0) == 0


def test_sparse_embedding_listed_is_refused_before_anything_changes():
    net = WithSparseEmbedding()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.1, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    before = {n: p.numpy().copy() for n, p in net.named_parameters()}
    with pytest.raises(ValueError, match=r"parameter 'emb.weight' belongs to an Embedding with sparse=True, whose "
                                         r"sparse \(SelectedRows\) gradients cannot be masked"):
        model.fit(embedding_data(), epochs=1, batch_size=16, verbose=0,
                  callbacks=[PruningCallback(0.5, [0], parameters=["emb.weight", "fc.weight"], verbose=0)])
    for n, p in net.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[n])


def test_error_inside_a_hook_removes_the_hooks():
    net = MLP()
    pruner = Pruner(net, criterion="fisher").attach()
    pruner._g2.scaler_source = lambda: 1 / 0                       # the hook's scaler lookup raises
    loss = net(paddle.randn([4, 8])).sum()
    with pytest.raises(OSError, match="ZeroDivisionError"):   # Paddle re-raises it from backward
        loss.backward()
    assert pruner._handles == {}
    net.clear_gradients()
    net(paddle.randn([4, 8])).sum().backward()                     # trains normally afterwards
    assert np.count_nonzero(net.fc1.weight.grad.numpy()) > 0


def test_a_failed_prune_changes_nothing(monkeypatch):
    """An in-place update that fails on the second parameter (a test double for an out-of-memory on a GPU):
    weights, optimizer moments and masks are exactly as before, and a later prune works."""
    net = MLP()
    opt = paddle.optimizer.Adam(0.01, parameters=net.parameters())
    pruner = Pruner(net, criterion="magnitude").attach(opt)
    for _ in range(2):
        net(paddle.randn([8, 8])).sum().backward()
        opt.step()
        opt.clear_grad()
        pruner.step()
    pruner.prune(sparsity=0.3)
    snapshot = lambda: ({n: p.numpy().copy() for n, p in net.named_parameters()},
                        {k: v.numpy().copy() for k, v in opt.state_dict().items() if hasattr(v, "numpy")},
                        {n: k.copy() for n, k in pruner.keep.items()})
    before = snapshot()
    real, calls = engine.mask_in_place, []

    def failing(mask, t):
        calls.append(t.name)
        if len(calls) == 4:       # fc1.weight and its two moments done; fc2.weight fails
            raise MemoryError("injected")
        real(mask, t)

    monkeypatch.setattr(engine, "mask_in_place", failing)
    with pytest.raises(MemoryError, match="injected"):
        pruner.prune(sparsity=0.7)
    after = snapshot()
    for a, b in zip(before, after):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    monkeypatch.setattr(engine, "mask_in_place", real)
    assert pruner.prune(sparsity=0.7)["global"] == pytest.approx(0.7, abs=0.01)


def test_zeros_in_the_starting_weights_count_as_pruned_and_never_regrow():
    net = MLP()
    w = net.fc1.weight.numpy()
    w[:, :3] = 0.0                          # 24 exact zeros whose gradients are not zero
    net.fc1.weight.set_value(w)
    opt = paddle.optimizer.Momentum(0.1, parameters=net.parameters())
    pruner = Pruner(net, criterion="gradient").attach(opt)
    x = paddle.to_tensor(classification_data().tensors[0].numpy()[:32])

    def train(steps):
        for _ in range(steps):
            net(x).sum().backward()
            opt.step()
            opt.clear_grad()
            pruner.step()

    train(2)
    assert (net.fc1.weight.numpy()[:, :3] != 0).any()      # training moves them
    net.fc1.weight.set_value(w)
    train(0)
    pruner.prune(sparsity=0.25)
    train(3)
    total = 128 + 64
    assert (net.fc1.weight.numpy()[:, :3] == 0).all()
    assert sum(int((p.numpy() == 0).sum()) for p in (net.fc1.weight, net.fc2.weight)) == round(0.25 * total)


def test_hold_zeros_in_a_custom_loop_with_adamw():
    net = MLP()
    Pruner(net, criterion="magnitude").prune(sparsity=0.6)
    zeros = {n: p.numpy() == 0 for n, p in net.named_parameters() if n.endswith("weight") and "norm" not in n}
    opt = paddle.optimizer.AdamW(0.05, parameters=net.parameters(), weight_decay=0.1)
    pruner = Pruner(net, criterion="fisher", hold_zeros=True).attach(opt)
    assert pruner.sparsity()["global"] == round(0.6 * 192) / 192
    for _ in range(5):
        net(paddle.randn([8, 8])).sum().backward()
        opt.step()
        opt.clear_grad()
        pruner.step()
    for n, z in zeros.items():
        np.testing.assert_array_equal(getattr(net, n.split(".")[0]).weight.numpy() == 0, z)


FINE_TUNE = textwrap.dedent("""
    import sys, numpy as np, paddle
    sys.path.insert(0, sys.argv[3])
    from conftest import MLP, classification_data
    from paddle_prune_callback import PruningCallback
    paddle.seed(1)
    net = MLP()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.AdamW(0.05, parameters=net.parameters(), weight_decay=0.1),
                  paddle.nn.CrossEntropyLoss())
    model.load(sys.argv[1], reset_optimizer=True)
    target = None if sys.argv[4] == "none" else float(sys.argv[4])
    cb = PruningCallback(target, [1] if target else None, hold_zeros=True, criterion="magnitude", verbose=0)
    model.fit(classification_data(seed=1), epochs=3, batch_size=16, verbose=0, callbacks=[cb])
    np.savez(sys.argv[2], **{n: p.numpy() for n, p in net.named_parameters()})
""")


def fine_tune(tmp_path, checkpoint, target):
    out = tmp_path / f"tuned_{target}.npz"
    env = dict(os.environ, GLOG_minloglevel="2", PYTHONPATH=os.pathsep.join(
        [str(os.path.dirname(os.path.dirname(engine.__file__)))] + sys.path))
    done = subprocess.run([sys.executable, "-c", FINE_TUNE, checkpoint, str(out), os.path.dirname(__file__),
                           target], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(out)


def test_hold_zeros_fine_tunes_a_pruned_checkpoint_in_a_new_process(tmp_path):
    net = MLP()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    model.fit(classification_data(), epochs=2, batch_size=32, verbose=0,
              callbacks=[PruningCallback(0.7, [0, 1], criterion="fisher", verbose=0)])
    model.save(str(tmp_path / "pruned"))
    pruned = {n: p.numpy() for n, p in net.named_parameters()}

    held = fine_tune(tmp_path, str(tmp_path / "pruned"), "none")
    for n in ("fc1.weight", "fc2.weight"):
        np.testing.assert_array_equal(held[n] == 0, pruned[n] == 0)            # exactly the same zeros
        alive = pruned[n] != 0
        assert np.count_nonzero(held[n][alive] != pruned[n][alive]) == alive.sum()   # every survivor trained

    further = fine_tune(tmp_path, str(tmp_path / "pruned"), "0.8")
    total = 128 + 64
    zeros = sum(int((further[n] == 0).sum()) for n in ("fc1.weight", "fc2.weight"))
    assert zeros == round(0.8 * total)
    for n in ("fc1.weight", "fc2.weight"):
        assert (further[n][pruned[n] == 0] == 0).all()                         # the found zeros stay

    below = fine_tune(tmp_path, str(tmp_path / "pruned"), "0.5")            # a target below what was found
    for n in ("fc1.weight", "fc2.weight"):
        np.testing.assert_array_equal(below[n] == 0, pruned[n] == 0)


def test_masks_reapplied_at_train_begin_after_loading_dense_weights():
    net = MLP()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    dense = {n: p.numpy().copy() for n, p in net.named_parameters()}
    cb = PruningCallback(0.5, [0], criterion="magnitude", verbose=0)
    model.fit(classification_data(), epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    keep = cb.pruner.keep["fc1.weight"]
    for n, p in net.named_parameters():
        p.set_value(dense[n])                 # e.g. model.load() of the dense checkpoint

    seen = []

    class FirstForward(paddle.callbacks.Callback):
        def on_train_batch_begin(self, step, logs=None):
            if not seen:
                seen.append(net.fc1.weight.numpy().ravel().copy())

    model.fit(classification_data(), epochs=1, batch_size=32, verbose=0, callbacks=[cb, FirstForward()])
    assert (seen[0][~keep] == 0).all() and np.count_nonzero(seen[0][keep]) == keep.sum()
