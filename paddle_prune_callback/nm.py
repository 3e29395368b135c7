"""N:M sparsity math, as pure functions on Paddle tensors: at most N non-zeros in every group of M.

Groups run along the **input** dimension, in the layout of ``paddle.incubate.asp`` (and of the sparse
tensor cores it targets):

- Linear weight ``[in, out]``: M consecutive input rows, for each output column (axis 0);
- Conv1D/2D/3D weight ``[out, in, *kernel]``: M consecutive input channels, for each output channel and
  kernel position (axis 1).

An input dimension that is not a multiple of M ends in a partial group, treated as padded with zeros
(as ASP's ``_reshape_1d`` pads): the padding counts toward the group's zeros, so a partial group of
``r`` weights loses ``max(0, zeros - (M - r))`` of them.

The pattern string counts what is *kept* ("2:4" keeps 2 of 4), as NVIDIA writes it; ASP's functions take
the number of *zeros* as their ``n`` (``asp.check_sparsity(w, n=M - N, m=M)``). For 2:4 the two agree.

Everything here is Paddle ops on the tensor's own device: no host copy. :class:`NMPattern` plugs the math
into the engine as ``pattern="N:M"`` (see ``patterns.py``).
"""
from __future__ import annotations

import math
import numbers
import re
from typing import Dict, List, Optional, Tuple

import paddle

from .patterns import Pattern, Plan
from .scores import ScoreSource

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_nm(pattern: str) -> Tuple[int, int]:
    """``"2:4"`` → ``(2, 4)``: N weights kept in every group of M, ``1 <= N < M``.

    Raises:
        ValueError: a string that is not ``"N:M"`` with ``1 <= N < M``.
    """
    match = _NM.match(pattern) if isinstance(pattern, str) else None
    if match is None:
        raise ValueError(f"`pattern` {pattern!r} is not an N:M pattern; write it as 'N:M' with whole numbers, "
                         f"e.g. '2:4' (2 weights kept in every group of 4).")
    n, m = int(match.group(1)), int(match.group(2))
    if not 1 <= n < m:
        raise ValueError(f"`pattern` {pattern!r} must keep between 1 and M-1 weights per group of M "
                         f"(1 <= N < M), e.g. '2:4'.")
    return n, m


def _groups(x: paddle.Tensor, m: int, axis: int, pad_value) -> paddle.Tensor:
    """``x`` with ``axis`` moved last and cut into groups of ``m``, the partial group padded: ``[G, m]``."""
    moved = paddle.moveaxis(x, axis, -1) if axis not in (-1, x.ndim - 1) else x
    pad = -moved.shape[-1] % m
    if pad:
        filler = paddle.full(list(moved.shape[:-1]) + [pad], pad_value, dtype=moved.dtype)
        moved = paddle.concat([moved, filler], axis=-1)
    return moved.reshape([-1, m])


def _ungroup(g: paddle.Tensor, shape, axis: int) -> paddle.Tensor:
    axis = axis % len(shape)
    moved_shape = [int(d) for i, d in enumerate(shape) if i != axis]
    full = g.reshape(moved_shape + [-1])[..., :shape[axis]]
    return paddle.moveaxis(full, -1, axis) if axis != len(shape) - 1 else full


def nm_keep_mask(scores: paddle.Tensor, zeros: int, m: int, axis: int) -> paddle.Tensor:
    """The keep-mask that zeroes the ``zeros`` lowest scores of every group of ``m`` along ``axis``.

    Args:
        scores (paddle.Tensor): floating scores in the weight's shape; mark weights that must stay pruned
            with a score below every live one (e.g. -1 for non-negative scores), so they are chosen first.
        zeros (int): zeros per group, ``0 <= zeros <= m``; the padding of a partial group counts.
        m (int): the group size.
        axis (int): the input dimension (0 for a Linear weight, 1 for a convolution's).

    Returns:
        paddle.Tensor: bool, in ``scores``' shape and on its device; equal scores are cut in position order.
    """
    if not 0 <= zeros <= m:
        raise ValueError(f"`zeros` must be in [0, {m}] for groups of {m}, got {zeros}.")
    if scores.shape[axis] == 0 or zeros == 0:
        return paddle.ones(scores.shape, dtype="bool")
    groups = _groups(scores.astype("float32"), m, axis, float("-inf"))
    rank = paddle.argsort(paddle.argsort(groups, axis=1, stable=True), axis=1, stable=True)
    return _ungroup(rank >= zeros, scores.shape, axis)


def nm_group_counts(weight: paddle.Tensor, n: int, m: int, axis: int) -> Tuple[int, int]:
    """How many groups of ``m`` along ``axis`` have at most ``n`` non-zero weights, and how many groups
    there are (the partial group padded with zeros). ``-0.0`` counts as zero."""
    if weight.numel() == 0:
        return 0, 0
    nonzero = _groups((weight != 0).astype("int32"), m, axis, 0).sum(axis=1)
    return int((nonzero <= n).astype("int64").sum()), int(nonzero.shape[0])


def input_axis(ndim: int) -> int:
    """The input dimension of a weight in ASP's layout: 0 for a 2-D Linear weight ``[in, out]``, 1 for a
    convolution's ``[out, in, *kernel]``."""
    if ndim < 2:
        raise ValueError(f"an N:M pattern needs a weight with at least 2 dimensions, got {ndim}.")
    return 0 if ndim == 2 else 1


_LINEAR = (paddle.nn.Linear,)
_CONV = (paddle.nn.Conv1D, paddle.nn.Conv2D, paddle.nn.Conv3D)
_TRANSPOSED = (paddle.nn.Conv1DTranspose, paddle.nn.Conv2DTranspose, paddle.nn.Conv3DTranspose)
_WHY_NOT = {
    "embedding": "an Embedding is a table lookup, not a matrix product: no N:M kernel runs it and it has no "
                 "input dimension to group along",
    "transposed": "a transposed convolution's weight [in, out, *kernel] has no N:M layout in "
                  "paddle.incubate.asp or on sparse tensor cores",
    "other": "it is not the weight of a Linear or Conv1D/2D/3D layer, so its input dimension is unknown",
}


def _weight_kinds(network: paddle.nn.Layer) -> Dict[str, Tuple[str, Optional[int]]]:
    """Each layer weight's structured name → (kind, input axis or None)."""
    kinds = {}
    for prefix, layer in network.named_sublayers(include_self=True):
        weight = layer._parameters.get("weight") if hasattr(layer, "_parameters") else None
        if weight is None:
            continue
        name = f"{prefix}.weight" if prefix else "weight"
        if isinstance(layer, _LINEAR):
            kinds[name] = ("linear", 0)
        elif isinstance(layer, _CONV):
            kinds[name] = ("conv", 1)
        elif isinstance(layer, paddle.nn.Embedding):
            kinds[name] = ("embedding", None)
        elif isinstance(layer, _TRANSPOSED):
            kinds[name] = ("transposed", None)
    return kinds


class NMPattern(Pattern):
    """``pattern="N:M"``: at most N non-zero weights in every group of M along the input dimension.

    Which weights: the lowest scores of the criterion within each group. How many: at a prune event with
    the schedule's cumulative sparsity ``s``, every group has ``round(s * M)`` zeros (at most ``M - N``;
    already-pruned weights are counted first and never revived), so the last event, at ``s = 1 - N/M``,
    leaves exactly ``M - N`` zeros in every group. The target is ``1 - N/M`` and may be omitted.

    Which parameters: Linear and Conv1D/2D/3D weights. Embeddings and transposed convolutions are not
    selected by default and are refused when listed; any other selected parameter is refused when
    listed, and left out of the default selection; a weight whose input dimension is smaller than M is
    left dense (as ``paddle.incubate.asp`` does). Those left out are listed in the summary, with why.

    Args:
        spec (str): ``"N:M"`` with ``1 <= N < M``, e.g. ``"2:4"``.
    """

    def __init__(self, spec: str):
        self.n, self.m = parse_nm(spec)
        self.name = f"{self.n}:{self.m}"
        self.axes: Dict[str, int] = {}

    def default_sparsity(self) -> float:
        return 1 - self.n / self.m

    def check_options(self, *, scope: str, threshold: Optional[float] = None,
                      target_sparsity: Optional[float] = None) -> None:
        if scope != "global":
            raise ValueError(f"`scope`={scope!r} has no meaning with pattern={self.name!r}: every group of "
                             f"{self.m} gets the same number of zeros. Leave `scope` at its default.")
        if threshold is not None:
            raise ValueError(f"`threshold` cannot be used with pattern={self.name!r}, which keeps exactly "
                             f"{self.n} weights in every group of {self.m}; leave `threshold` out (the target "
                             f"is {self.default_sparsity():g}).")
        if (isinstance(target_sparsity, numbers.Real) and not isinstance(target_sparsity, bool)
                and not math.isclose(target_sparsity, self.default_sparsity(), abs_tol=1e-9)):
            raise ValueError(f"`target_sparsity`={target_sparsity!r} contradicts pattern={self.name!r}, whose "
                             f"sparsity is 1 - {self.n}/{self.m} = {self.default_sparsity():g}; leave "
                             f"`target_sparsity` out or pass {self.default_sparsity():g}.")

    def plan(self, network: paddle.nn.Layer, selected: Dict[str, paddle.Tensor], explicit: bool) -> Plan:
        kinds = _weight_kinds(network)
        managed, dense, axes = {}, {}, {}
        for name, p in selected.items():
            kind, axis = kinds.get(name, ("other", None))
            if axis is None:
                if explicit:
                    raise ValueError(f"parameter {name!r} cannot be pruned with pattern={self.name!r}: "
                                     f"{_WHY_NOT[kind]}. Leave it out of `parameters`.")
                dense[name] = f"not selected: {_WHY_NOT[kind]}"
            elif p.shape[axis] < self.m:
                dense[name] = f"input dimension {p.shape[axis]} < {self.m}"
            else:
                managed[name], axes[name] = p, axis
        self.axes.update(axes)
        return Plan(managed, dense=dense)

    def zeros_per_group(self, sparsity: float) -> int:
        """The zeros of every group at a prune event whose cumulative sparsity is ``sparsity``."""
        return min(int(math.floor(sparsity * self.m + 0.5)), self.m - self.n)

    def select(self, scores: ScoreSource, *, sparsity: Optional[float] = None, threshold: Optional[float] = None,
               scope: str = "global") -> Dict[str, paddle.Tensor]:
        zeros = self.zeros_per_group(sparsity)
        if zeros == 0:
            return {}
        return {n: nm_keep_mask(scores.scores(n), zeros, self.m, self.axes[n]) for n in scores.names}

    def summary(self, pruner) -> List[str]:
        counts = {n: nm_group_counts(p, self.n, self.m, self.axes[n]) for n, p in pruner.parameters.items()}
        ok, total = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
        short = [f"{n} {c[0]:,}/{c[1]:,}" for n, c in counts.items() if c[0] < c[1]]
        line = f"groups meeting {self.name}: {ok:,} of {total:,}" + (f" (short: {', '.join(short)})" if short else "")
        return [line] + super().summary(pruner)

    def __repr__(self) -> str:
        return f"NMPattern({self.name!r})"
