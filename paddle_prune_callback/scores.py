"""Scores on demand: what a pattern's selection reads at a prune event.

:class:`ScoreSource` computes one parameter's scores when asked, as a float32 Paddle tensor in the
parameter's shape on its device, so that no copy of all scores is ever held. Weights pruned at an earlier
event, and weights that are exactly zero (a zero in the starting weights would otherwise count as alive
and regrow), score :data:`PRUNED_SCORE` (−1, below every real score): a selection counts them among the
lowest and never revives them (the engine also ANDs every new mask with the old one). Weights of any
floating dtype are converted to float32 in Paddle before scoring.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import paddle

from .criteria import Criterion
from .masks import Mask, host_view

PRUNED_SCORE = -1.0


def nonzero(t: paddle.Tensor) -> paddle.Tensor:
    """``t != 0``, exactly: Paddle's float ``!=`` treats subnormals as 0; its ``<`` and ``>`` are exact."""
    return paddle.logical_or(t > 0, t < 0)


class ScoreSource:
    """Per-parameter scores of one prune event, computed on demand.

    Args:
        criterion (Criterion): the score function.
        parameters (dict[str, paddle.Tensor]): the parameters the engine manages, by structured name.
        masks (dict[str, Mask]): each pruned parameter's current mask; parameters without one have nothing
            pruned yet.
        sq_grads (dict[str, paddle.Tensor]): each parameter's g² sum (float32), for criteria that need it.
        count (float): what to divide the sums by for the mean.
    """

    def __init__(self, criterion: Criterion, parameters: Dict[str, paddle.Tensor], masks: Dict[str, Mask],
                 sq_grads: Dict[str, paddle.Tensor], count: float):
        self.criterion = criterion
        self.parameters = parameters
        self._masks = masks
        self._sq_grads = sq_grads if criterion.needs_gradients else {}
        self._count = count

    @property
    def names(self) -> list[str]:
        return list(self.parameters)

    def size(self, name: str) -> int:
        return int(self.parameters[name].size)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.parameters[name].shape)

    def keep(self, name: str) -> Optional[paddle.Tensor]:
        """The parameter's current keep-mask (bool, its shape, on its device), or None if nothing is pruned."""
        mask = self._masks.get(name)
        return None if mask is None else mask.keep()

    def num_pruned(self, name: str) -> int:
        mask = self._masks.get(name)
        return 0 if mask is None else mask.num_pruned()

    def _mean_g2(self, g2_sum: Optional[paddle.Tensor]) -> Optional[paddle.Tensor]:
        if g2_sum is None:
            return None
        return g2_sum / self._count if self._count != 1 else g2_sum

    def scores(self, name: str) -> paddle.Tensor:
        """The parameter's scores: a new float32 tensor in its shape, on its device; already-pruned and
        exactly-zero weights score :data:`PRUNED_SCORE`."""
        with paddle.no_grad():
            p, mask = self.parameters[name], self._masks.get(name)
            g2 = self._mean_g2(self._sq_grads.get(name))
            s = self._host_scores(p, g2, mask) if p.dtype == paddle.float32 else None
            if s is not None:
                return s
            w = p.astype("float32")
            s = self.criterion.score(w, g2)
            s_view, w_view = host_view(s), host_view(w)
            pruned_view = None if mask is None else mask.pruned_view()
            writable = s_view is not None and s_view.flags.writeable   # numpy < 1.25 views are read-only
            if writable and w_view is not None and (mask is None or pruned_view is not None):
                self._mark_pruned_host(s_view, w_view, pruned_view)
                return s
            return self._mark_pruned(s, w, None if mask is None else mask.pruned())

    def _host_scores(self, p: paddle.Tensor, g2: Optional[paddle.Tensor], mask: Optional[Mask]):
        """On CPU, the scores computed in numpy on zero-copy views, into a new tensor; None elsewhere."""
        if self.criterion.host_score is None:
            return None
        w_view = host_view(p)
        g2_view = None if g2 is None else host_view(g2)
        pruned_view = None if mask is None else mask.pruned_view()
        if w_view is None or (g2 is not None and g2_view is None) or (mask is not None and pruned_view is None):
            return None
        s = paddle.empty(p.shape, dtype="float32")
        s_view = host_view(s)
        if s_view is None or not s_view.flags.writeable:
            return None
        self.criterion.host_score(w_view, g2_view, s_view)
        self._mark_pruned_host(s_view, w_view, pruned_view)
        return s

    @staticmethod
    def _mark_pruned_host(s_view: np.ndarray, w_view: np.ndarray, pruned_view) -> None:
        dead = w_view == 0                             # in place, through zero-copy views
        if pruned_view is not None:
            dead |= pruned_view
        np.putmask(s_view, dead, PRUNED_SCORE)

    @staticmethod
    def _mark_pruned(s: paddle.Tensor, w: paddle.Tensor, pruned: Optional[paddle.Tensor]) -> paddle.Tensor:
        s = paddle.where(nonzero(w), s, paddle.full([], PRUNED_SCORE, dtype="float32"))
        if pruned is not None:
            s.masked_fill_(pruned, PRUNED_SCORE)
        return s

    def sample(self, name: str, index: paddle.Tensor) -> paddle.Tensor:
        """The scores at the given flat indices (int64, on the parameter's device), computed only there."""
        with paddle.no_grad():
            w = paddle.gather(self.parameters[name].flatten().astype("float32"), index)
            g2_sum = self._sq_grads.get(name)
            g2 = None if g2_sum is None else paddle.gather(g2_sum.flatten(), index)
            s = self.criterion.score(w, self._mean_g2(g2))
            mask = self._masks.get(name)
            return self._mark_pruned(s, w, None if mask is None else mask.pruned_at(index))
