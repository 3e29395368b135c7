"""When to prune and how much: a pure value object, testable without a model."""
from __future__ import annotations

import math
from typing import Callable, Sequence, Union

from ._validation import check_choice, check_epochs, check_fraction

ScheduleFn = Callable[[int, int], float]
ScheduleSpec = Union[str, ScheduleFn]

SCHEDULES = ("polynomial", "linear", "constant")


def _polynomial(k: int, n: int) -> float:
    # Zhu & Gupta (2017): s = s_f * (1 - (1 - t)^3), with t = (k + 1) / n so the last event reaches s_f.
    return 1.0 - (1.0 - (k + 1) / n) ** 3


def _linear(k: int, n: int) -> float:
    return (k + 1) / n


def _constant(k: int, n: int) -> float:
    return 1.0


_FRACTIONS = {"polynomial": _polynomial, "linear": _linear, "constant": _constant}


def default_prune_epochs(epochs: int) -> tuple[int, ...]:
    """Prune at the end of evenly spaced epochs in the first three quarters of training.

    The last quarter is left for the network to recover at the final sparsity; at most 10 events.
    ``default_prune_epochs(8) == (0, 1, 2, 3, 4, 5)``, ``default_prune_epochs(20)`` has 10 events ending at 14.
    """
    if epochs < 1:
        raise ValueError(f"`epochs` must be >= 1 to place pruning epochs, got {epochs}.")
    last = max(0, math.ceil(0.75 * epochs) - 1)
    count = min(last + 1, 10)
    if count == 1:
        return (last,)
    return tuple(sorted({round(i * last / (count - 1)) for i in range(count)}))


class PruningSchedule:
    """The cumulative sparsity to reach at each pruning epoch.

    Args:
        target_sparsity (float): sparsity in [0, 1) reached at the last pruning epoch.
        prune_epochs (list[int]): 0-based epochs, strictly increasing; pruning happens at the end of each.
        schedule (str|callable, optional): ``"polynomial"`` (cubic ramp of Zhu & Gupta 2017, fast early and
            gentle late), ``"linear"``, ``"constant"`` (the whole target at the first listed epoch), or a
            callable ``(k, n) -> sparsity`` giving the cumulative sparsity at the ``k``-th of ``n`` events;
            its values must be non-decreasing, in [0, 1) and not above ``target_sparsity``.
            Default: ``"polynomial"``.

    Calling the schedule with an epoch returns ``(should_prune, sparsity)``: whether that epoch is a
    pruning epoch, and the cumulative target in force once that epoch has ended (0.0 before the first event).

    Examples:
        >>> s = PruningSchedule(0.9, [1, 3, 5, 7], "linear")
        >>> s(3)
        (True, 0.45)
        >>> s(4)
        (False, 0.45)
    """

    def __init__(self, target_sparsity: float, prune_epochs: Sequence[int], schedule: ScheduleSpec = "polynomial"):
        self.target_sparsity = check_fraction("target_sparsity", target_sparsity)
        self.prune_epochs = check_epochs(prune_epochs)
        self.schedule = check_schedule(schedule)
        self.targets = self._targets()

    def _targets(self) -> tuple[float, ...]:
        n = len(self.prune_epochs)
        if not callable(self.schedule):
            fraction = _FRACTIONS[self.schedule]
            return tuple(self.target_sparsity * fraction(k, n) for k in range(n))
        targets = []
        for k in range(n):
            value = self.schedule(k, n)
            where = f"the `schedule` callable returned {value!r} for (k={k}, n={n})"
            try:
                value = check_fraction("schedule(k, n)", value)
            except (TypeError, ValueError) as err:
                raise type(err)(f"{where}; it must return a sparsity in [0, 1).") from None
            if value > self.target_sparsity:
                raise ValueError(f"{where}, above `target_sparsity`={self.target_sparsity}; return values "
                                 f"<= target_sparsity.")
            if targets and value < targets[-1]:
                raise ValueError(f"{where}, below {targets[-1]!r} at k={k - 1}; sparsity is cumulative and "
                                 f"pruned weights are never revived, so return non-decreasing values.")
            targets.append(value)
        return tuple(targets)

    def __call__(self, epoch: int) -> tuple[bool, float]:
        reached = [t for e, t in zip(self.prune_epochs, self.targets) if e <= epoch]
        return epoch in self.prune_epochs, (reached[-1] if reached else 0.0)

    def __repr__(self) -> str:
        name = self.schedule if isinstance(self.schedule, str) else getattr(self.schedule, "__name__", "callable")
        return (f"PruningSchedule(target_sparsity={self.target_sparsity}, prune_epochs={list(self.prune_epochs)}, "
                f"schedule={name!r})")


def check_schedule(schedule: ScheduleSpec) -> ScheduleSpec:
    if callable(schedule):
        return schedule
    return check_choice("schedule", schedule, SCHEDULES)
