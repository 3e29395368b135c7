"""Mixed precision, as far as it runs on CPU: Paddle's AMP is GPU-only, so the GradScaler is forced on."""
from __future__ import annotations

import contextlib

import numpy as np
import paddle
import paddle.amp.grad_scaler as grad_scaler
from conftest import MLP, MaskProbe, classification_data, host_values

from paddle_prune_callback import Pruner, PruningCallback


@contextlib.contextmanager
def _gpu_like_place():
    """Let GradScaler believe it runs on a GPU, so that it enables itself on this CPU machine."""

    class Place:
        def is_gpu_place(self):
            return True

    class Tracer:
        _expected_place = Place()

    real = grad_scaler._dygraph_tracer
    grad_scaler._dygraph_tracer = Tracer
    try:
        yield
    finally:
        grad_scaler._dygraph_tracer = real


def forced_scaler(scale=1024.0):
    with _gpu_like_place():
        # decr_every_n_nan_or_inf=2: Paddle 3.3.1 + numpy 2 raise TypeError when lowering the scale.
        scaler = paddle.amp.GradScaler(init_loss_scaling=scale, decr_every_n_nan_or_inf=2)
    assert scaler.is_enable()
    return scaler


def amp_step(net, opt, scaler, pruner, x):
    with paddle.amp.auto_cast(dtype="float16"):   # a no-op on CPU, but it makes the scaler scale
        loss = (net(x) ** 2).mean()
        scaled = scaler.scale(loss)
    scaled.backward()
    scaler.minimize(opt, scaled)
    opt.clear_grad()
    pruner.step()


def test_scores_are_unscaled_and_skip_non_finite_batches():
    net = MLP()
    opt = paddle.optimizer.Adam(0.01, parameters=net.parameters())
    scaler = forced_scaler(1024.0)
    pruner = Pruner(net, criterion="gradient").attach(opt, scaler)
    rng = np.random.default_rng(0)
    batches = [paddle.to_tensor(rng.standard_normal((4, 8)).astype("float32")) for _ in range(3)]
    poisoned = batches[1].clone()
    poisoned[0, 0] = float("inf")
    expected = []
    for i, x in enumerate([batches[0], poisoned, batches[2]]):
        if i != 1:   # the reference: a copy of the network at the same weights, unscaled, no hooks
            # (paddle.grad is no reference here: after an optimizer update it disagrees with backward())
            copy = MLP()
            copy.set_state_dict(net.state_dict())
            (copy(x) ** 2).mean().backward()
            expected.append(copy.fc1.weight.grad.numpy() ** 2)
        before = net.fc1.weight.numpy().copy()
        amp_step(net, opt, scaler, pruner, x)
        if i == 1:
            assert scaler._cache_found_inf                       # the scaler skipped this update
            np.testing.assert_array_equal(net.fc1.weight.numpy(), before)
    assert (pruner.num_batches, pruner.skipped_batches) == (2, 1)
    g2 = pruner.mean_sq_grads()
    assert all(np.isfinite(v).all() for v in g2.values())
    np.testing.assert_allclose(g2["fc1.weight"].reshape(8, 16), np.mean(expected, axis=0), rtol=1e-4, atol=1e-10)

    sparsity = pruner.prune(sparsity=0.5)
    assert sparsity["global"] == 0.5
    for p in net.parameters():
        assert np.isfinite(p.numpy()).all()


class Bf16Linear(paddle.nn.Layer):
    """A Linear whose weight and bias are bfloat16; the forward runs in float32 (bf16 matmul has no CPU
    kernel), so the gradients reach the bf16 parameters through the casts."""

    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(8, 16)
        self.fc.to(dtype="bfloat16")

    def forward(self, x):
        return paddle.matmul(x, self.fc.weight.astype("float32")) + self.fc.bias.astype("float32")


def test_master_weights_are_masked():
    """``SGD(multi_precision=True)`` makes fp32 master weights of a bf16 parameter at its first update, on CPU
    too (``optimizer._master_weights[param.name]``; the CPU kernel then updates the bf16 weight directly,
    a GPU kernel the master). The prune zeroes the pruned positions there and leaves the others as they
    were; they stay zero through training, and the re-apply after each update zeroes them again."""
    net = Bf16Linear()
    opt = paddle.optimizer.SGD(0.1, parameters=net.parameters(), multi_precision=True)
    pruner = Pruner(net, criterion="gradient").attach(opt)
    rng = np.random.default_rng(0)

    def train(steps):
        for _ in range(steps):
            (net(paddle.to_tensor(rng.standard_normal((4, 8)).astype("float32"))) ** 2).mean().backward()
            opt.step()
            opt.clear_grad()
            pruner.step()

    train(3)
    assert list(pruner.parameters) == ["fc.weight"] and net.fc.weight.dtype == paddle.bfloat16
    master = opt._master_weights[net.fc.weight.name]
    assert master.dtype == paddle.float32 and master.shape == [8, 16]
    before = master.numpy().reshape(-1).copy()
    pruner.prune(sparsity=0.5)
    pruned = ~np.asarray(pruner.keep["fc.weight"], dtype=bool).reshape(-1)
    assert pruned.sum() == 64
    after = master.numpy().reshape(-1)
    assert (after[pruned] == 0).all()
    np.testing.assert_array_equal(after[~pruned], before[~pruned])   # the others untouched

    weights = host_values(net.fc.weight)
    train(3)
    assert (master.numpy().reshape(-1)[pruned] == 0).all() and (host_values(net.fc.weight)[pruned] == 0).all()
    assert (host_values(net.fc.weight)[~pruned] != weights[~pruned]).any()   # the alive weights train on

    paddle.assign(paddle.ones_like(master), output=master)   # a write that would regrow them
    pruner.step()
    assert (master.numpy().reshape(-1)[pruned] == 0).all() and (master.numpy().reshape(-1)[~pruned] == 1).all()


def test_fit_with_amp_configs_on_cpu_prunes_normally():
    net = MLP()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters()), paddle.nn.CrossEntropyLoss(),
                  amp_configs="O1")
    cb = PruningCallback(0.5, [0, 1], criterion="fisher", verbose=0)
    probe = MaskProbe(cb)
    model.fit(classification_data(), epochs=2, batch_size=32, verbose=0, callbacks=[cb, probe])
    assert probe.updates_checked == 4
    assert cb.sparsity()["global"] == 0.5
    assert model._scaler is not None and not model._scaler.is_enable()   # AMP is GPU-only
