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


def host_values(p) -> np.ndarray:
    """A parameter's values as a flat numpy array, read through Paddle for dtypes numpy has no view of
    (``Tensor.numpy()`` of a bfloat16 tensor returns its raw bits)."""
    if p.dtype in (paddle.float32, paddle.float64):
        return p.numpy().reshape(-1)
    return p.astype("float32").numpy().reshape(-1)


class MaskProbe(paddle.callbacks.Callback):
    """Checks the masks after every optimizer update of a ``Model.fit``; list it after the PruningCallback.

    At every train batch end (after the update and the callback's re-apply) and every epoch end (after a
    prune), every position that the pruner's masks mark as pruned must be exactly zero in the weights,
    and no position pruned before may be alive again. Masks are read as ``np.asarray`` of what
    ``pruner.keep`` holds, so any storage the engine keeps them in will do.

    Attributes:
        zeros (list[int]): exact zeros in the pruned parameters at each epoch end, from the weights.
        updates_checked (int): train batch ends at which at least one mask existed.
        pruned_at_epoch_end (list[dict]): the pruned positions at each epoch end, after its prune.
    """

    def __init__(self, pruning):
        super().__init__()
        self.pruning = pruning
        self.zeros = []
        self.updates_checked = 0
        self.pruned_at_epoch_end = []
        self._pruned = {}

    def _check(self, where: str) -> bool:
        params = dict(self.model.network.named_parameters())
        for name, keep in self.pruning.pruner.keep.items():
            pruned = ~np.asarray(keep, dtype=bool).reshape(-1)
            revived = np.flatnonzero(self._pruned.get(name, np.zeros_like(pruned)) & ~pruned)
            assert revived.size == 0, f"{where}: {name}: pruned positions {revived[:5]} are alive again"
            w = host_values(params[name])
            nonzero = np.flatnonzero(pruned & (w != 0))
            assert nonzero.size == 0, (f"{where}: {name}: {nonzero.size} pruned weights are not zero, "
                                       f"e.g. {w[nonzero[:3]]} at {nonzero[:3]}")
            self._pruned[name] = pruned
        return bool(self._pruned)

    def pruned(self) -> dict:
        """{name: flat bool array of the pruned positions}, as of the last check."""
        return {n: m.copy() for n, m in self._pruned.items()}

    def on_train_batch_end(self, step, logs=None):
        self.updates_checked += self._check(f"after the update of batch {step}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(f"end of epoch {epoch}")
        params = dict(self.model.network.named_parameters())
        self.zeros.append(sum(int(np.count_nonzero(host_values(params[n]) == 0))
                              for n in self.pruning.pruner.parameters))
        self.pruned_at_epoch_end.append(self.pruned())


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
    np.random.seed(0)
    yield


class GradientRecord(paddle.callbacks.Callback):
    """The test's own record of training, for references independent of the package; list it BEFORE the
    PruningCallback. Its hooks are registered before the pruner's, so they see every backward's raw
    gradient; at each epoch end it keeps the weights as they were before that epoch's prune.

    Attributes:
        grads (dict): {name: {epoch: [gradient of each backward that reached the parameter]}} (float64).
        batches (dict): {epoch: number of train batches}.
        weights (list[dict]): {name: weights (float64)} at each epoch end, before the prune.
    """

    def __init__(self, names):
        super().__init__()
        self.names = list(names)
        self.grads = {n: {} for n in self.names}
        self.batches = {}
        self.weights = []
        self._handles = []
        self._epoch = None

    def on_train_begin(self, logs=None):
        params = dict(self.model.network.named_parameters())
        self._handles = [params[n].register_hook(self._hook(n)) for n in self.names]

    def _hook(self, name):
        def hook(grad):
            self.grads[name].setdefault(self._epoch, []).append(grad.numpy().astype(np.float64))
        return hook

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self.batches[epoch] = 0

    def on_train_batch_begin(self, step, logs=None):
        self.batches[self._epoch] += 1

    def on_epoch_end(self, epoch, logs=None):
        params = dict(self.model.network.named_parameters())
        self.weights.append({n: params[n].numpy().astype(np.float64) for n in self.names})

    def on_train_end(self, logs=None):
        for handle in self._handles:
            handle.remove()

    def mean_sq_grad(self, name, epochs) -> np.ndarray:
        """Mean over every train batch of ``epochs`` of g² (zero for a batch that gave no gradient)."""
        total = sum(np.square(g) for e in epochs for g in self.grads[name].get(e, []))
        return total / sum(self.batches[e] for e in epochs)

    def fisher(self, epoch) -> dict:
        """{name: ½·mean(g²)·w²} at the end of ``epoch`` (flat), the epoch's batches only."""
        return {n: (0.5 * self.mean_sq_grad(n, [epoch]) * self.weights[epoch][n] ** 2).reshape(-1)
                for n in self.names}


def assert_pruned_lowest(scores: dict, pruned: dict, rtol: float = 1e-5) -> None:
    """Every pruned score is at most every kept score (one global ranking), up to ``rtol``, where each
    parameter's highest-scoring weight is always kept (the README's rule)."""
    s = np.concatenate([np.where(np.arange(scores[n].size) == np.argmax(scores[n]), np.inf, scores[n].reshape(-1))
                        for n in scores])
    p = np.concatenate([pruned[n] for n in scores])
    assert 0 < p.sum() < p.size
    assert s[p].max() <= s[~p].min() * (1 + rtol), (s[p].max(), s[~p].min())
