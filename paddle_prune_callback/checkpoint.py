"""Crash-safe checkpoints of a pruning run: model, optimizer and pruning state, one directory per epoch.

Layout under ``state_dir``::

    epoch_3/model.pdparams      # paddle.Model.save: weights
    epoch_3/model.pdopt         #                    optimizer state (moments, LR scheduler)
    epoch_3/pruning_state.npz   # masks, squared-gradient accumulators, schedule position, configuration

Each epoch's directory is written under a temporary name and renamed when complete, so a crash during a
save leaves the previous checkpoint intact. The pruning state is plain arrays, read with
``allow_pickle=False``: loading it cannot execute code.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from typing import Dict, Optional

import numpy as np

STATE_FILE = "pruning_state.npz"
MODEL_PREFIX = "model"
FORMAT_VERSION = 1
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")


def save_checkpoint(state_dir: str, epoch: int, model, state: Dict[str, np.ndarray], keep: int) -> str:
    """Write ``model`` (weights and optimizer) and ``state`` to ``<state_dir>/epoch_<epoch>`` atomically,
    then delete all but the newest ``keep`` epoch directories. Returns the directory written."""
    os.makedirs(state_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".epoch_{epoch}.", dir=state_dir)
    try:
        model.save(os.path.join(tmp, MODEL_PREFIX))
        _write_state(os.path.join(tmp, STATE_FILE), state)
        final = os.path.join(state_dir, f"epoch_{epoch}")
        if os.path.isdir(final):      # a run resumed from an earlier epoch writes this epoch again
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(_epoch_dirs(state_dir))[:-keep]:
        shutil.rmtree(os.path.join(state_dir, f"epoch_{old}"), ignore_errors=True)
    return final


def _write_state(path: str, state: Dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, format_version=np.asarray(FORMAT_VERSION), **state)
        f.flush()
        os.fsync(f.fileno())


def save_state_file(directory: str, state: Dict[str, np.ndarray]) -> str:
    """Write ``state`` to ``<directory>/pruning_state.npz`` atomically (a temporary file renamed when
    complete), beside checkpoint files written by someone else (PaddleFormers' ``Trainer``)."""
    final = os.path.join(directory, STATE_FILE)
    fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", dir=directory)
    os.close(fd)
    try:
        _write_state(tmp, state)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return final


def _epoch_dirs(state_dir: str) -> list[int]:
    return [int(m.group(1)) for m in map(_EPOCH_DIR.match, os.listdir(state_dir)) if m]


def latest_checkpoint(state_dir: str) -> Optional[str]:
    """The newest complete ``epoch_<n>`` directory under ``state_dir``, or None."""
    if not os.path.isdir(state_dir):
        return None
    for epoch in sorted(_epoch_dirs(state_dir), reverse=True):
        path = os.path.join(state_dir, f"epoch_{epoch}")
        if os.path.isfile(os.path.join(path, STATE_FILE)) and os.path.isfile(
                os.path.join(path, MODEL_PREFIX + ".pdparams")):
            return path
    return None


def load_state(path: str) -> Dict[str, np.ndarray]:
    """Read a pruning state file without pickle; a missing, truncated or foreign file raises ValueError
    (FileNotFoundError when missing) naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pruning state file {path!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as data:
            state = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise ValueError(f"pruning state file {path!r} cannot be read ({err}); it is truncated or not a "
                         f"pruning state. Resume from an earlier epoch_<n> directory.") from None
    version = int(state.pop("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(f"pruning state file {path!r} has format version {version}, expected {FORMAT_VERSION}.")
    return state


def rename_optimizer_state(opt_state: Dict[str, object], state: Dict[str, np.ndarray], model) -> Dict[str, object]:
    """Map optimizer state saved under the generated parameter names of the saving process (``linear_0.w_0``)
    onto this network's names (``linear_8.w_0`` after a rebuild in the same process)."""
    current = {n: p.name for n, p in model.network.named_parameters()}
    renames = {str(v): current[k.partition("/")[2]] for k, v in state.items()
               if k.startswith("param_name/") and k.partition("/")[2] in current}
    renames = {old: new for old, new in renames.items() if old != new}
    if not renames:
        return opt_state
    by_length = sorted(renames, key=len, reverse=True)   # linear_10.w_0 before linear_1.w_0

    def rename(key: str) -> str:
        for old in by_length:
            if key == old or key.startswith(old + "_"):
                return renames[old] + key[len(old):]
        return key

    out = {}
    for key, value in opt_state.items():
        if key == "master_weights" and isinstance(value, dict):
            value = {rename(k): v for k, v in value.items()}
        out[rename(key)] = value
    return out
