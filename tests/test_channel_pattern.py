"""pattern="channel": whole groups scored, selected and masked; masks hold through Model.fit; the masked
network slims to the same outputs; tracing from example inputs, Model(inputs=...) or the first batch."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from channel_nets import ConcatNet, DigitsCNN, PlainMLP, member_tensor
from paddle_prune_callback import Pruner, PruningCallback, slim, trace_channel_groups
from paddle_prune_callback.channel_pattern import Channel
from paddle_prune_callback.slim import zero_channels


def group_zeros(net, groups):
    tensors = net.state_dict()
    return {g.name: np.flatnonzero(zero_channels(g, tensors)) for g in groups}


def numpy_magnitude_scores(net, group, roles=("producer", "bias", "norm", "consumer"), mean=False):
    """Sum (or mean) of |w| over the channel's slices of the given roles, from the weights, in numpy."""
    total, count = np.zeros(group.size), 0
    for m in group.members:
        if m.role not in roles:
            continue
        w = np.abs(np.moveaxis(member_tensor(net, m.parameter).numpy(), m.axis, 0))
        w = w[m.offset:m.offset + group.size * m.stride].reshape(group.size, -1)
        total += w.sum(1)
        count += w.shape[1]
    return total / count if mean else total


@pytest.mark.parametrize("score, normalize", [("group", False), ("producer", False), ("group", True)])
def test_plan_and_layer_scope_selection_match_numpy(score, normalize):
    net, x = DigitsCNN(), paddle.randn([2, 1, 8, 8])
    pruner = Pruner(net, "magnitude", scope="layer", pattern=Channel(x, score=score, normalize=normalize))
    assert list(pruner.parameters) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                                       "fc1.bias", "fc2.weight"]
    assert pruner.plan.coupled == {"conv1.bias": "bias of conv1", "conv2.bias": "bias of conv2",
                                   "fc1.bias": "bias of fc1"}
    assert pruner.plan.dense == {}     # fc2's outputs are refused, but its input rows belong to fc1's group
    groups = pruner.pattern.groups
    roles = ("producer",) if score == "producer" else ("producer", "bias", "norm", "consumer")
    expected = {g.name: np.sort(np.argsort(numpy_magnitude_scores(net, g, roles, normalize),
                                           kind="stable")[:round(0.25 * g.size)]) for g in groups}
    pruner.prune(sparsity=0.25)
    zeros = group_zeros(net, groups)
    for name in expected:
        np.testing.assert_array_equal(zeros[name], expected[name], err_msg=name)
    # the whole group is zero, nothing else: weight zeros counted from the weights
    assert int((net.conv1.weight.numpy() == 0).sum()) == 4 * 9
    assert int((net.conv2.weight.numpy() == 0).sum()) == (8 * 16 + 4 * 32 - 8 * 4) * 9
    assert int((net.fc1.weight.numpy() == 0).sum()) == 8 * 16 * 128 + 32 * 512 - 8 * 16 * 32
    assert int((net.fc2.weight.numpy() == 0).sum()) == 32 * 10


def test_global_scope_counts_channels():
    net, x = PlainMLP(), paddle.randn([2, 8])
    pruner = Pruner(net, "magnitude", pattern="channel", example_inputs=x)
    pruner.prune(sparsity=0.5)
    zeros = group_zeros(net, pruner.pattern.groups)
    assert sum(len(z) for z in zeros.values()) == round(0.5 * (16 + 12))
    assert all(len(z) < g.size for z, g in zip(zeros.values(), pruner.pattern.groups))
    pruner.prune(sparsity=0.99)    # 28 channels asked, but every group keeps at least one
    zeros = group_zeros(net, pruner.pattern.groups)
    assert [len(z) for z in zeros.values()] == [15, 11]


def test_masks_hold_through_fit_traced_from_the_first_batch_and_slim(tmp_path):
    from digits_cnn import digits_datasets
    net = DigitsCNN()
    train, test = digits_datasets()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.AdamW(1e-3, parameters=net.parameters(), weight_decay=0.01),
                  paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    cb = PruningCallback(target_sparsity=0.5, prune_epochs=[0, 1], criterion="fisher", scope="layer",
                         pattern="channel", verbose=0)
    model.fit(train, epochs=3, batch_size=64, callbacks=[cb], verbose=0)
    groups = cb.pruner.pattern.groups
    zeros = group_zeros(net, groups)
    assert {n: len(z) for n, z in zeros.items()} == {"conv1": 8, "conv2": 16, "fc1": 64}
    masks = cb.pruner.keep
    for name, p in cb.pruner.parameters.items():     # pruned exactly where the masks say, after 2 more epochs
        np.testing.assert_array_equal(p.numpy().reshape(-1) == 0, ~masks[name], err_msg=name)
    accuracy = model.evaluate(test, batch_size=256, verbose=0)["acc"]
    x = paddle.to_tensor(np.stack([test[i][0] for i in range(16)]))
    net.eval()
    masked = net(x).numpy()
    slim(net, x)
    np.testing.assert_allclose(net(x).numpy(), masked, rtol=0, atol=1e-5)
    assert model.evaluate(test, batch_size=256, verbose=0)["acc"] == accuracy
    assert net.fc1.weight.shape == [256, 64]


def test_resnet18_channels_through_fit_with_model_inputs(tmp_path):
    net = paddle.vision.models.resnet18(num_classes=10)
    spec = paddle.static.InputSpec([None, 3, 32, 32], "float32", "image")
    model = paddle.Model(net, inputs=[spec])
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters(), weight_decay=1e-4),
                  paddle.nn.CrossEntropyLoss())
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((4, 3, 32, 32)).astype("float32"))
    data = paddle.io.TensorDataset([x, paddle.to_tensor(rng.integers(0, 10, (4, 1)))])
    cb = PruningCallback(target_sparsity=0.5, prune_epochs=[0], criterion="magnitude", pattern="channel",
                         scope="layer", verbose=0)
    model.fit(data, epochs=2, batch_size=2, callbacks=[cb], verbose=0)
    groups = cb.pruner.pattern.groups
    assert len(groups) == 12
    zeros = group_zeros(net, groups)
    assert all(len(zeros[g.name]) == g.size // 2 for g in groups)
    net.eval()
    masked = net(x).numpy()
    report = slim(net, x)
    np.testing.assert_allclose(net(x).numpy(), masked, rtol=0, atol=1e-5 * max(1.0, np.abs(masked).max()))
    assert net.conv1.weight.shape == [32, 3, 7, 7] and report.flops_after < 0.3 * report.flops_before
    path = str(tmp_path / "resnet")
    paddle.jit.save(net, path, input_spec=[spec])
    loaded = paddle.jit.load(path)
    loaded.eval()
    np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), rtol=0, atol=1e-5)


def test_bad_channel_arguments():
    net, x = DigitsCNN(), paddle.randn([2, 1, 8, 8])
    with pytest.raises(ValueError, match="pattern='channel' traces the network and needs example inputs"):
        Pruner(net, pattern="channel")
    with pytest.raises(ValueError, match="`example_inputs` is for pattern='channel'.*'unstructured' does not use"):
        Pruner(net, pattern="unstructured", example_inputs=x)
    with pytest.raises(ValueError, match=r"`score` must be one of \['group', 'producer'\], got 'l2'"):
        Channel(score="l2")
    from conftest import MLP
    with pytest.raises(ValueError, match="pattern 'channel' leaves every selected parameter dense: fc1.weight: "
                                         "LayerNorm over the features mixes the channels"):
        Pruner(MLP(), pattern="channel", example_inputs=paddle.randn([2, 8]))
    assert trace_channel_groups(net, x).groups    # nothing was changed on the way


@pytest.mark.parametrize("make, shape, classes", [(PlainMLP, [8], 4), (ConcatNet, [3, 8, 8], 5)])
def test_mlp_and_concat_through_fit_slim_and_jit_save(make, shape, classes, tmp_path):
    net = make()
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal([32] + shape).astype("float32"))
    data = paddle.io.TensorDataset([x, paddle.to_tensor(rng.integers(0, classes, (32, 1)))])
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(1e-2, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    cb = PruningCallback(target_sparsity=0.5, prune_epochs=[0], criterion="fisher", scope="layer",
                         pattern="channel", verbose=0)
    model.fit(data, epochs=2, batch_size=8, callbacks=[cb], verbose=0)
    groups = cb.pruner.pattern.groups
    assert {g.name: len(z) for g, z in zip(groups, group_zeros(net, groups).values())} == \
        {g.name: round(0.5 * g.size) for g in groups}
    net.eval()
    masked = net(x).numpy()
    slim(net, x)
    np.testing.assert_allclose(net(x).numpy(), masked, rtol=0, atol=1e-5)
    path = str(tmp_path / "net")
    paddle.jit.save(net, path, input_spec=[paddle.static.InputSpec([None] + shape, "float32")])
    loaded = paddle.jit.load(path)
    loaded.eval()
    np.testing.assert_allclose(loaded(x).numpy(), masked, rtol=0, atol=1e-5)


def test_resume_a_channel_run(tmp_path):
    from digits_cnn import digits_datasets
    train, _ = digits_datasets()
    spec = paddle.static.InputSpec([None, 1, 8, 8], "float32", "x")

    def model_of(net):
        model = paddle.Model(net, inputs=[spec])
        model.prepare(paddle.optimizer.Adam(1e-3, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
        return model

    net = DigitsCNN()
    cb = PruningCallback(target_sparsity=0.5, prune_epochs=[0], scope="layer", criterion="magnitude",
                         pattern="channel", state_dir=str(tmp_path), verbose=0)
    model_of(net).fit(train, epochs=1, batch_size=128, callbacks=[cb], verbose=0)
    pruned = group_zeros(net, cb.pruner.pattern.groups)

    again = DigitsCNN()
    model = model_of(again)
    resumed = PruningCallback.resume(str(tmp_path), model)      # traced from the Model's InputSpec
    assert resumed.pruner.pattern.name == "channel"
    assert resumed.pruner.plan.parameters.keys() == cb.pruner.parameters.keys()
    model.fit(train, epochs=1, batch_size=128, callbacks=[resumed], verbose=0)
    after = group_zeros(again, resumed.pruner.pattern.groups)
    for name in pruned:
        np.testing.assert_array_equal(after[name], pruned[name])
    with pytest.raises(ValueError, match=r"cannot resume from .*needs example inputs.*PruningCallback.resume"):
        PruningCallback.resume(str(tmp_path), paddle.Model(DigitsCNN()))
