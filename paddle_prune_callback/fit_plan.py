"""How long a training run is, as far as it is known when it starts, and which of its batches update.

The callbacks check the pruning schedule against this before any weight changes (an event the run can
never reach is an error), and count optimizer updates with it (the unit of ``prune_steps``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class FitPlan:
    """One run's length.

    Args:
        epochs (int): epochs the run can start at most; the run may stop earlier (EarlyStopping).
        updates (int, optional): optimizer updates the run makes at most; None when unknown (a data loader
            without a length).
        accumulate (int): batches per optimizer update.
        batches_per_epoch (int, optional): batches of a full epoch; None when unknown. An epoch's last
            batch always updates, also after fewer than ``accumulate`` batches.
        why (str): how ``epochs`` was found, for error messages.
    """

    epochs: int
    updates: Optional[int]
    accumulate: int = 1
    batches_per_epoch: Optional[int] = None
    why: str = ""

    def is_update(self, batch: int) -> bool:
        """Whether the optimizer updates after the 0-based ``batch`` of an epoch."""
        return (batch + 1) % self.accumulate == 0 or (batch + 1) == self.batches_per_epoch


def hapi_fit_plan(params: dict, model) -> FitPlan:
    """The plan of a ``paddle.Model.fit``, from the callbacks' ``params`` and the model.

    ``fit(num_iters=N)`` rewrites ``params``: ``epochs`` becomes ``N // steps + 1`` and ``steps``
    ``min(N, steps)``, and the fit stops after exactly N batches, so here the real counts are derived from
    N. ``fit(accumulate_grad_batches=k)`` updates after every k-th batch and after an epoch's last one.
    """
    epochs, steps = int(params.get("epochs") or 0), params.get("steps")
    accumulate = int(getattr(model, "_accumulate", 1) or 1)
    num_iters = getattr(model, "num_iters", None)
    if steps is None:           # no length: the epochs are an upper bound, the updates unknown
        return FitPlan(epochs, None, accumulate, None, f"epochs={epochs}")
    steps = int(steps)
    if num_iters is None:
        per_epoch = math.ceil(steps / accumulate)
        return FitPlan(epochs, epochs * per_epoch, accumulate, steps, f"epochs={epochs}")
    num_iters = int(num_iters)
    why = f"num_iters={num_iters}"
    if epochs == 1 and num_iters == steps:
        # num_iters is at most one epoch: the fit stops after num_iters batches of a longer epoch (or of an
        # epoch exactly that long, which hapi reports as epochs=2), so the epoch's last batch is not reached.
        return FitPlan(1, num_iters // accumulate, accumulate, None, f"{why}, within the first epoch")
    full, rest = divmod(num_iters, steps)
    per_epoch = math.ceil(steps / accumulate)
    return FitPlan(full + (rest > 0), full * per_epoch + rest // accumulate, accumulate, steps,
                   f"{why} at {steps} batches per epoch")
