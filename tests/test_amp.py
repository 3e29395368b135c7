"""Mixed precision, as far as it runs on CPU: Paddle's AMP is GPU-only, so the GradScaler is forced on."""
from __future__ import annotations

import contextlib

import numpy as np
import paddle
import paddle.amp.grad_scaler as grad_scaler
from conftest import MLP, classification_data

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


def test_master_weights_are_masked():
    """AMP O2 keeps fp32 master weights in the optimizer; fp16 kernels do not exist on CPU, so the master
    weights are placed where Paddle keeps them (``optimizer._master_weights[param.name]``)."""
    net = MLP()
    opt = paddle.optimizer.Momentum(0.1, parameters=net.parameters())
    opt._master_weights = {p.name: paddle.to_tensor(p.numpy() + 1.0) for p in net.parameters()}
    pruner = Pruner(net, criterion="magnitude").attach(opt)
    pruner.prune(sparsity=0.5)
    master = opt._master_weights[net.fc1.weight.name]
    assert (master.numpy().ravel()[~pruner.keep["fc1.weight"]] == 0).all()
    paddle.assign(paddle.ones_like(master), output=master)   # an update that would regrow them
    pruner.step()
    assert int((master.numpy() == 0).sum()) == int((~pruner.keep["fc1.weight"]).sum()) > 0


def test_fit_with_amp_configs_on_cpu_prunes_normally():
    net = MLP()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters()), paddle.nn.CrossEntropyLoss(),
                  amp_configs="O1")
    cb = PruningCallback(0.5, [0, 1], criterion="fisher", verbose=0)
    model.fit(classification_data(), epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    assert cb.sparsity()["global"] == 0.5
    assert model._scaler is not None and not model._scaler.is_enable()   # AMP is GPU-only
