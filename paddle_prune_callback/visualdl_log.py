"""Sparsity to VisualDL: scalars, score histograms, a summary table and hparams, written by rank 0."""
from __future__ import annotations

import contextlib
import io
import numbers
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import paddle

RUN_NAME = "pruning"
"""Subdirectory of ``log_dir`` written by the pruning logger: VisualDL shows one log file per directory,
so a separate run keeps ``paddle.callbacks.VisualDL(log_dir)`` on the same directory visible too."""


def is_main_process() -> bool:
    return paddle.distributed.get_rank() == 0


def format_table(rows: Sequence[tuple], global_sparsity: float) -> str:
    """A fixed-width table of (name, shape, weights, pruned, sparsity) rows and a total line."""
    header = ("parameter", "shape", "weights", "pruned", "sparsity")
    body = [(n, "×".join(map(str, s)), f"{w:,}", f"{z:,}", f"{sp:.2%}") for n, s, w, z, sp in rows]
    total_w, total_z = sum(r[2] for r in rows), sum(r[3] for r in rows)
    body.append(("total", "", f"{total_w:,}", f"{total_z:,}", f"{global_sparsity:.2%}"))
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(5)]
    line = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, body[:-1]), rule, line(body[-1])])


class SparsityLogger:
    """Writes pruning data to ``<log_dir>/pruning`` with VisualDL; a no-op on ranks other than 0.

    Tags (all in the ``pruning`` group): ``pruning/sparsity`` (measured, global),
    ``pruning/target_sparsity``, ``pruning/sparsity/<parameter>``, ``pruning/eval_<metric>`` (the metrics
    of ``fit``'s evaluation, e.g. ``pruning/eval_acc``), histograms ``pruning/log10_score`` and
    ``pruning/surviving_weights`` at each prune event, text ``pruning/summary`` and hparams at train end,
    with ``pruning/sparsity`` and the ``pruning/eval_*`` tags as the hparams view's metrics.
    Steps are 0-based epochs, as in ``paddle.callbacks.VisualDL``'s ``eval/*`` tags. A schedule of
    ``prune_steps`` adds ``pruning/sparsity_by_step`` and ``pruning/target_sparsity_by_step`` at each
    prune event, and its histograms, with the 0-based global optimizer step as their step.

    The VisualDL reader shows only the newest log file of a directory, so a run keeps to one file: every
    ``fit`` of a callback appends to it, and a logger whose first epoch is not 0 (a resumed run) appends
    to the newest file already there.
    """

    def __init__(self, log_dir: str):
        self.log_dir = os.path.join(log_dir, RUN_NAME)
        self._writer = None
        self._file_name = ""
        self._eval_tags: List[str] = []

    @property
    def writer(self):
        if self._writer is None:
            from visualdl import LogWriter

            # Reopening an existing file prints a notice on stdout; the reuse is intended.
            with contextlib.redirect_stdout(io.StringIO()):
                self._writer = LogWriter(logdir=self.log_dir, file_name=self._file_name)
            self._file_name = os.path.basename(self._writer.file_name)
        return self._writer

    def _newest_log_file(self) -> str:
        """The file the VisualDL reader shows for this run (the greatest ``vdlrecords`` name), or ""."""
        if not os.path.isdir(self.log_dir):
            return ""
        return max((f for f in os.listdir(self.log_dir) if "vdlrecords" in f), default="")

    def log_epoch(self, epoch: int, sparsity: Dict[str, float], target: Optional[float]) -> None:
        if not is_main_process():
            return
        if self._writer is None and not self._file_name and epoch > 0:
            self._file_name = self._newest_log_file()
        self.writer.add_scalar("pruning/sparsity", sparsity["global"], epoch)
        if target is not None:
            self.writer.add_scalar("pruning/target_sparsity", target, epoch)
        for name, value in sparsity.items():
            if name != "global":
                self.writer.add_scalar(f"pruning/sparsity/{name}", value, epoch)
        self.writer.flush()

    def log_step(self, epoch: int, step: int, sparsity: Dict[str, float], target: Optional[float]) -> None:
        """A prune event of ``prune_steps``: ``pruning/sparsity_by_step`` and ``pruning/target_sparsity_by_step``
        with the 0-based global optimizer step as their step, during ``epoch``."""
        if not is_main_process():
            return
        if self._writer is None and not self._file_name and epoch > 0:
            self._file_name = self._newest_log_file()
        self.writer.add_scalar("pruning/sparsity_by_step", sparsity["global"], step)
        if target is not None:
            self.writer.add_scalar("pruning/target_sparsity_by_step", target, step)
        self.writer.flush()

    def log_eval(self, epoch: int, metrics: Mapping[str, object]) -> None:
        """Log ``fit``'s evaluation metrics (numbers, or lists whose first item is the value, as in
        ``paddle.callbacks.VisualDL``) as ``pruning/eval_<name>``. Only while a ``fit`` is logging: an
        evaluation outside ``fit`` has no epoch to belong to."""
        if not is_main_process() or self._writer is None:
            return
        for name, value in metrics.items():
            if isinstance(value, (list, tuple)) and value:
                value = value[0]
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                tag = f"pruning/eval_{name}"
                self._writer.add_scalar(tag, float(value), epoch)
                if tag not in self._eval_tags:
                    self._eval_tags.append(tag)
        self._writer.flush()

    def log_prune(self, epoch: int, scores: np.ndarray, surviving_weights: np.ndarray) -> None:
        if not is_main_process():
            return
        positive = scores[scores > 0]
        if positive.size:
            self.writer.add_histogram("pruning/log10_score", np.log10(positive), epoch, buckets=30)
        if surviving_weights.size:
            self.writer.add_histogram("pruning/surviving_weights", surviving_weights, epoch, buckets=30)

    def log_summary(self, epoch: int, table: str, hparams: Dict[str, object]) -> None:
        """The summary table as text and the hparams, whose metrics are the last values of
        ``pruning/sparsity`` and of the ``pruning/eval_*`` tags (VisualDL reads metrics from scalar tags of
        the same run)."""
        if not is_main_process():
            return
        self.writer.add_text("pruning/summary", table, epoch)
        self.writer.add_hparams(hparams, ["pruning/sparsity", *self._eval_tags])
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
