"""Scores on demand: what a pattern's selection reads at a prune event.

:class:`ScoreSource` computes one parameter's scores when asked, as a float32 Paddle tensor in the
parameter's shape on its device, so that no copy of all scores is ever held. Weights pruned at an earlier
event score :data:`PRUNED_SCORE` (−1, below every real score): a selection counts them among the lowest
and never revives them (the engine also ANDs every new mask with the old one).
"""
from __future__ import annotations

from typing import Dict, Optional

import paddle

from .criteria import Criterion

PRUNED_SCORE = -1.0


class ScoreSource:
    """Per-parameter scores of one prune event, computed on demand.

    Args:
        criterion (Criterion): the score function.
        parameters (dict[str, paddle.Tensor]): the parameters the engine manages, by structured name.
        keeps (dict[str, paddle.Tensor]): each pruned parameter's current keep-mask (bool, its shape);
            parameters without a mask have nothing pruned yet.
        sq_grads (dict[str, paddle.Tensor]): each parameter's g² sum (float32), for criteria that need it.
        count (float): what to divide the sums by for the mean.
    """

    def __init__(self, criterion: Criterion, parameters: Dict[str, paddle.Tensor], keeps: Dict[str, paddle.Tensor],
                 sq_grads: Dict[str, paddle.Tensor], count: float):
        self.criterion = criterion
        self.parameters = parameters
        self._keeps = keeps
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
        return self._keeps.get(name)

    def num_pruned(self, name: str) -> int:
        keep = self._keeps.get(name)
        return 0 if keep is None else self.size(name) - int(paddle.count_nonzero(keep))

    def _mean_g2(self, g2_sum: Optional[paddle.Tensor]) -> Optional[paddle.Tensor]:
        if g2_sum is None:
            return None
        return g2_sum / self._count if self._count != 1 else g2_sum

    def scores(self, name: str) -> paddle.Tensor:
        """The parameter's scores: a new float32 tensor in its shape, on its device; already-pruned weights
        score :data:`PRUNED_SCORE`."""
        with paddle.no_grad():
            w = self.parameters[name].astype("float32")
            s = self.criterion.score(w, self._mean_g2(self._sq_grads.get(name)))
            keep = self._keeps.get(name)
            if keep is not None:
                s = paddle.where(keep, s, paddle.full([], PRUNED_SCORE, dtype="float32"))
            return s

    def sample(self, name: str, index: paddle.Tensor) -> paddle.Tensor:
        """The scores at the given flat indices (int64, on the parameter's device), computed only there."""
        with paddle.no_grad():
            w = paddle.gather(self.parameters[name].flatten(), index).astype("float32")
            g2_sum = self._sq_grads.get(name)
            g2 = None if g2_sum is None else paddle.gather(g2_sum.flatten(), index)
            s = self.criterion.score(w, self._mean_g2(g2))
            keep = self._keeps.get(name)
            if keep is not None:
                s = paddle.where(paddle.gather(keep.flatten(), index), s,
                                 paddle.full([], PRUNED_SCORE, dtype="float32"))
            return s
