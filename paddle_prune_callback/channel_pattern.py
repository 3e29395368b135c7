"""``pattern="channel"``: whole channel groups compete, so that :func:`~paddle_prune_callback.slim` can
remove what was pruned.

The unit is a group channel (see :mod:`.graph`): one output channel of a Conv or one output feature of a
Linear, with its bias, the following BatchNorm's scale and shift, the consumers' input slices and every
channel tied to it by a residual add. Its score is the sum of its members' scores under the criterion
(for fisher, the OBD estimate of removing the whole channel), and ``target_sparsity`` is the fraction of
the prunable channels removed, per group (``scope="layer"``) or over all groups (``scope="global"``).
Masks zero the whole channel, so they hold through training like unstructured masks.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import paddle

from .channels import ChannelGroup
from .graph import trace_channel_groups
from .patterns import Pattern, Plan
from .scores import ScoreSource
from .slim import zero_channels

CHANNEL_SCORES = ("group", "producer")


class Channel(Pattern):
    """Prune whole channel groups.

    Args:
        example_inputs (paddle.Tensor|list, optional): a batch of inputs (or ``InputSpec`` objects) to trace the
            network with. ``Pruner(..., pattern="channel", example_inputs=x)`` and ``PruningCallback`` (from
            ``paddle.Model(inputs=...)`` or the first training batch) supply it. Default: None.
        score (str, optional): ``"group"``: a channel's score is the sum of the scores of all its slices;
            ``"producer"``: of its producing filters only (PaddleSlim's L1-norm filter rule for magnitude).
            Default: ``"group"``.
        normalize (bool, optional): divide each channel's score by the number of weights it sums (the
            mean score per weight instead of the sum). Default: False: the sum, which for fisher is the
            estimated loss increase of removing the channel, and which held up better under
            ``scope="global"`` on the digits CNN (see ``docs/channels.md``).
    """

    name = "channel"

    def __init__(self, example_inputs=None, score: str = "group", normalize: bool = False):
        if score not in CHANNEL_SCORES:
            raise ValueError(f"`score` must be one of {list(CHANNEL_SCORES)}, got {score!r}.")
        self.example_inputs = example_inputs
        self.score = score
        self.normalize = bool(normalize)
        self.groups: List[ChannelGroup] = []
        self.graph = None

    @property
    def needs_example_inputs(self) -> bool:
        return self.example_inputs is None

    def with_example_inputs(self, example_inputs) -> "Channel":
        return Channel(example_inputs, self.score, self.normalize)

    def plan(self, network: paddle.nn.Layer, selected: Dict[str, paddle.Tensor], explicit: bool) -> Plan:
        if self.example_inputs is None:
            raise ValueError("pattern='channel' traces the network and needs example inputs: pass "
                             "Pruner(..., pattern='channel', example_inputs=one_batch), or "
                             "pattern=Channel(example_inputs=one_batch) (also to PruningCallback.resume), or "
                             "build paddle.Model(net, inputs=[InputSpec(...)]).")
        self.graph = trace_channel_groups(network, self.example_inputs)
        params = dict(network.named_parameters())
        dense: Dict[str, str] = {}
        for group in self.graph.refused:
            for m in group.members:
                if m.role == "producer" and m.parameter in selected:
                    dense[m.parameter] = "; ".join(group.reasons)
        self.groups = []
        for group in self.graph.groups:
            producers = [m.parameter for m in group.members if m.role == "producer"]
            frozen = [m.parameter for m in group.members if m.role != "statistic" and params[m.parameter].stop_gradient]
            why = None
            if not all(p in selected for p in producers):
                why = f"channel group {group.name} has producers outside `parameters`"
            elif frozen:
                why = f"channel group {group.name} has frozen parameters {frozen}"
            if why is None:
                self.groups.append(group)
            else:
                dense.update({p: why for p in producers if p in selected})
        members = {m.parameter: m.reason for g in self.groups for m in g.members if m.role != "statistic"}
        managed = {n: p for n, p in params.items() if n in members}
        dense = {n: why for n, why in dense.items() if n not in managed}
        dense.update({n: "in no prunable channel group" for n in selected if n not in managed and n not in dense})
        coupled = {n: members[n] for n in managed if n not in selected}
        return Plan(managed, dense, coupled)

    def channel_scores(self, scores: ScoreSource) -> List[np.ndarray]:
        """Each managed group's channel scores (float64); channels already pruned score -1."""
        cache: Dict[str, tuple] = {}

        def host(name):
            if name not in cache:
                keep = scores.keep(name)
                cache[name] = (scores.scores(name).numpy(), None if keep is None else keep.numpy())
            return cache[name]

        out = []
        for g in self.groups:
            total, count = np.zeros(g.size), np.zeros(g.size)
            alive = np.zeros(g.size, dtype=bool)
            for m in g.members:
                if m.role == "statistic":
                    continue
                s, keep = host(m.parameter)
                s = np.moveaxis(s, m.axis, 0)[m.offset:m.offset + g.size * m.stride].reshape(g.size, -1)
                k = np.ones_like(s, dtype=bool) if keep is None else \
                    np.moveaxis(keep, m.axis, 0)[m.offset:m.offset + g.size * m.stride].reshape(g.size, -1)
                alive |= k.any(axis=1)
                if self.score == "group" or m.role == "producer":
                    total += np.where(k, s, 0.0).sum(axis=1, dtype=np.float64)
                    count += k.sum(axis=1)
            value = total / np.maximum(count, 1) if self.normalize else total
            out.append(np.where(alive, value, -1.0))
        return out

    def select(self, scores: ScoreSource, *, sparsity: Optional[float] = None, threshold: Optional[float] = None,
               scope: str = "global") -> Dict[str, paddle.Tensor]:
        per_group = self.channel_scores(scores)
        for s in per_group:
            s[int(np.argmax(s))] = np.inf          # every group keeps its best channel
        if threshold is not None:
            dead = [np.flatnonzero(s < threshold) for s in per_group]
        elif scope == "layer":
            dead = [_lowest(s, max(min(round(sparsity * s.size), s.size - 1), int((s < 0).sum())))
                    for s in per_group]
        else:
            flat = np.concatenate(per_group)
            k = max(min(round(sparsity * flat.size), flat.size - len(per_group)), int((flat < 0).sum()))
            chosen = np.zeros(flat.size, dtype=bool)
            chosen[_lowest(flat, k)] = True
            bounds = np.cumsum([0] + [s.size for s in per_group])
            dead = [np.flatnonzero(chosen[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        keeps = {n: np.ones(scores.shape(n), dtype=bool) for n in scores.names}
        for g, d in zip(self.groups, dead):
            for m in g.members:
                if m.role != "statistic" and d.size:
                    np.moveaxis(keeps[m.parameter], m.axis, 0)[m.indices(d)] = False
        return {n: paddle.to_tensor(k, place=scores.parameters[n].place) for n, k in keeps.items()}

    def summary(self, pruner) -> List[str]:
        lines = []
        tensors = pruner.network.state_dict()
        total = dead = 0
        for g in self.groups:
            d = int(zero_channels(g, tensors).sum())
            total, dead = total + g.size, dead + d
            lines.append(f"channels: {g.name}: {g.size - d} of {g.size} kept")
        if total:
            lines.append(f"channels: {dead} of {total} pruned ({dead / total:.2%}); slim() removes them")
        return lines + super().summary(pruner)


def _lowest(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k lowest scores, ties broken by position."""
    return np.sort(np.argsort(scores, kind="stable")[:k])
