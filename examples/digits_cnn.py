"""Dense vs pruned at 90% sparsity on scikit-learn's digits, one run per criterion.

    python examples/digits_cnn.py [--epochs 20] [--sparsity 0.9] [--log-dir runs/digits]

Prints each run's eval accuracy and the global sparsity measured from the weights, and writes VisualDL
logs to <log-dir>/<run>: open them with `visualdl --logdir runs/digits`.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import paddle
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from paddle_prune_callback import PruningCallback

CRITERIA = ("magnitude", "gradient", "fisher", "hybrid")


class DigitsCNN(paddle.nn.Layer):
    """Two 3×3 convolutions and two fully connected layers for 8×8 digits (71,568 prunable weights)."""

    def __init__(self):
        super().__init__()
        self.conv1 = paddle.nn.Conv2D(1, 16, 3, padding=1)
        self.conv2 = paddle.nn.Conv2D(16, 32, 3, padding=1)
        self.pool = paddle.nn.MaxPool2D(2)
        self.fc1 = paddle.nn.Linear(32 * 4 * 4, 128)
        self.fc2 = paddle.nn.Linear(128, 10)

    def forward(self, x):
        x = paddle.nn.functional.relu(self.conv1(x))
        x = self.pool(paddle.nn.functional.relu(self.conv2(x)))
        x = paddle.nn.functional.relu(self.fc1(paddle.flatten(x, 1)))
        return self.fc2(x)


def digits_datasets(seed: int = 0):
    """scikit-learn's 1,797 digits (shipped with the package), 80/20 stratified split, scaled to [0, 1]."""
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[:, None, :, :]
    y = digits.target.astype("int64")[:, None]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    make = lambda a, b: paddle.io.TensorDataset([paddle.to_tensor(a), paddle.to_tensor(b)])
    return make(x_train, y_train), make(x_test, y_test)


def digits_model(seed: int = 0):
    """The seeded recipe shared by the example and the benchmarks: the data split, a fresh ``DigitsCNN``
    and a ``paddle.Model`` prepared with Adam 1e-3, cross-entropy and accuracy.

    Returns ``(net, model, train_data, eval_data)``.
    """
    paddle.seed(seed)
    np.random.seed(seed)
    train_data, eval_data = digits_datasets()
    net = DigitsCNN()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(learning_rate=1e-3, parameters=net.parameters()),
                  paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return net, model, train_data, eval_data


def train(criterion: str | None, sparsity: float, epochs: int = 20, seed: int = 0, log_dir: str | None = None,
          verbose: int = 0, extra_callbacks=()) -> dict:
    """Train the CNN once (dense when ``criterion`` is None); return accuracy, sparsity and time."""
    net, model, train_data, eval_data = digits_model(seed)
    callbacks = list(extra_callbacks)
    pruning = None
    if criterion is not None:
        # Prune over the first 60% of training, then let the network recover at the final sparsity.
        prune_epochs = list(range(1, int(0.6 * epochs) + 1))
        pruning = PruningCallback(target_sparsity=sparsity, prune_epochs=prune_epochs, criterion=criterion,
                                  log_dir=log_dir, verbose=verbose)
        callbacks.append(pruning)
    if log_dir is not None:
        callbacks.append(paddle.callbacks.VisualDL(log_dir=log_dir))
    start = time.perf_counter()
    model.fit(train_data, epochs=epochs, batch_size=64, shuffle=True, callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(eval_data, batch_size=256, verbose=0)["acc"]
    weights = [p.numpy() for n, p in net.named_parameters() if p.ndim >= 2]
    measured = 1 - sum(np.count_nonzero(w) for w in weights) / sum(w.size for w in weights)
    return {"criterion": criterion or "dense", "accuracy": float(accuracy), "sparsity": float(measured),
            "seconds": seconds, "callback": pruning}


def main() -> None:
    # Raised inside paddle.hapi for every batch of a TensorDataset; harmless, and not this package's.
    warnings.filterwarnings("ignore", message="To copy construct from a tensor")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="runs/digits", help="VisualDL log directory ('' for none)")
    args = parser.parse_args()
    print(f"{'run':<10} {'eval acc':>8} {'sparsity':>9} {'fit s':>6}")
    dense = None
    for criterion in (None, *CRITERIA):
        log_dir = os.path.join(args.log_dir, criterion or "dense") if args.log_dir else None
        r = train(criterion, args.sparsity, args.epochs, args.seed, log_dir)
        dense = dense if dense is not None else r["accuracy"]
        delta = "" if criterion is None else f"  ({100 * (r['accuracy'] - dense):+.2f} points vs dense)"
        print(f"{r['criterion']:<10} {r['accuracy']:>8.4f} {r['sparsity']:>9.4f} {r['seconds']:>6.1f}{delta}",
              flush=True)
    if args.log_dir:
        print(f"VisualDL: visualdl --logdir {args.log_dir} --host 127.0.0.1 --port 8040 --disable-telemetry")


if __name__ == "__main__":
    main()
