"""Gradual unstructured pruning for PaddlePaddle: a ``Model.fit`` callback over a reusable engine."""
from __future__ import annotations

try:
    import paddle  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without paddle installed
    raise ImportError(
        "paddle_prune_callback needs PaddlePaddle 3.x, which is not installed. Install the CPU build with "
        "`pip install paddle-prune-callback[cpu]` (or `pip install paddlepaddle`), or the GPU build that "
        "matches your CUDA (`pip install paddlepaddle-gpu`, see paddlepaddle.org.cn/install)."
    ) from err

from .callback import PruningCallback
from .criteria import CRITERIA
from .engine import Pruner
from .graph import ChannelGraph, ChannelGroup, trace_channel_groups
from .schedule import PruningSchedule, default_prune_epochs
from .selection import select_lowest
from .slim import SlimReport, slim
from .sparse_io import SparseFileReport, load_sparse, save_sparse

__all__ = ["PruningCallback", "Pruner", "PruningSchedule", "default_prune_epochs", "select_lowest", "CRITERIA",
           "trace_channel_groups", "ChannelGraph", "ChannelGroup", "slim", "SlimReport",
           "save_sparse", "load_sparse", "SparseFileReport"]
__version__ = "0.1.0"
