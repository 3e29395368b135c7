"""Quickstart: an MLP on generated data, pruned to 90% with one callback.

    python examples/quickstart.py
"""
from __future__ import annotations

import numpy as np
import paddle

from paddle_prune_callback import PruningCallback


def make_data(n: int, seed: int) -> paddle.io.Dataset:
    """Points in 20 dimensions; the class is the sign pattern of the first two coordinates."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 20)).astype("float32")
    y = ((x[:, 0] > 0).astype("int64") * 2 + (x[:, 1] > 0))[:, None]
    return paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y)])


def main() -> None:
    paddle.seed(0)
    net = paddle.nn.Sequential(
        paddle.nn.Linear(20, 128), paddle.nn.ReLU(),
        paddle.nn.Linear(128, 128), paddle.nn.ReLU(),
        paddle.nn.Linear(128, 4),
    )
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(learning_rate=1e-3, parameters=net.parameters()),
                  paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())

    pruning = PruningCallback(
        target_sparsity=0.9,          # 90% of the Linear weights end up exactly zero
        prune_epochs=[1, 2, 3, 4],    # prune at the end of these epochs, ramping up (polynomial)
        criterion="hybrid",           # w²·sqrt(mean g²), the default: see docs/accuracy.md
        log_dir="runs/quickstart",    # VisualDL: visualdl --logdir runs/quickstart --disable-telemetry
    )
    model.fit(make_data(2048, seed=0), epochs=8, batch_size=64, callbacks=[pruning], verbose=0)

    accuracy = model.evaluate(make_data(512, seed=1), batch_size=256, verbose=0)["acc"]
    sparsity = pruning.sparsity()     # counted from the weights: {param: fraction of zeros, ..., "global": x}
    print(f"eval accuracy {accuracy:.4f}, global sparsity {sparsity['global']:.4f}")


if __name__ == "__main__":
    main()
