"""The accuracy benchmark's second task: generated 1D signals, a small conv stem and one large fan-in Linear.

Each signal has 128 samples: a Gaussian-windowed burst whose frequency (one of 5) and position (first or
second half) give the class (10 classes), a weaker burst of another frequency at a random place, and
white noise. The classes need both what the convolutions see (frequency) and where (position), which
only ``fc1`` can tell: its fan-in is 32 channels × 64 positions = 2,048, so its initial weights are
small (±1/√2048) next to the convolutions' (±1/√80), which is what global magnitude pruning starves.
The data are fixed (generated from seed 0); the training seed changes only the initialisation and the
batch order, as for the digits task.
"""
from __future__ import annotations

import time

import numpy as np
import paddle

from paddle_prune_callback import PruningCallback

LENGTH, FREQUENCIES, NOISE = 128, (0.06, 0.09, 0.13, 0.18, 0.24), 0.3


class SignalCNN(paddle.nn.Layer):
    """Two 1D convolutions and a Linear with a 2,048 fan-in (84,992 prunable weights, 81,920 in fc1)."""

    def __init__(self, classes: int = 2 * len(FREQUENCIES)):
        super().__init__()
        self.conv1 = paddle.nn.Conv1D(1, 16, 7, padding=3)
        self.conv2 = paddle.nn.Conv1D(16, 32, 5, padding=2)
        self.pool = paddle.nn.MaxPool1D(2)
        self.fc1 = paddle.nn.Linear(32 * LENGTH // 2, 40)
        self.fc2 = paddle.nn.Linear(40, classes)

    def forward(self, x):
        x = self.pool(paddle.nn.functional.relu(self.conv1(x)))
        x = paddle.nn.functional.relu(self.conv2(x))
        x = paddle.nn.functional.relu(self.fc1(paddle.flatten(x, 1)))
        return self.fc2(x)


def make_signals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` signals ``[n, 1, LENGTH]`` float32 and their classes ``[n, 1]`` int64."""
    t = np.arange(LENGTH, dtype=np.float64)
    freq = rng.integers(0, len(FREQUENCIES), n)
    half = rng.integers(0, 2, n)
    centre = half * LENGTH / 2 + rng.uniform(12, LENGTH / 2 - 12, n)
    other = (freq + rng.integers(1, len(FREQUENCIES), n)) % len(FREQUENCIES)
    distractor = rng.uniform(12, LENGTH - 12, n)

    def burst(f, c, amplitude, width):
        window = np.exp(-0.5 * ((t[None, :] - c[:, None]) / width) ** 2)
        phase = rng.uniform(0, 2 * np.pi, (len(c), 1))
        return amplitude[:, None] * window * np.sin(2 * np.pi * np.asarray(FREQUENCIES)[f][:, None] * t + phase)

    x = (burst(freq, centre, rng.uniform(0.8, 1.2, n), 6.0) + burst(other, distractor, rng.uniform(0.3, 0.6, n), 6.0)
         + NOISE * rng.standard_normal((n, LENGTH)))
    return x.astype("float32")[:, None, :], (2 * freq + half).astype("int64")[:, None]


def signal_datasets(train_size: int = 2000, test_size: int = 1000):
    """The fixed train and test sets (seed 0)."""
    rng = np.random.default_rng(0)
    make = lambda a, b: paddle.io.TensorDataset([paddle.to_tensor(a), paddle.to_tensor(b)])
    return make(*make_signals(train_size, rng)), make(*make_signals(test_size, rng))


def train(criterion: str | None, sparsity: float, epochs: int = 20, seed: int = 0, train_size: int = 2000,
          test_size: int = 1000) -> dict:
    """Train once (dense when ``criterion`` is None) with the digits task's recipe; return accuracy, sparsity,
    time and the callback."""
    paddle.seed(seed)
    np.random.seed(seed)
    train_data, eval_data = signal_datasets(train_size, test_size)
    net = SignalCNN()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(learning_rate=1e-3, parameters=net.parameters()),
                  paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    pruning = None
    if criterion is not None:
        pruning = PruningCallback(target_sparsity=sparsity, prune_epochs=list(range(1, int(0.6 * epochs) + 1)),
                                  criterion=criterion, verbose=0)
    start = time.perf_counter()
    model.fit(train_data, epochs=epochs, batch_size=64, shuffle=True, callbacks=[pruning] if pruning else [],
              verbose=0)
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(eval_data, batch_size=256, verbose=0)["acc"]
    weights = [p.numpy() for n, p in net.named_parameters() if p.ndim >= 2]
    measured = 1 - sum(np.count_nonzero(w) for w in weights) / sum(w.size for w in weights)
    return {"criterion": criterion or "dense", "accuracy": float(accuracy), "sparsity": float(measured),
            "seconds": seconds, "callback": pruning}
