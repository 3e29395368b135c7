from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import pytest  # noqa: E402


class MLP(paddle.nn.Layer):
    def __init__(self, sizes=(8, 16, 4)):
        super().__init__()
        self.fc1 = paddle.nn.Linear(sizes[0], sizes[1])
        self.norm = paddle.nn.LayerNorm(sizes[1])
        self.fc2 = paddle.nn.Linear(sizes[1], sizes[2])

    def forward(self, x):
        return self.fc2(paddle.nn.functional.relu(self.norm(self.fc1(x))))


def classification_data(n=128, features=8, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype("float32")
    y = (np.abs(x[:, :classes]).argmax(1)).astype("int64")[:, None]
    return paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y)])


def zeros(p) -> int:
    w = p.numpy()
    return int(w.size - np.count_nonzero(w))


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
    np.random.seed(0)
    yield
