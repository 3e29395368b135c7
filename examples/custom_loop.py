"""The pruning engine in a hand-written training loop, without paddle.Model.

    python examples/custom_loop.py
"""
from __future__ import annotations

import numpy as np
import paddle

from paddle_prune_callback import Pruner, PruningSchedule


def main() -> None:
    paddle.seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 16)).astype("float32")
    y = (x @ rng.standard_normal((16, 1)).astype("float32")).astype("float32")
    loader = paddle.io.DataLoader(paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y)]),
                                  batch_size=64, shuffle=True)

    net = paddle.nn.Sequential(paddle.nn.Linear(16, 64), paddle.nn.ReLU(), paddle.nn.Linear(64, 1))
    optimizer = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, parameters=net.parameters())
    schedule = PruningSchedule(target_sparsity=0.8, prune_epochs=[0, 1, 2, 3], schedule="polynomial")
    pruner = Pruner(net, criterion="hybrid", scope="global").attach(optimizer)

    for epoch in range(6):
        for xb, yb in loader:
            loss = paddle.nn.functional.mse_loss(net(xb), yb)
            loss.backward()           # the engine's hooks accumulate g² and mask the gradients
            optimizer.step()
            optimizer.clear_grad()
            pruner.step()             # re-apply the masks after the update: pruned weights stay 0
        should_prune, target = schedule(epoch)
        if should_prune:
            sparsity = pruner.prune(sparsity=target)
            print(f"epoch {epoch}: loss {float(loss):.4f}, sparsity {sparsity['global']:.3f} (target {target:.3f})")
    pruner.detach()
    for name, shape, weights, pruned, fraction in pruner.table():
        print(f"{name:<10} {str(shape):<10} {pruned:>5}/{weights:<5} pruned ({fraction:.1%})")


if __name__ == "__main__":
    main()
