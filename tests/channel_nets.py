"""Small networks for the channel-pattern tests, and a helper that zeroes chosen channels of groups."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import paddle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from digits_cnn import DigitsCNN  # noqa: E402,F401


class PlainMLP(paddle.nn.Layer):
    def __init__(self, sizes=(8, 16, 12, 4)):
        super().__init__()
        self.fc1 = paddle.nn.Linear(sizes[0], sizes[1])
        self.fc2 = paddle.nn.Linear(sizes[1], sizes[2])
        self.fc3 = paddle.nn.Linear(sizes[2], sizes[3])

    def forward(self, x):
        x = paddle.nn.functional.relu(self.fc1(x))
        return self.fc3(paddle.nn.functional.gelu(self.fc2(x)))


class ConcatNet(paddle.nn.Layer):
    """Two branches concatenated along the channels, a BatchNorm over the concat, a conv, a classifier."""

    def __init__(self):
        super().__init__()
        self.a = paddle.nn.Conv2D(3, 4, 3, padding=1)
        self.b = paddle.nn.Conv2D(3, 6, 1)
        self.bn = paddle.nn.BatchNorm2D(10)
        self.c = paddle.nn.Conv2D(10, 8, 3, padding=1)
        self.fc = paddle.nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        y = paddle.nn.functional.relu(self.bn(paddle.concat([self.a(x), self.b(x)], axis=1)))
        y = paddle.nn.functional.max_pool2d(paddle.nn.functional.relu(self.c(y)), 2)
        return self.fc(paddle.flatten(y, 1))


def randomize_batch_norm(net: paddle.nn.Layer, seed: int = 0) -> None:
    """Running statistics away from 0/1, so that a wrong slice of them would show in the outputs."""
    rng = np.random.default_rng(seed)
    for name, b in net.named_buffers():
        if name.endswith(("_mean", "_variance")):
            b.set_value((rng.random(b.shape) + 0.5).astype("float32"))


def member_tensor(net: paddle.nn.Layer, name: str) -> paddle.Tensor:
    layer = net
    *path, attr = name.split(".")
    for part in path:
        layer = getattr(layer, part)
    return getattr(layer, attr)


def zero_group_channels(net, group, channels, roles=None) -> None:
    """Set the given channels' slices of every member (all roles but running statistics, or ``roles``) to 0."""
    with paddle.no_grad():
        for m in group.members:
            if m.role == "statistic" or (roles is not None and m.role not in roles):
                continue
            t = member_tensor(net, m.parameter)
            w = np.moveaxis(t.numpy(), m.axis, 0).copy()
            w[m.indices(np.asarray(channels))] = 0
            t.set_value(np.moveaxis(w, 0, m.axis))


class DepthwiseNet(paddle.nn.Layer):
    """A MobileNetV2 block: 1×1 expansion, 3×3 depthwise, 1×1 projection, then a classifier."""

    def __init__(self):
        super().__init__()
        self.expand = paddle.nn.Conv2D(3, 8, 1)
        self.bn1 = paddle.nn.BatchNorm2D(8)
        self.dw = paddle.nn.Conv2D(8, 8, 3, padding=1, groups=8)
        self.bn2 = paddle.nn.BatchNorm2D(8)
        self.project = paddle.nn.Conv2D(8, 6, 1, bias_attr=False)
        self.bn3 = paddle.nn.BatchNorm2D(6)
        self.fc = paddle.nn.Linear(6, 3)

    def forward(self, x):
        relu6 = paddle.nn.functional.relu6
        x = relu6(self.bn2(self.dw(relu6(self.bn1(self.expand(x))))))
        return self.fc(self.bn3(self.project(x)).mean(axis=[2, 3]))
