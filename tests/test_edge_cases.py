"""The shapes of real training, each through Model.fit: layer types, accumulation, frozen, tied, unused."""
from __future__ import annotations

import numpy as np
import paddle
import pytest
from conftest import MLP, GradientRecord, MaskProbe, assert_pruned_lowest, classification_data

from paddle_prune_callback import PruningCallback


def fit_regression(net, x, epochs=3, callbacks=(), optimizer=None, **fit_kwargs):
    with paddle.no_grad():
        y = net(paddle.to_tensor(x)).numpy() + 0.1
    data = paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y)])
    model = paddle.Model(net)
    model.prepare(optimizer or paddle.optimizer.Momentum(0.01, parameters=net.parameters(), weight_decay=0.01),
                  paddle.nn.MSELoss())
    model.fit(data, epochs=epochs, batch_size=8, verbose=0, callbacks=list(callbacks), **fit_kwargs)
    return model


def prune_and_check(net, x, expected_names, criterion="fisher", record=None, **fit_kwargs):
    """Prune to 0.5 at the end of epoch 0 of 3; the masks are checked after every update."""
    cb = PruningCallback(0.5, [0], criterion=criterion, verbose=0)
    probe = MaskProbe(cb)
    fit_regression(net, x, callbacks=([record] if record else []) + [cb, probe], **fit_kwargs)
    assert list(cb.pruner.parameters) == expected_names
    total = sum(int(np.prod(p.shape)) for p in cb.pruner.parameters.values())
    assert probe.zeros == [round(0.5 * total)] * 3       # reached at epoch 0, held through two more epochs
    assert probe.updates_checked == 2 * -(-len(x) // 8)   # every batch of epochs 1 and 2
    return cb, probe


rng = np.random.default_rng(0)


class Conv1DNet(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv1D(3, 8, 3)
        self.norm = paddle.nn.BatchNorm1D(8)

    def forward(self, x):
        return self.norm(self.conv(x)).mean(axis=-1)


class GroupedConv2DNet(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(4, 8, 3, groups=2)
        self.norm = paddle.nn.BatchNorm2D(8)
        self.up = paddle.nn.Conv2DTranspose(8, 4, 2, stride=2)

    def forward(self, x):
        return self.up(paddle.nn.functional.relu(self.norm(self.conv(x)))).mean(axis=[2, 3])


class Conv3DNet(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv3D(2, 4, 3)
        self.norm = paddle.nn.GroupNorm(2, 4)

    def forward(self, x):
        return self.norm(self.conv(x)).mean(axis=[2, 3, 4])


class EmbeddingNet(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.embed = paddle.nn.Embedding(20, 8)
        self.norm = paddle.nn.LayerNorm(8)
        self.fc = paddle.nn.Linear(8, 2)

    def forward(self, ids):
        return self.fc(self.norm(self.embed(ids).mean(axis=1)))


@pytest.mark.parametrize(
    "net, x, names",
    [
        (Conv1DNet, rng.standard_normal((32, 3, 10)).astype("float32"), ["conv.weight"]),
        (GroupedConv2DNet, rng.standard_normal((32, 4, 6, 6)).astype("float32"), ["conv.weight", "up.weight"]),
        (Conv3DNet, rng.standard_normal((32, 2, 5, 5, 5)).astype("float32"), ["conv.weight"]),
        (EmbeddingNet, rng.integers(0, 20, (32, 5)).astype("int64"), ["embed.weight", "fc.weight"]),
    ],
    ids=["conv1d", "conv2d-groups+transpose", "conv3d", "embedding"],
)
def test_layer_types_are_pruned_and_normalization_is_not(net, x, names):
    cb, _ = prune_and_check(net(), x, names)
    assert cb.sparsity()["global"] == pytest.approx(0.5, abs=1e-3)


def assert_mean_sq_grads(cb, record, epochs, probe):
    """The package's mean g² equals the test's own, from its hooks, at every weight still alive (what a
    pruned weight accumulates is never used: its score is the lowest whatever it is)."""
    g2 = cb.pruner.mean_sq_grads()
    alive = {n: ~m for n, m in probe.pruned().items()}
    for name in record.names:
        expected = record.mean_sq_grad(name, epochs).reshape(-1)
        np.testing.assert_allclose(g2[name][alive[name]], expected[alive[name]], rtol=1e-5, atol=1e-12)


def test_gradient_accumulation():
    """Every backward counts, not only those followed by an update: 8 batches per epoch, 3 updates."""
    names = ["fc1.weight", "fc2.weight"]
    record = GradientRecord(names)
    x = rng.standard_normal((64, 8)).astype("float32")
    cb, probe = prune_and_check(MLP(), x, names, record=record, accumulate_grad_batches=3)
    assert record.batches == {0: 8, 1: 8, 2: 8} and all(len(record.grads[n][0]) == 8 for n in names)
    assert_pruned_lowest(record.fisher(0), probe.pruned_at_epoch_end[0])
    assert_mean_sq_grads(cb, record, [1, 2], probe)    # since the prune: 16 backward passes


class Tied(paddle.nn.Layer):
    """One square weight used twice in the same forward."""

    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(8, 8)
        self.out = paddle.nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.fc(paddle.nn.functional.relu(self.fc(x))))


def test_tied_weight_used_twice_in_one_forward():
    """The score of a weight used twice is built from its whole gradient, the sum over both uses."""
    names = ["fc.weight", "out.weight"]
    record = GradientRecord(names)
    cb, probe = prune_and_check(Tied(), rng.standard_normal((32, 8)).astype("float32"), names, record=record)
    assert [len(record.grads["fc.weight"][e]) for e in range(3)] == [4, 4, 4]   # one gradient per backward
    assert_pruned_lowest(record.fisher(0), probe.pruned_at_epoch_end[0])
    assert_mean_sq_grads(cb, record, [1, 2], probe)


def test_lookahead_revives_pruned_weights_at_every_update_and_the_masks_hold_them():
    """LookAhead wraps Adam: the engine cannot reach the inner moments or the slow weights, so every update
    moves the pruned weights again. They are zero after each update only because the masks are re-applied
    after each one, which the per-update check sees and an epoch-end check would not."""
    net = MLP()
    revived = []

    class Before(paddle.callbacks.Callback):   # listed before the PruningCallback: sees the update only
        def on_train_batch_end(self, step, logs=None):
            if cb.pruner.keep:
                pruned = ~np.asarray(cb.pruner.keep["fc1.weight"], dtype=bool).reshape(-1)
                revived.append(int(np.count_nonzero(net.fc1.weight.numpy().reshape(-1)[pruned])))

    cb = PruningCallback(0.5, [0], criterion="magnitude", verbose=0)
    probe = MaskProbe(cb)
    opt = paddle.incubate.optimizer.LookAhead(paddle.optimizer.Adam(0.01, parameters=net.parameters()), k=3)
    fit_regression(net, rng.standard_normal((32, 8)).astype("float32"), optimizer=opt,
                   callbacks=[Before(), cb, probe])
    assert probe.zeros == [96] * 3 and probe.updates_checked == 8
    assert len(revived) == 8 and min(revived) > 0


class Alternating(paddle.nn.Layer):
    """Two branches used on alternate calls: each parameter misses the gradient of half the steps."""

    def __init__(self):
        super().__init__()
        self.a = paddle.nn.Linear(8, 2)
        self.b = paddle.nn.Linear(8, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return (self.a if self.calls % 2 else self.b)(x)


def test_parameters_without_gradient_in_some_steps():
    """A batch that gives a parameter no gradient counts as a zero gradient in its mean."""
    net = Alternating()
    x = rng.standard_normal((32, 8)).astype("float32")
    cb = PruningCallback(0.5, [0], criterion="gradient", verbose=0)
    record = GradientRecord(["a.weight", "b.weight"])
    probe = MaskProbe(cb)
    fit_regression(net, x, epochs=2, callbacks=[record, cb, probe])
    assert probe.zeros == [16, 16] and probe.updates_checked == 4
    # each branch saw gradients in 2 of the 4 batches of each epoch
    assert all(len(record.grads[n][e]) == 2 for n in record.names for e in (0, 1))
    scores = {n: record.mean_sq_grad(n, [0]) for n in record.names}
    assert_pruned_lowest(scores, probe.pruned_at_epoch_end[0])
    assert_mean_sq_grads(cb, record, [1], probe)
    assert 0 < cb.sparsity()["a.weight"] < 1 and 0 < cb.sparsity()["b.weight"] < 1


def test_frozen_parameters_are_neither_hooked_nor_pruned():
    net = MLP()
    net.fc1.weight.stop_gradient = True
    frozen = net.fc1.weight.numpy().copy()
    cb = PruningCallback(0.5, [0], criterion="fisher", verbose=0)

    class Hooked(paddle.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.names = list(cb.pruner._handles)

    hooked = Hooked()
    fit_regression(net, rng.standard_normal((32, 8)).astype("float32"), callbacks=[cb, hooked])
    assert list(cb.pruner.parameters) == hooked.names == ["fc2.weight"]
    np.testing.assert_array_equal(net.fc1.weight.numpy(), frozen)
    assert cb.sparsity()["fc2.weight"] == 0.5


def test_fit_with_eval_and_every_builtin_callback(tmp_path):
    net = MLP()
    model = paddle.Model(net)
    scheduler = paddle.optimizer.lr.StepDecay(0.05, step_size=1, gamma=0.5)
    model.prepare(paddle.optimizer.Momentum(scheduler, parameters=net.parameters()), paddle.nn.CrossEntropyLoss(),
                  paddle.metric.Accuracy())
    cb = PruningCallback(0.6, [0, 1], criterion="fisher", log_dir=str(tmp_path / "vdl"), verbose=0)
    probe = MaskProbe(cb)
    callbacks = [
        cb, probe,
        paddle.callbacks.EarlyStopping(monitor="acc", mode="max", patience=10, save_best_model=False),
        paddle.callbacks.ModelCheckpoint(save_freq=1, save_dir=str(tmp_path / "ckpt")),
        paddle.callbacks.LRScheduler(by_step=False, by_epoch=True),
        paddle.callbacks.VisualDL(log_dir=str(tmp_path / "vdl")),
    ]
    model.fit(classification_data(), classification_data(seed=1), epochs=3, batch_size=32, verbose=0,
              callbacks=callbacks, save_dir=str(tmp_path / "ckpt"))
    assert probe.zeros == [round(0.6 * 192 * (1 - 0.5 ** 3)), round(0.6 * 192), round(0.6 * 192)]
    assert scheduler.last_lr == pytest.approx(0.05 * 0.5 ** 3)
    saved = paddle.load(str(tmp_path / "ckpt" / "final.pdparams"))
    assert int((saved["fc1.weight"].numpy() == 0).sum() + (saved["fc2.weight"].numpy() == 0).sum()) == round(0.6 * 192)
    assert list((tmp_path / "vdl").glob("vdlrecords.*.log")) and list((tmp_path / "vdl" / "pruning").glob("vdlrecords.*.log"))
