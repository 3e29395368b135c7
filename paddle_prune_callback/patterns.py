"""Patterns: which weights compete with which, and what shape a pruned set may have.

The engine (:class:`~paddle_prune_callback.Pruner`) composes three small objects: a criterion (the
scores, ``criteria.py``), a pattern (this module) and a schedule (when and how much, ``schedule.py``).
A pattern never touches weights, masks, hooks or optimizer state: it validates, plans and selects; the
engine applies.

Lifecycle of a pattern inside the engine:

1. ``make_pattern(spec)`` maps the ``pattern`` argument (a registered name such as ``"unstructured"``,
   a string a registered family parses such as ``"2:4"``, or a :class:`Pattern` instance) to a pattern.
   Unknown strings raise ``ValueError`` listing what exists.
2. ``check_options(scope=..., threshold=..., target_sparsity=...)``: refuse configurations the pattern
   cannot honour (``PruningCallback.__init__``, ``Pruner.__init__`` and every ``Pruner.prune`` call it,
   before any weight changes). :meth:`Pattern.default_sparsity` may supply the target when none is
   given (N:M: ``1 − N/M``).
3. ``plan(network, selected, explicit)``, once, in ``Pruner.__init__`` before anything changes: returns a
   :class:`Plan` with the parameters the engine manages (the selected ones, minus those left dense with a
   reason, plus coupled ones the pattern adds, e.g. a pruned channel's bias and BatchNorm weight/bias)
   and the reasons. The engine gives every managed parameter a mask, gradient hooks, a g² accumulator
   (for gradient criteria) and zeroed optimizer state at each prune, exactly like a selected weight, and
   reports its sparsity. A pattern that cannot handle a parameter raises ``ValueError`` here, naming the
   parameter and why. A pattern that needs example inputs (a trace) takes them in its constructor.
4. ``select(scores, sparsity=..., threshold=..., scope=...)`` at each prune event: reads per-parameter
   scores on demand from a :class:`~paddle_prune_callback.scores.ScoreSource` (float32 Paddle tensors in
   the parameter's shape, on its device, already-pruned weights at ``PRUNED_SCORE`` = −1) and returns
   keep-masks: bool Paddle tensors in the parameter's shape, for any subset of the managed parameters
   (a missing name keeps its current mask). Groups may span several parameters or live inside one. The
   engine ANDs each with the old mask (nothing is revived), applies all of them together and zeroes the
   optimizer state of the newly pruned weights.
5. ``summary(pruner)``: lines for the train-end summary (e.g. "left dense: fc0.weight (input dim 3 < 4)").

Adding a pattern: subclass :class:`Pattern` and add one entry to ``_FACTORIES`` (the name shown in
errors, a regular expression the string must match in full, and a factory taking the string); nothing in
the engine changes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import paddle

from . import masks
from .device_selection import select_lowest_on_device
from .scores import ScoreSource
from .selection import select_lowest


@dataclass
class Plan:
    """What the engine manages, decided once per network.

    Attributes:
        parameters: the managed parameters by structured name, in the network's order: masks, hooks,
            g² accumulators and optimizer-state zeroing apply to each; sparsity is reported over them.
        dense: selected parameters the pattern leaves dense, by name, with the reason.
        coupled: managed parameters that were not selected but are masked along with selected ones,
            by name, with the reason (e.g. ``"bias of conv1"``).
    """
    parameters: Dict[str, paddle.Tensor]
    dense: Dict[str, str] = field(default_factory=dict)
    coupled: Dict[str, str] = field(default_factory=dict)


class Pattern:
    """Base class: which weights compete, and the shape a pruned set may take. See the module docstring."""

    name = "pattern"

    @property
    def needs_example_inputs(self) -> bool:
        """True for a pattern that must trace the network and has no example inputs yet."""
        return False

    def with_example_inputs(self, example_inputs) -> "Pattern":
        """This pattern, tracing from ``example_inputs``; patterns that do not trace refuse them."""
        raise ValueError(f"`example_inputs` is for pattern='channel', which traces the network; pattern "
                         f"{self.name!r} does not use them. Leave `example_inputs` out.")

    def default_sparsity(self) -> Optional[float]:
        """The target sparsity implied by the pattern when none is given (None: one must be given)."""
        return None

    def check_options(self, *, scope: str, threshold: Optional[float] = None,
                      target_sparsity: Optional[float] = None) -> None:
        """Raise ``ValueError``/``TypeError`` for options this pattern cannot honour; changes nothing."""

    def plan(self, network: paddle.nn.Layer, selected: Dict[str, paddle.Tensor], explicit: bool) -> Plan:
        """The managed parameters for ``selected`` (the ``parameters`` selection; ``explicit`` is True when
        the user listed them, False for the default selection). Raises ``ValueError`` naming a parameter
        the pattern cannot prune, and leaves everything as it was."""
        return Plan(dict(selected))

    def select(self, scores: ScoreSource, *, sparsity: Optional[float] = None, threshold: Optional[float] = None,
               scope: str = "global") -> Dict[str, paddle.Tensor]:
        """Keep-masks (bool Paddle tensors in each parameter's shape) for this prune event."""
        raise NotImplementedError

    def summary(self, pruner) -> List[str]:
        """Lines for the summary at train end; by default, the parameters left dense and why."""
        return [f"left dense: {name} ({why})" for name, why in pruner.plan.dense.items()]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _host(t: paddle.Tensor) -> np.ndarray:
    """A flat read-only numpy view of a CPU tensor's memory (zero-copy, not a host copy)."""
    a = np.from_dlpack(t).reshape(-1)
    a.flags.writeable = False
    return a


class Unstructured(Pattern):
    """Any weight may be pruned: the k lowest scores go, over all parameters (``scope="global"``) or per
    parameter (``scope="layer"``), exactly k with ties broken by position, or every score below a
    ``threshold``. Every parameter keeps at least its highest-scoring weight.

    The selection runs in Paddle ops on the parameters' device
    (:func:`~paddle_prune_callback.device_selection.select_lowest_on_device`); when every parameter is
    on the CPU it runs in numpy on zero-copy views of the same tensors
    (:func:`~paddle_prune_callback.selection.select_lowest`), measured faster there. Both give the same
    masks."""

    name = "unstructured"

    def select(self, scores: ScoreSource, *, sparsity: Optional[float] = None, threshold: Optional[float] = None,
               scope: str = "global") -> Dict[str, paddle.Tensor]:
        names = scores.names
        on_host = masks.HOST_VIEWS_ON_CPU and all(p.place.is_cpu_place() for p in scores.parameters.values())
        select_lowest_fn = select_lowest if on_host else select_lowest_on_device
        fns = [self._scores_fn(scores, n, on_host) for n in names]
        samplers = [self._sampler(scores, n, on_host) for n in names]
        sizes = [scores.size(n) for n in names]
        if threshold is not None:
            keeps = [fn() >= threshold for fn in fns]
        elif scope == "global":
            total = sum(sizes)
            pruned = sum(scores.num_pruned(n) for n in names)
            k = max(min(round(sparsity * total), total - len(names)), pruned)
            keeps = select_lowest_fn(fns, sizes, k, samplers=samplers)
        else:
            keeps = []
            for n, fn, sampler, size in zip(names, fns, samplers, sizes):
                k = max(min(round(sparsity * size), size - 1), scores.num_pruned(n))
                keeps.extend(select_lowest_fn([fn], [size], k, samplers=[sampler]))
        out = {}
        for i, n in enumerate(names):     # one host mask at a time becomes a tensor, and is freed
            keep, keeps[i] = keeps[i], None
            out[n] = (paddle.to_tensor(keep.reshape(scores.shape(n)), place=scores.parameters[n].place) if on_host
                      else keep.reshape(scores.shape(n)))
        return out

    @staticmethod
    def _scores_fn(scores: ScoreSource, name: str, on_host: bool) -> Callable[[], Union[np.ndarray, paddle.Tensor]]:
        def fn():
            s = scores.scores(name).flatten()
            view = np.from_dlpack(s) if on_host else None
            if view is not None and view.flags.writeable:   # numpy < 1.25 views are read-only
                view[np.argmax(view)] = np.inf     # the best weight of every parameter is always kept
            else:
                s[int(paddle.argmax(s))] = np.inf
            return _host(s) if on_host else s
        return fn

    @staticmethod
    def _sampler(scores: ScoreSource, name: str, on_host: bool) -> Callable[[np.ndarray], Union[np.ndarray, paddle.Tensor]]:
        place = scores.parameters[name].place

        def sample(idx: np.ndarray):
            s = scores.sample(name, paddle.to_tensor(idx, dtype="int64", place=place))
            return _host(s) if on_host else s
        return sample


PatternSpec = Union[str, Pattern]

# (name shown in errors, regular expression the string must match in full, factory taking the string).
# A new pattern adds its entry here.
_FACTORIES: List[tuple[str, str, Callable[[str], Pattern]]] = [
    ("unstructured", "unstructured", lambda spec: Unstructured()),
    ("channel", "channel", lambda spec: _channel()),
    ("N:M (e.g. '2:4')", r"\d+:\d+", lambda spec: _nm_pattern(spec)),
]


def _channel() -> Pattern:
    from .channel_pattern import Channel   # imports the tracer; patterns.py stays below it
    return Channel()


def _nm_pattern(spec: str) -> Pattern:
    from .nm import NMPattern   # nm.py builds on this module: imported when first asked for
    return NMPattern(spec)


def pattern_names() -> List[str]:
    return [shown for shown, _, _ in _FACTORIES]


def make_pattern(spec: PatternSpec) -> Pattern:
    """The pattern for a ``pattern`` argument: a :class:`Pattern` instance as is, or a registered string."""
    if isinstance(spec, Pattern):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"`pattern` must be a string such as 'unstructured', or a Pattern; got {spec!r}.")
    for _, regex, factory in _FACTORIES:
        if re.fullmatch(regex, spec):
            return factory(spec)
    raise ValueError(f"`pattern` must be one of {pattern_names()}, got {spec!r}.")


def check_pattern(spec: PatternSpec, *, scope: str, threshold: Optional[float] = None,
                  target_sparsity: Optional[float] = None) -> Pattern:
    """:func:`make_pattern`, then the pattern's own check of the other options."""
    pattern = make_pattern(spec)
    pattern.check_options(scope=scope, threshold=threshold, target_sparsity=target_sparsity)
    return pattern


__all__: Sequence[str] = ("Pattern", "Plan", "Unstructured", "make_pattern", "check_pattern", "pattern_names")
