"""Channel groups found by tracing: the exact slices of small networks and ResNet-18, refusals with
reasons, and an independent check that every consumer of a channel is found (perturbing a channel whose
listed consumer slices are zero changes no output)."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from channel_nets import (ConcatNet, DepthwiseNet, DigitsCNN, PlainMLP, member_tensor, randomize_batch_norm,
                          zero_group_channels)
from conftest import MLP
from paddle_prune_callback import trace_channel_groups


def slices(group):
    return sorted((m.parameter, m.axis, m.offset, m.stride, m.role) for m in group.members)


def by_name(graph):
    return {g.name: g for g in graph.groups + graph.refused}


def test_digits_cnn_groups_are_exact():
    graph = trace_channel_groups(DigitsCNN(), paddle.randn([2, 1, 8, 8]))
    assert [g.name for g in graph.groups] == ["conv1", "conv2", "fc1"]
    conv1, conv2, fc1 = graph.groups
    assert (conv1.size, conv2.size, fc1.size) == (16, 32, 128)
    assert slices(conv1) == [("conv1.bias", 0, 0, 1, "bias"), ("conv1.weight", 0, 0, 1, "producer"),
                             ("conv2.weight", 1, 0, 1, "consumer")]
    # through max-pool and flatten: each of conv2's channels owns 4×4 = 16 consecutive rows of fc1
    assert slices(conv2) == [("conv2.bias", 0, 0, 1, "bias"), ("conv2.weight", 0, 0, 1, "producer"),
                             ("fc1.weight", 0, 0, 16, "consumer")]
    assert slices(fc1) == [("fc1.bias", 0, 0, 1, "bias"), ("fc1.weight", 1, 0, 1, "producer"),
                           ("fc2.weight", 0, 0, 1, "consumer")]
    refused = {g.name: g.reasons for g in graph.refused}
    assert refused == {"input 'input_0'": ["network input channels are never pruned"],
                       "fc2": ["reaches the network's output (output channels are never pruned)"]}
    assert all(m.reason for g in graph.groups for m in g.members)
    # FLOPs per example, counted independently: 2 × MACs of each conv and matmul
    assert graph.flops == 2 * (16 * 64 * 1 * 9 + 32 * 64 * 16 * 9 + 512 * 128 + 128 * 10)


def test_mlp_groups_and_layer_norm_refusal():
    graph = trace_channel_groups(PlainMLP(), paddle.randn([3, 8]))
    assert [g.name for g in graph.groups] == ["fc1", "fc2"]
    assert slices(graph.groups[1]) == [("fc2.bias", 0, 0, 1, "bias"), ("fc2.weight", 1, 0, 1, "producer"),
                                       ("fc3.weight", 0, 0, 1, "consumer")]
    graph = trace_channel_groups(MLP(), paddle.randn([3, 8]))     # fc1 -> LayerNorm -> relu -> fc2
    assert graph.groups == []
    assert by_name(graph)["fc1"].reasons == ["LayerNorm over the features mixes the channels"]


def test_resnet18_groups():
    net = paddle.vision.models.resnet18(num_classes=10)
    net.train()
    net.layer2.eval()
    graph = trace_channel_groups(net, paddle.randn([1, 3, 32, 32]))
    assert net.training and net.layer1.training and not net.layer2.training and not net.layer2[0].bn1.training
    groups = by_name(graph)
    assert len(graph.groups) == 12          # the 8 inner convs + the 4 residual streams
    stream1 = groups["layer1.1.conv2+layer1.0.conv2+conv1"]
    assert sorted(stream1.producers) == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    consumers = sorted(m.parameter for m in stream1.members if m.role == "consumer")
    assert consumers == ["layer1.0.conv1.weight", "layer1.1.conv1.weight", "layer2.0.conv1.weight",
                         "layer2.0.downsample.0.weight"]
    assert {m.parameter for m in stream1.members if m.role == "statistic"} == {
        "bn1._mean", "bn1._variance", "layer1.0.bn2._mean", "layer1.0.bn2._variance",
        "layer1.1.bn2._mean", "layer1.1.bn2._variance"}
    assert len(stream1.ties) == 2 and all("residual add" in t for t in stream1.ties)
    stream4 = groups["layer4.1.conv2+layer4.0.conv2+layer4.0.downsample.0"]
    assert ("fc.weight", 0, 0, 1, "consumer") in slices(stream4)      # through avg-pool and flatten
    inner = groups["layer3.0.conv1"]
    assert slices(inner) == [("layer3.0.bn1._mean", 0, 0, 1, "statistic"),
                             ("layer3.0.bn1._variance", 0, 0, 1, "statistic"),
                             ("layer3.0.bn1.bias", 0, 0, 1, "norm"), ("layer3.0.bn1.weight", 0, 0, 1, "norm"),
                             ("layer3.0.conv1.weight", 0, 0, 1, "producer"),
                             ("layer3.0.conv2.weight", 1, 0, 1, "consumer")]
    assert groups["fc"].reasons == ["reaches the network's output (output channels are never pruned)"]


def test_concat_offsets():
    graph = trace_channel_groups(ConcatNet(), paddle.randn([2, 3, 8, 8]))
    groups = by_name(graph)
    assert [g.name for g in graph.groups] == ["a", "b", "c"]
    assert slices(groups["a"]) == sorted([("a.weight", 0, 0, 1, "producer"), ("a.bias", 0, 0, 1, "bias")] + [
        (f"bn.{p}", 0, 0, 1, r) for p, r in (("_mean", "statistic"), ("_variance", "statistic"), ("weight", "norm"),
                                             ("bias", "norm"))] + [("c.weight", 1, 0, 1, "consumer")])
    assert ("bn.weight", 0, 4, 1, "norm") in slices(groups["b"])
    assert ("c.weight", 1, 4, 1, "consumer") in slices(groups["b"])
    assert ("fc.weight", 0, 0, 16, "consumer") in slices(groups["c"])


def test_depthwise_filters_go_with_their_channels():
    graph = trace_channel_groups(DepthwiseNet(), paddle.randn([2, 3, 8, 8]))
    assert [g.name for g in graph.groups] == ["expand", "project"]
    assert slices(graph.groups[0]) == sorted(
        [("expand.weight", 0, 0, 1, "producer"), ("expand.bias", 0, 0, 1, "bias"),
         ("dw.weight", 0, 0, 1, "channelwise"), ("dw.bias", 0, 0, 1, "bias"), ("project.weight", 1, 0, 1, "consumer")]
        + [(f"{bn}.{p}", 0, 0, 1, "statistic") for bn in ("bn1", "bn2") for p in ("_mean", "_variance")]
        + [(f"{bn}.{p}", 0, 0, 1, "norm") for bn in ("bn1", "bn2") for p in ("weight", "bias")])
    graph = trace_channel_groups(paddle.vision.models.mobilenet_v2(num_classes=10), paddle.randn([1, 3, 32, 32]))
    assert len(graph.groups) == 25 and [g.name for g in graph.refused] == ["input 'input_0'", "classifier.1"]


@pytest.mark.parametrize("make, shape", [(ConcatNet, [2, 3, 8, 8]), (DigitsCNN, [2, 1, 8, 8]),
                                         (DepthwiseNet, [2, 3, 8, 8]),
                                         (lambda: paddle.vision.models.resnet18(num_classes=10), [2, 3, 32, 32])])
def test_listed_consumers_are_all_of_them(make, shape):
    """Independent of how the groups were found: once a channel's listed consumer slices are zero, no
    change to its producing filter, bias or BatchNorm changes the output. A missed consumer would."""
    net = make()
    randomize_batch_norm(net)
    net.eval()
    x = paddle.randn(shape)
    graph = trace_channel_groups(net, x)
    rng = np.random.default_rng(0)
    for group in graph.groups:
        channel = int(rng.integers(group.size))
        zero_group_channels(net, group, [channel], roles={"consumer"})
        before = net(x).numpy()
        with paddle.no_grad():
            for m in group.members:
                if m.role in ("producer", "bias", "norm", "channelwise"):
                    t = member_tensor(net, m.parameter)
                    w = np.moveaxis(t.numpy(), m.axis, 0).copy()
                    w[m.indices([channel])] += 1.0
                    t.set_value(np.moveaxis(w, 0, m.axis))
        np.testing.assert_array_equal(net(x).numpy(), before, err_msg=group.name)


def test_perturbation_check_can_fail():
    """The check above notices a consumer left out: with fc1's rows of a conv2 channel not zeroed,
    perturbing that channel's filter changes the output."""
    net = DigitsCNN()
    x = paddle.randn([2, 1, 8, 8])
    group = trace_channel_groups(net, x).groups[1]
    partial = type(group)(group.name, group.size, group.producers,
                          [m for m in group.members if m.parameter != "fc1.weight"])
    zero_group_channels(net, partial, [3], roles={"consumer"})
    before = net(x).numpy()
    with paddle.no_grad():
        net.conv2.weight[3] += 1.0
    assert not np.array_equal(net(x).numpy(), before)


class Grouped(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = paddle.nn.Conv2D(3, 8, 1)
        self.dw = paddle.nn.Conv2D(8, 8, 3, padding=1, groups=8)
        self.g = paddle.nn.Conv2D(8, 8, 1, groups=2)
        self.fc = paddle.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.g(self.dw(self.a(x))).mean(axis=[2, 3]))


class Mixing(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = paddle.nn.Conv2D(3, 8, 1)
        self.b = paddle.nn.Conv2D(3, 8, 1)
        self.c = paddle.nn.Conv2D(3, 8, 1)
        self.fc = paddle.nn.Linear(8, 2)
        self.fc2 = paddle.nn.Linear(64, 2)

    def forward(self, x):
        a = paddle.reshape(self.a(x), [-1, 2, 4, 16])                        # splits the channel axis
        b = paddle.nn.functional.softmax(self.b(x), axis=1)
        c = self.c(x).transpose([0, 2, 3, 1])
        return self.fc2(a.reshape([-1, 64 * 2])[:, :64]) + self.fc(b.mean(axis=[2, 3])) + self.fc(c.mean(axis=[1, 2]))


def test_untraceable_channels_are_refused_with_reasons():
    groups = by_name(trace_channel_groups(Grouped(), paddle.randn([1, 3, 4, 4])))
    assert all(not g.prunable for g in groups.values())
    # a's channels pass the depthwise conv (one filter per channel) and meet the grouped one
    assert groups["a"].reasons == ["grouped convolutions (groups=2) are not handled"]
    assert ("dw.weight", 0, 0, 1, "channelwise") in slices(groups["a"]) and "dw" not in groups
    assert groups["g"].reasons == ["grouped convolutions (groups=2) are not handled"]
    groups = by_name(trace_channel_groups(Mixing(), paddle.randn([1, 3, 4, 4])))
    assert groups["a"].reasons == ["a reshape from [-1, 8, 4, 4] to [-1, 2, 4, 16] that mixes the channels"]
    assert groups["b"].reasons == ["softmax mixes the channels"]
    assert groups["c"].reasons == ["transpose moves the channel axis"]
    assert not any(g.prunable for g in groups.values())


def test_bad_inputs():
    with pytest.raises(TypeError, match="expected a paddle.nn.Layer, got list"):
        trace_channel_groups([], paddle.randn([1, 3]))
    with pytest.raises(TypeError, match=r"`example_inputs` must be a paddle.Tensor.*item 0 is a ndarray"):
        trace_channel_groups(PlainMLP(), np.zeros((1, 8), "float32"))
    with pytest.raises(ValueError, match="`example_inputs` is empty"):
        trace_channel_groups(PlainMLP(), [])
    with pytest.raises(RuntimeError, match="could not trace PlainMLP.forward"):
        trace_channel_groups(PlainMLP(), paddle.randn([1, 5]))
