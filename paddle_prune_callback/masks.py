"""One parameter's mask, held on the parameter's device in one of two forms (``mask_dtype``).

- ``"float"``: the keep-mask in the parameter's dtype (1 where kept), applied with ``multiply_``: the
  cheapest per-step re-apply on CPU, at the parameter's bytes per weight.
- ``"bool"``: the PRUNED positions as 1 byte per weight, applied with ``masked_fill_``: 4× fewer bytes
  than an fp32 mask to hold and, on memory-bound devices (GPUs), to read per step.

``"auto"`` (the default) picks ``"float"`` for float32/float64 parameters on CPU, where it was measured
faster (``benchmarks/prune_event.py``), and ``"bool"`` everywhere else: on GPUs, and for float16/bfloat16
parameters (Paddle's CPU build has no float16 ``multiply`` kernel).
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import paddle

MASK_DTYPES = ("auto", "bool", "float")
_HOST_VIEWABLE = (paddle.bool, paddle.float16, paddle.float32, paddle.float64)

#: On CPU, count, mark and select in numpy on zero-copy views of the tensors' memory (``np.from_dlpack``),
#: measured several times faster than Paddle's CPU kernels for these; False runs the device path (the
#: same Paddle ops as on a GPU) everywhere, which is how the tests prove that path on CPU.
HOST_VIEWS_ON_CPU = True


@functools.lru_cache(maxsize=None)
def _viewable(dtype) -> bool:
    """Whether this numpy and Paddle exchange ``dtype`` through DLPack (older numpy lacks bool)."""
    try:
        np.from_dlpack(paddle.zeros([2], dtype=dtype))
    except Exception:  # noqa: BLE001 - any failure means: use the device path for this dtype
        return False
    return True


def host_view(t: paddle.Tensor):
    """A zero-copy numpy view of a CPU tensor's memory, or None where the device path must run."""
    if HOST_VIEWS_ON_CPU and t.place.is_cpu_place() and t.dtype in _HOST_VIEWABLE and _viewable(t.dtype):
        return np.from_dlpack(t.detach())
    return None


def count_nonzero(t: paddle.Tensor) -> int:
    """Exact count of the non-zero entries (``-0.0`` is zero), on the tensor's device; on CPU on a zero-copy
    view (10× faster than Paddle's CPU ``count_nonzero``)."""
    view = host_view(t)
    if view is not None:
        return int(np.count_nonzero(view))
    return int(paddle.count_nonzero(t))


def all_finite(t: paddle.Tensor) -> bool:
    """Whether every entry is finite, on the tensor's device (on CPU, on a zero-copy view)."""
    view = host_view(t)
    if view is not None:
        return bool(np.isfinite(view).all())
    return bool(paddle.isfinite(t).all())


def resolve_mask_dtype(mask_dtype: str, param: paddle.Tensor) -> str:
    if mask_dtype != "auto":
        return mask_dtype
    fast_float = param.place.is_cpu_place() and param.dtype in (paddle.float32, paddle.float64)
    return "float" if fast_float else "bool"


class Mask:
    """A parameter's mask: which weights are kept, in the form chosen by ``kind`` (see the module)."""

    def __init__(self, keep: paddle.Tensor, kind: str, dtype):
        self.kind = kind
        with paddle.no_grad():
            self._data = keep.astype(dtype) if kind == "float" else paddle.logical_not(keep)

    @classmethod
    def from_keep_(cls, keep: paddle.Tensor, kind: str, dtype) -> "Mask":
        """A mask from a bool keep-mask that it may overwrite: on CPU a ``"bool"`` mask inverts it in place
        and holds it, instead of allocating a new tensor."""
        view = host_view(keep) if kind == "bool" else None
        if view is None or not view.flags.writeable:
            return cls(keep, kind, dtype)
        np.logical_not(view, out=view)
        mask = cls.__new__(cls)
        mask.kind, mask._data = kind, keep
        return mask

    def keep(self) -> paddle.Tensor:
        """The keep-mask as bool, in the parameter's shape, computed on demand (not held)."""
        with paddle.no_grad():
            return self._data > 0 if self.kind == "float" else paddle.logical_not(self._data)

    def pruned(self) -> paddle.Tensor:
        """The pruned positions as bool, in the parameter's shape (the held tensor itself for ``"bool"``)."""
        with paddle.no_grad():
            return self._data <= 0 if self.kind == "float" else self._data

    def pruned_view(self):
        """The pruned positions as a numpy bool array through a zero-copy view on CPU, or None elsewhere."""
        view = host_view(self._data)
        if view is None:
            return None
        return view == 0 if self.kind == "float" else view

    def pruned_at(self, index: paddle.Tensor) -> paddle.Tensor:
        """The pruned positions at the given flat indices (bool)."""
        with paddle.no_grad():
            data = paddle.gather(self._data.flatten(), index)
            return data <= 0 if self.kind == "float" else data

    def num_pruned(self) -> int:
        if self.kind == "float":
            return int(self._data.size) - count_nonzero(self._data)
        return count_nonzero(self._data)

    def apply_(self, t: paddle.Tensor) -> None:
        """Zero the pruned positions of ``t`` (the parameter, or a tensor of its shape) in place."""
        if self.kind == "float" and t.dtype == self._data.dtype:
            t.multiply_(self._data)
        elif self.kind == "float":
            t.multiply_(self._data.astype(t.dtype))
        else:
            t.masked_fill_(self._data, 0.0)

    def masked(self, grad: paddle.Tensor) -> paddle.Tensor:
        """A new tensor: ``grad`` with the pruned positions zeroed (for gradient hooks)."""
        if self.kind == "float":
            return grad * (self._data if grad.dtype == self._data.dtype else self._data.astype(grad.dtype))
        return paddle.masked_fill(grad, self._data, 0.0)

    @property
    def nbytes(self) -> int:
        return int(self._data.size) * self._data.element_size()


def newly_pruned(keep: paddle.Tensor, old: Optional[Mask]) -> tuple:
    """``(keep AND old's keep-mask, the positions newly pruned)`` for a new keep-mask of a parameter whose
    current mask is ``old`` (None: nothing pruned yet). On CPU ``keep`` is ANDed in place and the positions
    are a flat numpy bool array; elsewhere a bool tensor in the parameter's shape. The positions are None
    when ``old`` is None (they are then all that the new mask prunes), and False when nothing is new."""
    view = host_view(keep)
    old_pruned = None if old is None else old.pruned_view()
    with paddle.no_grad():
        if view is not None and view.flags.writeable and (old is None or old_pruned is not None):
            view = view.reshape(-1)
            if old is None:
                return keep, (False if view.all() else None)
            old_pruned = old_pruned.reshape(-1)
            newly = np.logical_or(view, old_pruned)
            np.logical_not(newly, out=newly)
            if not newly.any():
                return keep, False
            np.greater(view, old_pruned, out=view)        # keep AND NOT old-pruned, in the tensor's memory
            return keep, newly
        newly = paddle.logical_not(keep)
        if old is not None:
            old_keep = old.keep()
            newly = paddle.logical_and(newly, old_keep)
            keep = paddle.logical_and(keep, old_keep)
        if not bool(newly.any()):
            return keep, False
        return keep, (None if old is None else newly)


class UndoPositions:
    """Where a prune event changes one parameter and its optimizer state (``tensors``): takes the old values
    there before each in-place update, and puts them back if the event fails. ``newly`` is what
    :func:`newly_pruned` returned (None: every position ``mask`` prunes). On CPU it works in numpy on
    zero-copy views; elsewhere with ``masked_select``/``masked_scatter``."""

    def __init__(self, newly, mask: Mask, tensors: list):
        self.tensors, self._mask = tensors, mask
        views = [host_view(t) for t in tensors]
        host = (all(v is not None and v.flags.writeable for v in views)
                and (isinstance(newly, np.ndarray) or (newly is None and host_view(mask._data) is not None)))
        if not host and isinstance(newly, np.ndarray):
            newly = paddle.to_tensor(newly.reshape(tensors[0].shape), place=tensors[0].place)
        self._newly = newly
        self._views = [v.reshape(-1) for v in views] if host else None

    def _positions(self):
        if self._newly is not None:
            return self._newly
        return self._mask.pruned_view().reshape(-1) if self._views is not None else self._mask.pruned()

    def take(self, i: int):
        """The old values of tensor ``i`` at the positions (numpy on CPU, a tensor elsewhere)."""
        if self._views is not None:
            return self._views[i][self._positions()]
        with paddle.no_grad():
            return paddle.masked_select(self.tensors[i], self._positions())

    def put(self, i: int, values) -> None:
        """Write ``values`` (from :meth:`take`) back into tensor ``i``, in place."""
        if self._views is not None:
            self._views[i][self._positions()] = values
            return
        t = self.tensors[i]
        with paddle.no_grad():
            paddle.assign(paddle.masked_scatter(t, self._positions(), values), output=t)
