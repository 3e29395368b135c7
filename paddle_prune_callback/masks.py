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
