"""Prune half of ResNet-18's channels during `fit`, slim it, export it, and time it before and after.

    python examples/slim_resnet.py [--epochs 3] [--fraction 0.5] [--images 64] [--out slim_resnet/model]

Random 32×32 images stand in for a dataset, so the accuracy means nothing here: the point is the path
from `PruningCallback(pattern="channel")` to a smaller, faster exported network.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import paddle

from paddle_prune_callback import PruningCallback, slim


def latency_ms(net, x, calls: int = 5) -> float:
    net.eval()
    with paddle.no_grad():
        net(x)
        start = time.perf_counter()
        for _ in range(calls):
            net(x)
    return (time.perf_counter() - start) / calls * 1e3


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.5, help="fraction of each group's channels to prune")
    parser.add_argument("--images", type=int, default=64, help="random training images")
    parser.add_argument("--out", default="slim_resnet/model", help="paddle.jit.save path prefix")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    paddle.seed(0)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((max(args.images, 32), 3, 32, 32)).astype("float32")
    labels = rng.integers(0, 10, (len(images), 1))
    data = paddle.io.TensorDataset([paddle.to_tensor(images), paddle.to_tensor(labels)])

    net = paddle.vision.models.resnet18(num_classes=10)
    spec = paddle.static.InputSpec([None, 3, 32, 32], "float32", "image")
    model = paddle.Model(net, inputs=[spec])          # the channel pattern traces the network from this spec
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters(), weight_decay=1e-4),
                  paddle.nn.CrossEntropyLoss())
    cb = PruningCallback(target_sparsity=args.fraction, prune_epochs=list(range(args.epochs - 1)),
                         criterion="fisher", scope="layer", pattern="channel", verbose=0)
    model.fit(data, epochs=args.epochs, batch_size=16, callbacks=[cb], verbose=0)

    x = paddle.to_tensor(images[:32])               # one batch of 32 to time and to check the outputs
    before_ms = latency_ms(net, x)
    masked = net(x).numpy()
    report = slim(net, x)                            # removes the all-zero channel groups in place
    after_ms = latency_ms(net, x)
    diff = float(np.abs(net(x).numpy() - masked).max())
    paddle.jit.save(net, args.out, input_spec=[spec])
    loaded = paddle.jit.load(args.out)
    loaded.eval()
    exported_diff = float(np.abs(loaded(x).numpy() - masked).max())
    print(report)
    print(f"batch 32 on CPU: masked {before_ms:.1f} ms, slimmed {after_ms:.1f} ms ({before_ms / after_ms:.2f}x); "
          f"outputs differ by {diff:.2g} (exported: {exported_diff:.2g}); saved to {args.out}.pdmodel")
    return {"report": report, "masked_ms": before_ms, "slimmed_ms": after_ms, "diff": diff,
            "exported_diff": exported_diff}


if __name__ == "__main__":
    main()
