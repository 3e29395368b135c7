"""Sparsity to VisualDL: scalars, score histograms, a summary table and hparams, written by rank 0."""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

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
    ``pruning/target_sparsity``, ``pruning/sparsity/<parameter>``, histograms ``pruning/log10_score`` and
    ``pruning/surviving_weights`` at each prune event, text ``pruning/summary`` and hparams at train end.
    Steps are 0-based epochs, as in ``paddle.callbacks.VisualDL``'s ``eval/*`` tags.
    """

    def __init__(self, log_dir: str):
        self.log_dir = os.path.join(log_dir, RUN_NAME)
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from visualdl import LogWriter

            self._writer = LogWriter(logdir=self.log_dir)
        return self._writer

    def log_epoch(self, epoch: int, sparsity: Dict[str, float], target: Optional[float]) -> None:
        if not is_main_process():
            return
        self.writer.add_scalar("pruning/sparsity", sparsity["global"], epoch)
        if target is not None:
            self.writer.add_scalar("pruning/target_sparsity", target, epoch)
        for name, value in sparsity.items():
            if name != "global":
                self.writer.add_scalar(f"pruning/sparsity/{name}", value, epoch)
        self.writer.flush()

    def log_prune(self, epoch: int, scores: np.ndarray, surviving_weights: np.ndarray) -> None:
        if not is_main_process():
            return
        positive = scores[scores > 0]
        if positive.size:
            self.writer.add_histogram("pruning/log10_score", np.log10(positive), epoch, buckets=30)
        if surviving_weights.size:
            self.writer.add_histogram("pruning/surviving_weights", surviving_weights, epoch, buckets=30)

    def log_summary(self, epoch: int, table: str, hparams: Dict[str, object], final_sparsity: float) -> None:
        if not is_main_process():
            return
        # VisualDL renders text as markdown: indent the table so it shows as a code block.
        self.writer.add_text("pruning/summary", "\n".join("    " + line for line in table.splitlines()), epoch)
        self.writer.add_scalar("pruning/final_sparsity", final_sparsity, epoch)
        self.writer.add_hparams(hparams, ["pruning/final_sparsity", "pruning/sparsity"])
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
