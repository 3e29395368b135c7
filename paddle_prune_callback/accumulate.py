"""Squared-gradient accumulation: what gradient criteria score with.

:class:`SquaredGradients` holds one float32 accumulator per parameter on its device, adds each backward's
g² from the engine's gradient hooks (unscaled under an enabled AMP loss scaler, and committed only when
the whole batch was finite), counts the batches, and combines the means over ranks under data parallel
with one fused all-reduce.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import paddle


class SquaredGradients:
    """Per-parameter sums of g² since the last prune, and the batch count.

    Args:
        criterion_name (str): named in errors.
    """

    def __init__(self, criterion_name: str):
        self.criterion_name = criterion_name
        self.sums: Dict[str, paddle.Tensor] = {}
        self._pending: Dict[str, paddle.Tensor] = {}
        self.num_batches = 0
        self.skipped_batches = 0
        self.scaler_source: Optional[object] = None

    def ensure(self, name: str, shape) -> None:
        if name not in self.sums:
            self.sums[name] = paddle.zeros(shape, dtype="float32")

    def scaler(self):
        source = self.scaler_source
        scaler = source() if callable(source) else source
        return scaler if scaler is not None and scaler.is_enable() else None

    def adder(self, name: str) -> Callable[[paddle.Tensor], None]:
        """A function adding one backward's gradient of parameter ``name`` (call it under ``no_grad``)."""
        acc = self.sums[name]

        def add(grad: paddle.Tensor) -> None:
            scaler = self.scaler()
            if scaler is None:
                acc.add_(paddle.square(grad.astype("float32")))
            else:  # AMP: unscale; the batch is committed in commit() only if every gradient is finite
                pending = self._pending.get(name)
                if pending is None:
                    pending = self._pending[name] = paddle.zeros(grad.shape, dtype="float32")
                pending.add_(paddle.square(grad.astype("float32") / scaler._scale))

        return add

    def drop_pending(self) -> None:
        self._pending = {}

    def commit(self, batches: int = 1) -> None:
        """After an optimizer update: count its batches (or skip them, when AMP found a non-finite gradient)."""
        if self._pending:
            with paddle.no_grad():
                total = paddle.add_n([x.sum() for x in self._pending.values()])
                finite = bool(paddle.isfinite(total))
                for name, pending in self._pending.items():
                    if finite:
                        self.sums[name].add_(pending)
                    pending.zero_()
            if not finite:
                self.skipped_batches += batches
                return
        self.num_batches += batches

    def restart(self) -> None:
        for acc in self.sums.values():
            acc.zero_()
        self.num_batches = 0
        self.skipped_batches = 0

    def rank_means(self) -> tuple[Dict[str, paddle.Tensor], int]:
        """Each parameter's mean g², averaged over ranks, and how many ranks recorded no batch.

        Under data parallel: one all-reduce of all accumulators in one buffer, whose last slot counts the
        ranks without a batch, so that every rank learns of them together instead of some raising while
        the others wait in the collective. A single process makes no collective."""
        names = list(self.sums)
        world = paddle.distributed.get_world_size()
        with paddle.no_grad():
            flat = paddle.concat([self.sums[n].flatten() for n in names]) / max(self.num_batches, 1)
            empty_ranks = int(self.num_batches == 0)
            if world > 1:
                flat = paddle.concat([flat, paddle.to_tensor([float(empty_ranks)], dtype="float32", place=flat.place)])
                paddle.distributed.all_reduce(flat)
                empty_ranks = int(round(float(flat[-1])))
                flat = flat[:-1] / world
            parts = paddle.split(flat, [int(self.sums[n].size) for n in names])
        return {n: part.reshape(self.sums[n].shape) for n, part in zip(names, parts)}, empty_ranks

    def checked_means(self) -> Dict[str, paddle.Tensor]:
        """:meth:`rank_means`, or the error why there are none (on every rank together)."""
        if not self.sums:
            raise RuntimeError(f"criterion {self.criterion_name!r} needs gradients, but no hooks are attached; "
                               f"call pruner.attach(optimizer) before training.")
        means, empty_ranks = self.rank_means()
        if empty_ranks:
            world = paddle.distributed.get_world_size()
            where = "" if world == 1 else f" on {empty_ranks} of {world} ranks"
            raise RuntimeError(f"criterion {self.criterion_name!r} needs gradients, but no batch was recorded "
                               f"since the last prune{where}; call pruner.step() after each optimizer update.")
        return means

    def sums_to_save(self) -> Dict[str, np.ndarray]:
        """The g² sums to save. Under data parallel, every rank's sums are replaced by the mean over ranks
        of each rank's mean, times the batch count: a run resumed from them on every rank computes the
        same combined score as the uninterrupted run. One all-reduce, so every rank must call it."""
        if paddle.distributed.get_world_size() == 1 or not self.sums:
            return {n: acc.numpy() for n, acc in self.sums.items()}
        means, _ = self.rank_means()
        return {n: m.numpy() * np.float32(self.num_batches) for n, m in means.items()}

    def load(self, name: str, value: np.ndarray, shape) -> None:
        self.ensure(name, shape)
        with paddle.no_grad():
            paddle.assign(paddle.to_tensor(value, dtype="float32"), output=self.sums[name])
