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

Everything here is Paddle ops on the tensor's own device: no host copy.
"""
from __future__ import annotations

import re
from typing import Tuple

import paddle

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
