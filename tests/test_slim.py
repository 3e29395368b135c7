"""slim(): all-zero channel groups removed in place; outputs equal to the masked network's; smaller shapes
everywhere; jit.save/jit.load; training continues; refusals leave the network untouched."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from channel_nets import ConcatNet, DepthwiseNet, DigitsCNN, PlainMLP, randomize_batch_norm, zero_group_channels
from paddle_prune_callback import slim, trace_channel_groups


def mask_half(net, x, seed=0):
    """Zero a random half of every prunable group's channels; return {group name: kept channel indices}."""
    rng = np.random.default_rng(seed)
    kept = {}
    for group in trace_channel_groups(net, x).groups:
        dead = rng.choice(group.size, group.size // 2, replace=False)
        zero_group_channels(net, group, dead)
        kept[group.name] = np.setdiff1d(np.arange(group.size), dead)
    return kept


def outputs(net, x):
    net.eval()
    with paddle.no_grad():
        return net(x).numpy()


def params(net):
    return {n: p.numpy().copy() for n, p in net.named_parameters()}


def test_digits_cnn_slim_matches_masked_network_and_numpy_reference(tmp_path):
    net, x = DigitsCNN(), paddle.randn([4, 1, 8, 8])
    kept = mask_half(net, x)
    masked = outputs(net, x)
    before = params(net)
    report = slim(net, x)
    k1, k2, k3 = kept["conv1"], kept["conv2"], kept["fc1"]
    # an independent reference: the masked weights indexed with numpy
    rows = (k2[:, None] * 16 + np.arange(16)).reshape(-1)
    expected = {"conv1.weight": before["conv1.weight"][k1], "conv1.bias": before["conv1.bias"][k1],
                "conv2.weight": before["conv2.weight"][k2][:, k1], "conv2.bias": before["conv2.bias"][k2],
                "fc1.weight": before["fc1.weight"][rows][:, k3], "fc1.bias": before["fc1.bias"][k3],
                "fc2.weight": before["fc2.weight"][k3], "fc2.bias": before["fc2.bias"]}
    for name, value in params(net).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    np.testing.assert_allclose(outputs(net, x), masked, rtol=0, atol=1e-5)
    assert report.channels == {"conv1": (16, 8), "conv2": (32, 16), "fc1": (128, 64)}
    assert report.params_before == sum(v.size for v in before.values())
    assert report.params_after == sum(v.size for v in expected.values())
    assert report.flops_after == 2 * (8 * 64 * 9 + 16 * 64 * 8 * 9 + 256 * 64 + 64 * 10)
    assert "Conv2D(1, 8," in str(net) and "Conv2D(8, 16," in str(net)
    assert "conv2: 32 -> 16 channels" in str(report)

    path = str(tmp_path / "digits")
    paddle.jit.save(net, path, input_spec=[paddle.static.InputSpec([None, 1, 8, 8], "float32")])
    loaded = paddle.jit.load(path)
    loaded.eval()
    np.testing.assert_allclose(loaded(x).numpy(), outputs(net, x), rtol=0, atol=1e-6)


def test_resnet18_slim(tmp_path):
    net, x = paddle.vision.models.resnet18(num_classes=10), paddle.randn([2, 3, 32, 32])
    randomize_batch_norm(net)
    kept = mask_half(net, x)
    masked = outputs(net, x)
    report = slim(net, x)
    np.testing.assert_allclose(outputs(net, x), masked, rtol=0, atol=1e-5 * max(1.0, np.abs(masked).max()))
    stream = kept["layer2.1.conv2+layer2.0.conv2+layer2.0.downsample.0"]
    assert net.layer2[0].downsample[0].weight.shape == [64, 32, 1, 1]
    assert net.layer2[0].bn2._mean.shape == [64] and net.layer2[0].bn2._num_features == 64
    assert net.fc.weight.shape == [256, 10]
    assert len(stream) == 64
    assert report.flops_after < 0.3 * report.flops_before
    summary = paddle.summary(net, (1, 3, 32, 32))
    assert summary["total_params"] == sum(int(np.prod(p.shape)) for p in net.parameters())

    path = str(tmp_path / "resnet")
    paddle.jit.save(net, path, input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32")])
    loaded = paddle.jit.load(path)
    loaded.eval()
    np.testing.assert_allclose(loaded(x).numpy(), outputs(net, x), rtol=0, atol=1e-5)


def test_concat_net_slim():
    net, x = ConcatNet(), paddle.randn([3, 3, 8, 8])
    randomize_batch_norm(net)
    kept = mask_half(net, x)
    masked = outputs(net, x)
    before = params(net)
    slim(net, x)
    np.testing.assert_allclose(outputs(net, x), masked, rtol=0, atol=1e-5)
    bn_kept = np.concatenate([kept["a"], 4 + kept["b"]])
    np.testing.assert_array_equal(net.bn.weight.numpy(), before["bn.weight"][bn_kept])
    np.testing.assert_array_equal(net.c.weight.numpy(), before["c.weight"][kept["c"]][:, bn_kept])


def test_depthwise_net_slim(tmp_path):
    net, x = DepthwiseNet(), paddle.randn([3, 3, 8, 8])
    randomize_batch_norm(net)
    kept = mask_half(net, x)
    masked = outputs(net, x)
    before = params(net)
    slim(net, x)
    np.testing.assert_allclose(outputs(net, x), masked, rtol=0, atol=1e-5)
    k = kept["expand"]
    np.testing.assert_array_equal(net.dw.weight.numpy(), before["dw.weight"][k])
    assert net.dw._groups == net.dw._in_channels == net.dw._out_channels == 4 and "groups=4" in str(net.dw)
    path = str(tmp_path / "dw")
    paddle.jit.save(net, path, input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32")])
    loaded = paddle.jit.load(path)
    loaded.eval()
    np.testing.assert_allclose(loaded(x).numpy(), masked, rtol=0, atol=1e-5)


def test_training_continues_with_a_new_optimizer():
    net, x = PlainMLP(), paddle.randn([16, 8])
    mask_half(net, x)
    slim(net, x)
    assert net.fc1.weight.shape == [8, 8] and net.fc2.weight.shape == [8, 6]
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(1e-2, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    y = paddle.randint(0, 4, [16, 1])
    first = net.fc2.weight.numpy().copy()
    model.fit(paddle.io.TensorDataset([x, y]), epochs=1, batch_size=8, verbose=0)
    assert net.fc2.weight.shape == [8, 6] and not np.array_equal(net.fc2.weight.numpy(), first)


def test_nothing_zero_changes_nothing():
    net, x = PlainMLP(), paddle.randn([2, 8])
    before = params(net)
    report = slim(net, x)
    assert report.params_after == report.params_before and report.channels == {"fc1": (16, 16), "fc2": (12, 12)}
    for name, value in params(net).items():
        np.testing.assert_array_equal(value, before[name])


def test_refuses_to_remove_a_whole_group_and_leaves_the_network_untouched():
    net, x = PlainMLP(), paddle.randn([2, 8])
    graph = trace_channel_groups(net, x)
    zero_group_channels(net, graph.groups[0], np.arange(5))
    zero_group_channels(net, graph.groups[1], np.arange(12))
    before = params(net)
    with pytest.raises(ValueError, match=r"every one of the 12 channels of group 'fc2' is zero.*Nothing was changed"):
        slim(net, x)
    for name, value in params(net).items():
        np.testing.assert_array_equal(value, before[name])


def test_a_failed_check_restores_the_network():
    """A wrong group (a consumer slice left out) makes the slimmed forward fail; slim restores every
    parameter and shape attribute before it re-raises."""
    net, x = DigitsCNN(), paddle.randn([2, 1, 8, 8])
    graph = trace_channel_groups(net, x)
    zero_group_channels(net, graph.groups[0], [0, 1])
    group = graph.groups[0]
    graph.groups[0] = type(group)(group.name, group.size, group.producers,
                                  [m for m in group.members if m.role != "consumer"])
    before = params(net)
    with pytest.raises(RuntimeError, match=r"(?s)slimmed network failed to run \(ValueError: .*network was restored"):
        slim(net, x, graph=graph)
    for name, value in params(net).items():
        np.testing.assert_array_equal(value, before[name])
    assert net.conv1._out_channels == 16
    np.testing.assert_array_equal(net(x).shape, [2, 10])


def test_changed_outputs_restore_the_network():
    """A group whose consumer slice points at the wrong channel (offset 4: the other branch's first
    channel) keeps every shape consistent but changes the outputs: slim notices and restores."""
    import dataclasses
    net, x = ConcatNet(), paddle.randn([2, 3, 8, 8])
    graph = trace_channel_groups(net, x)
    a = graph.groups[0]
    graph.groups[0] = dataclasses.replace(a, members=[dataclasses.replace(m, offset=4) if m.parameter == "c.weight"
                                                      else m for m in a.members])
    zero_group_channels(net, graph.groups[0], [0])
    before, masked = params(net), outputs(net, x)
    with pytest.raises(RuntimeError, match=r"outputs differ from the masked network's by .* the network was restored"):
        slim(net, x, graph=graph)
    for name, value in params(net).items():
        np.testing.assert_array_equal(value, before[name])
    assert net.bn._num_features == 10 and net.c._in_channels == 10
    np.testing.assert_array_equal(outputs(net, x), masked)


def test_refused_zero_channels_are_reported_and_kept():
    from conftest import MLP
    net, x = MLP(), paddle.randn([2, 8])
    with paddle.no_grad():
        net.fc1.weight[:, 0] = 0.0
        net.fc1.bias[0] = 0.0
        net.norm.weight[0] = 0.0
        net.norm.bias[0] = 0.0
        net.fc2.weight[0] = 0.0
    report = slim(net, x)
    assert report.kept_zero == {"fc1": "LayerNorm over the features mixes the channels"}
    assert net.fc1.weight.shape == [8, 16]
