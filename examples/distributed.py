"""Data-parallel pruning: the digits CNN on N processes, identical masks on every rank.

    python -m paddle.distributed.launch --nproc_per_node 2 --log_dir log examples/distributed.py

On a CPU build of Paddle the ranks talk over gloo; on GPUs launch gives each process one GPU and NCCL.
``paddle.Model`` wraps the network in ``DataParallel`` and gives each rank its share of the data
(``DistributedBatchSampler``). At each prune event the ranks' squared-gradient scores are combined in one
all-reduce, so every rank prunes the same weights. Rank 0 prints progress and writes the VisualDL log;
every rank prints one line with a digest of its masks (rank 1's is in ``log/workerlog.1``), the same on
all ranks. It also runs as a single process: ``python examples/distributed.py``.
"""
from __future__ import annotations

import argparse
import hashlib

import numpy as np
import paddle

from digits_cnn import DigitsCNN, digits_datasets
from paddle_prune_callback import PruningCallback


def mask_digest(pruning: PruningCallback) -> str:
    """SHA-256 of all masks, in parameter order: equal digests mean bitwise identical masks."""
    digest = hashlib.sha256()
    for name in pruning.pruner.parameters:
        digest.update(name.encode())
        digest.update(np.packbits(pruning.pruner.keep[name]).tobytes())
    return digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--criterion", default="hybrid", choices=("magnitude", "gradient", "fisher", "hybrid"))
    parser.add_argument("--log-dir", default="runs/distributed", help="VisualDL log directory ('' for none)")
    args = parser.parse_args()

    rank, world = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    paddle.seed(0)
    train_data, eval_data = digits_datasets()
    net = DigitsCNN()
    model = paddle.Model(net)                     # with world > 1: DataParallel, DistributedBatchSampler
    model.prepare(paddle.optimizer.Adam(learning_rate=1e-3, parameters=net.parameters()),
                  paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    pruning = PruningCallback(target_sparsity=args.sparsity, prune_epochs=list(range(1, int(0.6 * args.epochs) + 1)),
                              criterion=args.criterion, log_dir=args.log_dir or None, verbose=1)
    # batch_size is per rank: each step trains on world × 64 samples.
    model.fit(train_data, epochs=args.epochs, batch_size=64, callbacks=[pruning], verbose=0)
    accuracy = model.evaluate(eval_data, batch_size=256, verbose=0)["acc"]
    print(f"rank {rank}/{world}: eval accuracy {accuracy:.4f}, global sparsity {pruning.sparsity()['global']:.4f}, "
          f"masks {mask_digest(pruning)}", flush=True)


if __name__ == "__main__":
    main()
