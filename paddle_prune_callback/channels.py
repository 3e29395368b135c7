"""What a channel group is: the parameter slices that one set of channels owns (see :mod:`.graph`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np


@dataclass(frozen=True)
class Member:
    """One parameter slice of a group: channel ``c`` owns ``offset + c*stride ... offset + (c+1)*stride - 1``
    along ``axis`` of parameter ``parameter`` (a structured name such as ``"layer1.0.conv1.weight"``).

    ``role`` is ``"producer"``, ``"bias"``, ``"norm"`` (BatchNorm scale and shift), ``"channelwise"`` (a
    depthwise convolution's filter), ``"statistic"`` (BatchNorm running mean and variance: sliced with the
    channel, never scored or masked) or ``"consumer"``.
    """

    parameter: str
    axis: int
    offset: int
    stride: int
    role: str
    reason: str

    def indices(self, channels: np.ndarray) -> np.ndarray:
        """The indices along ``axis`` that the given channels own, in order."""
        channels = np.asarray(channels, dtype=np.int64)
        return (self.offset + channels[:, None] * self.stride + np.arange(self.stride)).reshape(-1)

    def describe(self) -> str:
        return f"{self.parameter}[axis {self.axis}]: {self.reason}"


@dataclass
class ChannelGroup:
    """Channels pruned together. ``name`` is the producing layers' names joined by ``+``."""

    name: str
    size: int
    producers: List[str]
    members: List[Member]
    ties: List[str] = field(default_factory=list)
    reasons: List[str] = field(default_factory=list)   # why it is refused; empty when prunable

    @property
    def prunable(self) -> bool:
        return not self.reasons


@dataclass
class ChannelGraph:
    """The result of :func:`trace_channel_groups`."""

    groups: List[ChannelGroup]       # prunable
    refused: List[ChannelGroup]      # never pruned; each with its reasons
    flops: int                       # 2 × multiply-accumulates of convs and matmuls, per example

    def summary(self) -> str:
        lines = [f"{len(self.groups)} prunable channel groups, {len(self.refused)} refused"]
        for g in self.groups:
            lines.append(f"  {g.name} ({g.size} channels): {len(g.members)} slices"
                         + (f"; {'; '.join(g.ties)}" if g.ties else ""))
        for g in self.refused:
            lines.append(f"  refused {g.name} ({g.size} channels): {'; '.join(g.reasons)}")
        return "\n".join(lines)
