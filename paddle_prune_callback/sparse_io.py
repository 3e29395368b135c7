"""Sparse checkpoints: a pruned state dict in one ``.npz`` that is as small as its non-zero weights.

A file holds a JSON manifest (format version, and each tensor's name, shape, dtype and encoding) and, per
tensor, one of three encodings, whichever is smallest:

- ``dense``: every value, as ``paddle.save`` would. Used below :data:`MIN_SPARSITY` zeros, and for
  non-floating tensors.
- ``bitmask``: ``np.packbits`` of the non-zero positions (1 bit per weight) and the non-zero values.
- ``N:M``: when every group of M consecutive weights along the input dimension (axis 0 of a 2-D weight,
  axis 1 of a convolution's; the layout of ``paddle.incubate.asp``) has at most N non-zeros, each group
  is stored as the index of its N positions among the ``C(M, N)`` possible ones, several groups packed
  per byte, and its N values. For 2:4 that is 2.7 bits per group against the bit-mask's 4.

The arrays are deflated into the ``.npz`` (level 1) and read back with ``allow_pickle=False``: loading a
file cannot execute code. Values are stored with their own bits (bfloat16 as its uint16 bits, since
``Tensor.numpy()`` of a bfloat16 tensor returns them), so a round trip is bitwise, NaN payloads included.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import tempfile
import zipfile
import zlib
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import paddle

FORMAT = "paddle_prune_callback.sparse"
FORMAT_VERSION = 1
MIN_SPARSITY = 0.3
NM_GROUP_SIZES = (4, 8)
_MANIFEST = "manifest"
_FLOAT_BITS = {"float16": np.uint16, "bfloat16": np.uint16, "float32": np.uint32, "float64": np.uint64}
_FP16_MAX = float(np.finfo(np.float16).max)


@dataclasses.dataclass
class SparseFileReport:
    """What :func:`save_sparse` wrote.

    Attributes:
        path (str): the file.
        file_bytes (int): its size.
        encodings (dict[str, str]): each tensor's encoding: ``"dense"``, ``"bitmask"`` or ``"N:M"``.
        values_dtype (str|None): the lossy values dtype, or None for a lossless file.
        max_abs_error (float): the largest ``|stored - original|`` over all values; 0.0 when lossless.
    """

    path: str
    file_bytes: int
    encodings: Dict[str, str]
    values_dtype: Optional[str]
    max_abs_error: float


# ---------------------------------------------------------------------------------------------- N:M code
@functools.lru_cache(maxsize=None)
def _combinations(m: int, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``C(m, n)`` position sets as rows ``[C, n]``, and for every m-bit occupancy code with at most n
    bits set the index of the first position set that contains it (-1 for codes with more bits)."""
    combos = np.array(list(itertools.combinations(range(m), n)), dtype=np.int64).reshape(-1, n)
    lookup = np.full(1 << m, -1, dtype=np.int64)
    for i, row in enumerate(combos):
        superset = int(sum(1 << int(j) for j in row))
        for code in range(superset + 1):       # every subset of the set (visited from the first set on)
            if code & ~superset == 0 and lookup[code] < 0:
                lookup[code] = i
    return combos, lookup


def _groups_per_byte(count: int) -> int:
    return int(math.floor(math.log(256, count) + 1e-9))


def _to_groups(a: np.ndarray, axis: int, m: int) -> np.ndarray:
    """``a`` with ``axis`` split into groups of ``m`` (the last, partial group padded with zeros), as ``[G, m]``."""
    moved = np.moveaxis(a, axis, -1)
    pad = -moved.shape[-1] % m
    if pad:
        moved = np.concatenate([moved, np.zeros(moved.shape[:-1] + (pad,), dtype=a.dtype)], axis=-1)
    return moved.reshape(-1, m)


def _from_groups(g: np.ndarray, shape: Tuple[int, ...], axis: int) -> np.ndarray:
    moved_shape = tuple(np.delete(np.asarray(shape), axis)) + (shape[axis],)
    padded = g.reshape(moved_shape[:-1] + (-1,))[..., :shape[axis]]
    return np.moveaxis(padded, -1, axis)


def _nm_axis(ndim: int) -> Optional[int]:
    return {2: 0}.get(ndim, 1 if ndim >= 3 else None)


def _encode_nm(raw: np.ndarray, nonzero: np.ndarray, m: int, itemsize: int, bytes_to_beat: int) -> Optional[dict]:
    """The N:M encoding along the input axis, or None when the tensor is not N:M or the encoding would
    not take fewer than ``bytes_to_beat`` bytes (its size is known before it is built)."""
    axis = _nm_axis(raw.ndim)
    if axis is None or raw.shape[axis] < m:
        return None
    occupied = _to_groups(nonzero, axis, m)
    n = int(occupied.sum(axis=1, dtype=np.uint8).max())
    if n == 0 or n >= m:
        return None
    combos, lookup = _combinations(m, n)
    groups = occupied.shape[0]
    if -(-groups // _groups_per_byte(len(combos))) + groups * n * itemsize >= bytes_to_beat:
        return None
    codes = (occupied.astype(np.uint8) << np.arange(m, dtype=np.uint8)).sum(axis=1, dtype=np.int64)
    ids = lookup[codes]
    values = np.take_along_axis(_to_groups(raw, axis, m), combos[ids], axis=1).reshape(-1)
    k = _groups_per_byte(len(combos))
    ids = np.concatenate([ids, np.zeros(-len(ids) % k, dtype=np.int64)]).reshape(-1, k)
    index = (ids * len(combos) ** np.arange(k)).sum(axis=1).astype(np.uint8)
    return {"meta": {"n": n, "m": m, "axis": axis}, "index": index, "values": values}


def _decode_nm(name: str, meta: dict, index: np.ndarray, values: np.ndarray, raw_dtype) -> np.ndarray:
    shape, n, m, axis = tuple(meta["shape"]), meta["n"], meta["m"], meta["axis"]
    combos, _ = _combinations(m, n)
    moved = np.delete(np.asarray(shape, dtype=np.int64), axis)
    groups = int(np.prod(moved)) * -(-shape[axis] // m)
    k = _groups_per_byte(len(combos))
    if index.size != -(-groups // k) or values.size != groups * n:
        _corrupt(name, f"its {n}:{m} index and values do not fit its shape {list(shape)}")
    ids = ((index.astype(np.int64)[:, None] // len(combos) ** np.arange(k)) % len(combos)).reshape(-1)[:groups]
    out = np.zeros((groups, m), dtype=raw_dtype)
    np.put_along_axis(out, combos[ids], values.reshape(groups, n), axis=1)
    return _from_groups(out, shape, axis)


# ---------------------------------------------------------------------------------------------- helpers
def _corrupt(name: str, why: str):
    raise ValueError(f"sparse checkpoint tensor {name!r} is damaged: {why}. The file is truncated, edited or "
                     f"was not written by save_sparse; save it again.")


def _dtype_name(value) -> str:
    return str(value.dtype).replace("paddle.", "")


def _host_array(name: str, value) -> np.ndarray:
    if isinstance(value, paddle.Tensor):
        return np.asarray(value.numpy(), order="C")      # bfloat16 comes back as its uint16 bits
    if isinstance(value, np.ndarray):
        return np.asarray(value, order="C")
    raise TypeError(f"save_sparse: {name!r} is a {type(value).__name__}; a state dict must map names to "
                    f"paddle.Tensor or numpy arrays.")


def _state_dict(obj) -> Mapping[str, object]:
    if isinstance(obj, paddle.nn.Layer):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        return obj
    raise TypeError(f"save_sparse: `obj` must be a paddle.nn.Layer or a state dict (name -> tensor), got "
                    f"{type(obj).__name__}.")


def _to_values_dtype(name: str, dtype: str, values: np.ndarray, target: Optional[str]) -> Tuple[np.ndarray, float]:
    """``values`` (raw bits for bfloat16) in the lossy ``target`` dtype, and the largest absolute error."""
    if target is None or dtype not in ("float32", "float64"):
        return values, 0.0
    finite = values[np.isfinite(values)]
    if finite.size and float(np.abs(finite).max()) > _FP16_MAX:
        raise ValueError(f"save_sparse: values_dtype='float16' cannot hold {name!r}: its largest |value| is "
                         f"{float(np.abs(finite).max()):.6g}, above float16's {_FP16_MAX:g}. Save without "
                         f"values_dtype (lossless).")
    stored = values.astype(np.float16)
    error = np.abs(stored.astype(np.float64) - values.astype(np.float64))
    error = error[np.isfinite(error)]
    return stored, float(error.max()) if error.size else 0.0


def _encode(name: str, value, values_dtype: Optional[str]) -> Tuple[dict, Dict[str, np.ndarray], float]:
    raw = _host_array(name, value)
    dtype = _dtype_name(value)
    meta = {"name": name, "shape": list(raw.shape), "dtype": dtype}
    bits = _FLOAT_BITS.get(dtype)
    if bits is None:                                         # integers, bool: stored as they are
        return dict(meta, encoding="dense"), {"values": raw.reshape(-1)}, 0.0
    nonzero = (raw.view(bits) & bits(np.iinfo(bits).max >> 1)) != 0     # -0.0 counts as zero
    itemsize = 2 if values_dtype and dtype in ("float32", "float64") else raw.itemsize
    nnz = int(np.count_nonzero(nonzero))
    candidates = [(raw.size * itemsize, "dense", None)]
    if raw.size and 1 - nnz / raw.size >= MIN_SPARSITY:
        candidates.append((-(-raw.size // 8) + nnz * itemsize, "bitmask", None))
        for m in NM_GROUP_SIZES:
            nm = _encode_nm(raw, nonzero, m, itemsize, min(c[0] for c in candidates))
            if nm is not None:
                candidates.append((nm["index"].nbytes + nm["values"].size * itemsize, "nm", nm))
    _, encoding, nm = min(candidates, key=lambda c: c[0])       # on a tie, the first (simplest) one
    if encoding == "dense":
        arrays = {"values": raw.reshape(-1)}
    elif encoding == "bitmask":
        arrays = {"mask": np.packbits(nonzero.reshape(-1)), "values": raw.reshape(-1)[nonzero.reshape(-1)]}
    else:
        meta.update(nm["meta"])
        arrays = {"index": nm["index"], "values": nm["values"]}
    arrays["values"], error = _to_values_dtype(name, dtype, arrays["values"], values_dtype)
    meta["encoding"] = encoding
    return meta, arrays, error


# ---------------------------------------------------------------------------------------------- public API
def save_sparse(obj, path: Union[str, os.PathLike], values_dtype: Optional[str] = None) -> SparseFileReport:
    """Save a network's or a state dict's tensors to one ``.npz``, pruned tensors in a sparse encoding.

    Lossless by default: :func:`load_sparse` gives back every tensor bitwise equal, bfloat16 and NaN
    included, with one exception: a pruned weight stored as ``-0.0`` (a negative weight times a zero
    mask) in a sparse encoding comes back as ``+0.0``. It is the same weight.

    The file is written under a temporary name in the same directory and renamed when complete, so a
    crash during the save never leaves a partial file at ``path``.

    Args:
        obj (paddle.nn.Layer|dict): a network (its ``state_dict()``, buffers included) or a state dict
            mapping names to ``paddle.Tensor`` or numpy arrays.
        path (str): the file to write, used as given (no suffix is added).
        values_dtype (str, optional): ``"float16"`` stores float32/float64 values as float16, about half
            the size, lossy: the report gives the largest absolute error. A value beyond float16's range
            (65504) is an error. bfloat16, float16 and non-floating tensors stay as they are. Default:
            None, lossless.

    Returns:
        SparseFileReport: the file, its size, each tensor's encoding and the largest error.

    Raises:
        TypeError: ``obj`` is neither a network nor a state dict of tensors.
        ValueError: an unknown ``values_dtype``, or a value float16 cannot hold. Nothing is written.
    """
    if values_dtype not in (None, "float16"):
        raise ValueError(f"save_sparse: `values_dtype` must be None (lossless) or 'float16', got {values_dtype!r}.")
    manifest, arrays, encodings, max_error = [], {}, {}, 0.0
    for i, (name, value) in enumerate(_state_dict(obj).items()):
        meta, tensor_arrays, error = _encode(name, value, values_dtype)
        meta["values_dtype"] = str(tensor_arrays["values"].dtype)
        manifest.append(meta)
        encodings[name] = meta["encoding"] if meta["encoding"] != "nm" else f"{meta['n']}:{meta['m']}"
        arrays.update({f"{i}.{key}": a for key, a in tensor_arrays.items()})
        max_error = max(max_error, error)
    header = {"format": FORMAT, "version": FORMAT_VERSION, "tensors": manifest}
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".sparse.", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, {_MANIFEST: np.array(json.dumps(header)), **arrays})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return SparseFileReport(path, os.path.getsize(path), encodings, values_dtype, max_error)


def _write_npz(f, arrays: Dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` at deflate level 1 instead of zlib's default: slightly larger files, much
    faster to write. ``np.load`` reads it as any ``.npz``."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as z:
        for key, a in arrays.items():
            with z.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(a), allow_pickle=False)


def _read(path: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sparse checkpoint {path!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        header = json.loads(str(arrays.pop(_MANIFEST)))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as err:
        raise ValueError(f"sparse checkpoint {path!r} cannot be read ({type(err).__name__}: {err}); it is "
                         f"truncated or not a file written by save_sparse.") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a sparse checkpoint written by save_sparse (no {FORMAT!r} manifest).")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"sparse checkpoint {path!r} has format version {header.get('version')!r}; this "
                         f"paddle_prune_callback reads version {FORMAT_VERSION}. Load it with the version "
                         f"that wrote it.")
    return header, arrays


def _decode(meta: dict, arrays: Dict[str, np.ndarray]) -> np.ndarray:
    name, shape, dtype = meta["name"], tuple(meta["shape"]), meta["dtype"]
    numel = int(np.prod(shape, dtype=np.int64))
    values = arrays["values"]
    raw_dtype = np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
    if values.dtype != raw_dtype:                              # lossy float16 values of a wider dtype
        values = values.astype(raw_dtype)
    if meta["encoding"] == "dense":
        if values.size != numel:
            _corrupt(name, f"it holds {values.size} values for shape {list(shape)} ({numel} values)")
        return values.reshape(shape)
    if meta["encoding"] == "bitmask":
        mask = arrays["mask"]
        if mask.size != -(-numel // 8):
            _corrupt(name, f"its bit-mask has {mask.size} bytes for shape {list(shape)} ({numel} values)")
        keep = np.unpackbits(mask, count=numel).astype(bool)
        if int(keep.sum()) != values.size:
            _corrupt(name, f"its bit-mask marks {int(keep.sum())} non-zeros but it holds {values.size} values")
        out = np.zeros(numel, dtype=raw_dtype)
        out[keep] = values
        return out.reshape(shape)
    return _decode_nm(name, meta, arrays["index"], values, raw_dtype)


def load_sparse(path: Union[str, os.PathLike], network: Optional[paddle.nn.Layer] = None) -> Dict[str, paddle.Tensor]:
    """Read a file written by :func:`save_sparse`, without pickle.

    Args:
        path (str): the file.
        network (paddle.nn.Layer, optional): when given, the tensors are checked against its state dict
            (same names, shapes and dtypes; ``set_state_dict`` alone would only warn and skip a mismatch)
            and loaded into it. Nothing is loaded if any tensor does not match.

    Returns:
        dict[str, paddle.Tensor]: the state dict, for ``network.set_state_dict``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a truncated or foreign file, another format version, a tensor whose data does not
            fit its shape, or (with ``network``) a name, shape or dtype that differs from the network's.
    """
    path = os.fspath(path)
    header, arrays = _read(path)
    by_tensor: Dict[str, Dict[str, np.ndarray]] = {}
    for key, a in arrays.items():
        i, _, part = key.partition(".")
        by_tensor.setdefault(i, {})[part] = a
    host = {}
    for i, meta in enumerate(header["tensors"]):
        tensor_arrays = by_tensor.get(str(i), {})
        if "values" not in tensor_arrays or (meta["encoding"] == "bitmask") != ("mask" in tensor_arrays):
            _corrupt(meta["name"], "some of its arrays are missing")
        host[meta["name"]] = (meta, _decode(meta, tensor_arrays))
    if network is not None:
        _check_against(path, network, {n: (tuple(m["shape"]), m["dtype"]) for n, (m, _) in host.items()})
    state = {name: paddle.to_tensor(a, dtype=meta["dtype"]).reshape(meta["shape"]) for name, (meta, a) in host.items()}
    if network is not None:
        network.set_state_dict(state)
    return state


def _check_against(path: str, network: paddle.nn.Layer, stored: Dict[str, Tuple[Tuple[int, ...], str]]) -> None:
    expected = {n: (tuple(t.shape), _dtype_name(t)) for n, t in network.state_dict().items()}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise ValueError(f"sparse checkpoint {path!r} does not match {type(network).__name__}: missing "
                         f"{missing}, unexpected {extra}. Load it into the network it was saved from.")
    for name, (shape, dtype) in stored.items():
        if (shape, dtype) != expected[name]:
            raise ValueError(f"sparse checkpoint {path!r}: {name!r} has shape {list(shape)} and dtype {dtype}, "
                             f"but {type(network).__name__} expects shape {list(expected[name][0])} and dtype "
                             f"{expected[name][1]}. Load it into the network it was saved from.")
