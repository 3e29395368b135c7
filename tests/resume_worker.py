"""A training run for test_resume.py, in its own process so that it can be killed with SIGKILL.

    python resume_worker.py MODE STATE_DIR OUT [CRITERION] [UNIT]

MODE: ``full`` trains 6 epochs; ``crash`` trains the same run and, at epoch 3 batch 2, writes OUT and
waits to be killed; ``resume`` restores the newest checkpoint and trains the remaining epochs. ``full``
and ``resume`` write the final masks and weights to OUT (.npz). UNIT ``epochs`` (default) prunes at the end
of epochs 1, 2 and 4; ``steps`` prunes after optimizer steps 2, 5, 8 and 13, with ``accumulate_grad_batches=3``
(8 batches per epoch: 3 steps per epoch, 18 in all).
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from paddle_prune_callback import PruningCallback  # noqa: E402

EPOCHS = 6


class WaitForKill(paddle.callbacks.Callback):
    def __init__(self, marker):
        super().__init__()
        self.marker = marker
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, step, logs=None):
        if self.epoch == 3 and step == 2:
            with open(self.marker, "w") as f:
                f.write("mid-epoch")
            time.sleep(600)


def main(mode, state_dir, out, criterion="fisher", unit="epochs"):
    paddle.seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8)).astype("float32")
    y = (x[:, :4] ** 2).argmax(1).astype("int64")[:, None]
    data = paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y)])
    net = paddle.nn.Sequential(paddle.nn.Linear(8, 32), paddle.nn.ReLU(), paddle.nn.Linear(32, 4))
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters(), weight_decay=0.01),
                  paddle.nn.CrossEntropyLoss())
    callbacks = []
    if mode == "resume":
        cb = PruningCallback.resume(state_dir, model, verbose=0)
        epochs = EPOCHS - cb.epochs_completed
    else:
        events = {"prune_epochs": [1, 2, 4]} if unit == "epochs" else {"prune_steps": [2, 5, 8, 13]}
        cb = PruningCallback(0.8, criterion=criterion, state_dir=state_dir, verbose=0, **events)
        epochs = EPOCHS
        if mode == "crash":
            callbacks.append(WaitForKill(out))
    model.fit(data, epochs=epochs, batch_size=32, shuffle=False, verbose=0, callbacks=[cb, *callbacks],
              accumulate_grad_batches=1 if unit == "epochs" else 3)
    arrays = {f"keep/{n}": k for n, k in cb.pruner.keep.items()}
    arrays.update({f"weight/{n}": p.numpy() for n, p in net.named_parameters()})
    np.savez(out, epochs_completed=cb.epochs_completed, steps_completed=cb.steps_completed, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
