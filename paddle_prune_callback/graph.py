"""Channel groups of a network, found by tracing its PIR program.

A *group* is one set of channels that must be pruned together: a producer's output channels (a Conv's
filters, a Linear's output columns) and every parameter slice that goes with each channel: the bias,
the following BatchNorm's scale, shift and running statistics, the consumers' input slices (through
``flatten`` too), and the channels tied to it by a residual add or placed beside it by a concat.

Channels are followed op by op through the program of ``paddle.jit.to_static(net.forward, ...)``. An op
the walker does not know to keep channels apart stops it: the channels that reach it are *refused*, with
the reason, and are never pruned. So are the network's input channels and the channels of its outputs.

    graph = trace_channel_groups(net, paddle.randn([1, 3, 32, 32]))
    for group in graph.groups:        # prunable
        print(group.name, group.size, [m.describe() for m in group.members])
    for group in graph.refused:       # never pruned, with reasons
        print(group.name, group.reasons)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from ._trace import trace_program
from .channels import ChannelGraph, ChannelGroup, Member

# Ops whose every output channel depends on the same input channel only (first operand and result).
_CHANNELWISE = {
    "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "swish", "hardswish", "hardsigmoid",
    "elu", "selu", "celu", "softplus", "softsign", "mish", "exp", "abs", "square", "sqrt", "rsqrt", "clip",
    "scale", "cast", "assign", "dropout", "pool2d", "pool3d", "nearest_interp", "bilinear_interp",
    "bicubic_interp", "linear_interp", "trilinear_interp", "full_like",
}
_ELEMENTWISE = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "elementwise_pow"}
_REDUCE = {"mean", "sum", "max", "min", "amax", "amin", "prod"}
_PARAM_VIEWS = {"assign", "reshape", "unsqueeze", "squeeze", "cast"}
_CONSTANT_OPS = {"full", "full_int_array", "assign_value", "full_with_tensor", "arange", "shape", "shape64"}
_REFUSAL = {
    "layer_norm": "LayerNorm over the features mixes the channels",
    "group_norm": "GroupNorm mixes the channels of a group",
    "rms_norm": "RMSNorm over the features mixes the channels",
    "softmax": "softmax mixes the channels",
    "transpose": "transpose moves the channel axis",
    "conv2d_transpose": "transposed convolutions are not handled",
    "split": "split cuts the channel axis",
    "split_with_num": "split cuts the channel axis",
    "slice": "slice cuts the channel axis",
    "strided_slice": "slice cuts the channel axis",
    "gather": "gather picks channels",
    "index_select": "index_select picks channels",
}


class _Space:
    """A set of channels produced together, before unions."""

    def __init__(self, size: int, name: str):
        self.size, self.name = size, name
        self.producers: List[str] = []
        self.members: List[Member] = []
        self.ties: List[str] = []
        self.reasons: List[str] = []


class _Opaque:
    """A value whose channels the walker does not follow (the data, outputs of unknown ops)."""

    def __init__(self, reason: str):
        self.reason = reason


@dataclass(frozen=True)
class _Layout:
    """Where a value's channels come from: its channel axis, and segments along it, each a whole space
    whose channels repeat ``stride`` times contiguously (``stride`` > 1 after a flatten)."""

    axis: int
    ndim: int
    segments: Tuple[Tuple[int, int], ...]   # (space id, stride)


class _Walker:
    def __init__(self, network: paddle.nn.Layer):
        self.names = {p.name: n for n, p in network.named_parameters()}
        self.names.update({b.name: n for n, b in network.named_buffers() if b is not None})
        self.spaces: List[_Space] = []
        self.parent: List[int] = []
        self.values: Dict[int, object] = {}    # value id -> _Layout | _Opaque
        self.by_param: Dict[str, int] = {}
        self.inputs: List[ChannelGroup] = []
        self.flops = 0

    # ---------------------------------------------------------------- spaces
    def new_space(self, size: int, name: str) -> int:
        self.spaces.append(_Space(size, name))
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int, why: str) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        sa, sb = self.spaces[a], self.spaces[b]
        self.parent[b] = a
        sa.ties.append(f"{why} ties {sa.name} to {sb.name}")
        sa.producers += sb.producers
        sa.members += sb.members
        sa.ties += sb.ties
        sa.reasons += sb.reasons

    def refuse(self, layout, reason: str) -> None:
        if isinstance(layout, _Layout):
            for s, _ in layout.segments:
                self.spaces[self.find(s)].reasons.append(reason)

    def add_members(self, layout: _Layout, param: str, axis: int, role: str, reason: str) -> None:
        offset = 0
        for s, stride in layout.segments:
            size = self.spaces[s].size
            where = f" (entries {offset}..{offset + size * stride - 1})" if len(layout.segments) > 1 else ""
            per = f", {stride} per channel through flatten" if stride > 1 else ""
            self.spaces[self.find(s)].members.append(Member(param, axis, offset, stride, role, reason + per + where))
            offset += size * stride

    # ---------------------------------------------------------------- values
    def state(self, v):
        if v is None or not v.initialized():
            return None
        return self.values.get(v.id)

    def param_of(self, v) -> Optional[Tuple[str, List[int]]]:
        """The structured name and shape of the parameter ``v`` is a view of (through reshape, assign,
        unsqueeze, squeeze, cast), or None."""
        op = v.get_defining_op()
        while op is not None and _base(op.name()) in _PARAM_VIEWS:
            op = op.operand_source(0).get_defining_op()
        if op is None or op.name() != "builtin.parameter":
            return None
        name = self.names.get(op.attrs()["parameter_name"])
        return None if name is None else (name, list(op.result(0).shape))

    @staticmethod
    def param_axis(view_shape: Sequence[int], view_axis: int, param_shape: Sequence[int]) -> Optional[int]:
        """The parameter axis that axis ``view_axis`` of a view of it is, when the view only adds or drops
        axes of size 1."""
        if [d for d in view_shape if d != 1] != [d for d in param_shape if d != 1] or view_shape[view_axis] == 1:
            return None
        rank = sum(1 for d in view_shape[:view_axis] if d != 1)
        return [i for i, d in enumerate(param_shape) if d != 1][rank]

    # ---------------------------------------------------------------- the walk
    def walk(self, program, outputs) -> None:
        for op in program.global_block().ops:
            name = op.name()
            base = _base(name)
            if name == "builtin.parameter" or base in _CONSTANT_OPS:
                continue
            if name == "pd_op.data":
                self.values[op.result(0).id] = _Opaque("network input channels are never pruned")
                shape = list(op.result(0).shape)
                self.inputs.append(ChannelGroup(f"input {op.attrs()['name']!r}", shape[1] if len(shape) > 1 else 1,
                                                [], [], reasons=["network input channels are never pruned"]))
                continue
            if name == "builtin.combine":
                continue   # read by concat
            ins = [self.state(v) for v in _operands(op)]
            if base != "concat" and all(s is None for s in ins):
                continue   # computes on parameters and constants only
            handler = getattr(self, f"op_{base}", None)
            if handler is not None and name.startswith("pd_op."):
                handler(op, ins)
            elif base in _CHANNELWISE and name.startswith("pd_op."):
                self.channelwise(op, ins)
            elif base in _ELEMENTWISE and name.startswith("pd_op."):
                self.elementwise(op, ins)
            elif base in _REDUCE and name.startswith("pd_op."):
                self.reduce(op, ins)
            elif any(s is not None for s in ins):
                self.unknown(op, ins)
        for v in outputs:
            self.refuse(self.state(v), "reaches the network's output (output channels are never pruned)")

    def unknown(self, op, ins, reason: Optional[str] = None) -> None:
        name = op.name()
        if reason is None:
            base = _base(name)
            reason = _REFUSAL.get(base) if name.startswith("pd_op.") else f"custom op {name!r}"
            reason = reason or f"op {name!r} is not known to keep channels apart"
        for s in ins:
            self.refuse(s, reason)
        for r in op.results():
            self.values[r.id] = _Opaque(reason)

    def channelwise(self, op, ins) -> None:
        x = ins[0] if ins else None
        if any(s is not None for s in ins[1:]):
            return self.unknown(op, ins, f"{op.name()} with a second traced input is not handled")
        fmt = op.attrs().get("data_format", "NCHW")
        if isinstance(x, _Layout) and fmt not in ("NCHW", "NCDHW", "NCL", "AnyLayout") :
            return self.unknown(op, ins, f"{op.name()} in {fmt} layout is not handled")
        if isinstance(x, _Layout) and _base(op.name()).startswith(("pool", "nearest", "bilinear", "bicubic",
                                                                    "linear_interp", "trilinear")) and x.axis != 1:
            return self.unknown(op, ins, f"{op.name()} over the channel axis")
        if x is not None:
            self.values[op.result(0).id] = x

    def elementwise(self, op, ins) -> None:
        a, b = op.operand_source(0), op.operand_source(1)
        sa, sb = ins[0], ins[1]
        out = list(op.result(0).shape)
        if sa is None and sb is None:
            return
        if isinstance(sa, _Opaque) or isinstance(sb, _Opaque):
            reason = (sa if isinstance(sa, _Opaque) else sb).reason
            return self.unknown(op, ins, f"{_base(op.name())} with a value whose channels are not followed "
                                         f"({reason})")
        if sa is not None and sb is not None:
            if len(sa.segments) != len(sb.segments) or sa.ndim - sa.axis != sb.ndim - sb.axis or any(
                    self.spaces[x].size != self.spaces[y].size or p != q
                    for (x, p), (y, q) in zip(sa.segments, sb.segments)):
                return self.unknown(op, ins, f"{_base(op.name())} of values with different channel layouts")
            for (x, _), (y, _) in zip(sa.segments, sb.segments):
                self.union(x, y, f"a residual {_base(op.name())}")
            self.values[op.result(0).id] = sa
            return
        layout, other = (sa, b) if sa is not None else (sb, a)
        if len(out) != layout.ndim:
            return self.unknown(op, ins, f"{_base(op.name())} broadcasts to another rank")
        oshape = list(other.shape)
        axis = layout.axis - (len(out) - len(oshape))
        width = oshape[axis] if 0 <= axis < len(oshape) else 1
        if width != 1:
            param = self.param_of(other)
            paxis = None if param is None else self.param_axis(oshape, axis, param[1])
            if paxis is None:
                return self.unknown(op, ins, f"{_base(op.name())} with a constant that spans the channels")
            kind = _base(op.name())
            role, what = ("bias", f"bias of {_layer(param[0])}") if kind == "add" else \
                ("norm", f"{param[0]}, {kind} per channel")
            self.add_members(layout, param[0], paxis, role, what)
        self.values[op.result(0).id] = layout

    def reduce(self, op, ins) -> None:
        x = ins[0]
        if any(s is not None for s in ins[1:]) or not isinstance(x, _Layout):
            return self.unknown(op, ins)
        axes = _int_list(op.operand_source(1)) if op.num_operands() > 1 else op.attrs().get("axis")
        if not axes:
            return self.unknown(op, ins, f"{_base(op.name())} over all axes mixes the channels")
        axes = sorted(a % x.ndim for a in axes)
        if x.axis in axes:
            return self.unknown(op, ins, f"{_base(op.name())} over the channel axis mixes the channels")
        if op.attrs().get("keepdim", False):
            self.values[op.result(0).id] = x
        else:
            self.values[op.result(0).id] = _Layout(x.axis - sum(a < x.axis for a in axes), x.ndim - len(axes),
                                                   x.segments)

    def producer(self, op, weight: Tuple[str, List[int]], out_axis_of_weight: int, out_layout_axis: int,
                 kind: str) -> None:
        name, shape = weight
        out = op.result(0)
        space = self.by_param.get(name)
        if space is None:
            space = self.by_param[name] = self.new_space(shape[out_axis_of_weight], _layer(name))
            s = self.spaces[space]
            s.producers.append(_layer(name))
            s.members.append(Member(name, out_axis_of_weight, 0, 1, "producer",
                                    f"output {kind} of {_layer(name)}"))
        self.values[out.id] = _Layout(out_layout_axis, len(out.shape), ((space, 1),))

    def op_conv2d(self, op, ins) -> None:
        x = ins[0]
        weight = self.param_of(op.operand_source(1))
        attrs = op.attrs()
        per_example = int(np.prod(op.result(0).shape[1:]))
        wshape = list(op.operand_source(1).shape)
        self.flops += 2 * per_example * int(np.prod(wshape[1:]))
        if weight is None or list(weight[1][:2]) != wshape[:2]:
            return self.unknown(op, ins, "a convolution whose filter is not a parameter")
        groups = attrs.get("groups", 1)
        in_shape = list(op.operand_source(0).shape)
        refusal = None
        if groups != 1 and wshape[1] == 1 and wshape[0] == groups == in_shape[1] and \
                attrs.get("data_format", "NCHW") == "NCHW":
            return self.depthwise(op, ins, weight)
        if groups != 1:
            refusal = f"grouped convolutions (groups={groups}) are not handled"
        elif attrs.get("data_format", "NCHW") not in ("NCHW", "NCDHW"):
            refusal = f"convolutions in {attrs['data_format']} layout are not handled"
        if refusal is not None:
            self.refuse(x, refusal)
            self.producer(op, weight, 0, 1, "channels")
            return self.refuse(self.values[op.result(0).id], refusal)
        if isinstance(x, _Layout):
            if x.axis != 1 or any(stride != 1 for _, stride in x.segments):
                return self.unknown(op, ins, "a convolution over a flattened channel axis")
            self.add_members(x, weight[0], 1, "consumer", f"input channels of {_layer(weight[0])}")
        self.producer(op, weight, 0, 1, "channels")

    def depthwise(self, op, ins, weight: Tuple[str, List[int]]) -> None:
        """A depthwise convolution (one filter per channel) keeps channels apart: its filters go with them."""
        x = ins[0]
        if isinstance(x, _Layout):
            if x.axis != 1 or any(stride != 1 for _, stride in x.segments):
                return self.unknown(op, ins, "a convolution over a flattened channel axis")
            self.add_members(x, weight[0], 0, "channelwise", f"depthwise filter of {_layer(weight[0])}")
        if x is not None:
            self.values[op.result(0).id] = x

    op_conv3d = op_conv2d
    op_depthwise_conv2d = op_conv2d

    def op_matmul(self, op, ins) -> None:
        x, y = op.operand_source(0), op.operand_source(1)
        attrs = op.attrs()
        weight = self.param_of(y)
        if weight is None or len(weight[1]) != 2 or attrs.get("transpose_x") or attrs.get("transpose_y") \
                or ins[1] is not None:
            return self.unknown(op, ins, "a matmul that is not a Linear layer (x @ W[in, out])")
        self.flops += 2 * int(np.prod(op.result(0).shape[1:])) * weight[1][0]
        sx = ins[0]
        if isinstance(sx, _Layout):
            if sx.axis != sx.ndim - 1:
                return self.unknown(op, ins, "a Linear layer over a non-feature axis")
            self.add_members(sx, weight[0], 0, "consumer", f"input rows of {_layer(weight[0])}")
        self.producer(op, weight, 1, len(op.result(0).shape) - 1, "features")

    def op_embedding(self, op, ins) -> None:
        weight = self.param_of(op.operand_source(1))
        if weight is None or len(weight[1]) != 2:
            return self.unknown(op, ins)
        self.producer(op, weight, 1, len(op.result(0).shape) - 1, "features")

    def op_batch_norm(self, op, ins) -> None:
        x = ins[0]
        if not isinstance(x, _Layout):
            return self.unknown(op, ins)
        if op.attrs().get("data_format", "NCHW") not in ("NCHW", "NCDHW", "NCL", "NC") or x.axis != 1:
            return self.unknown(op, ins, "BatchNorm over another axis than the channels")
        for index, what, role in ((1, "running mean", "statistic"), (2, "running variance", "statistic"),
                                  (3, "scale", "norm"), (4, "shift", "norm")):
            v = op.operand_source(index)
            if v is None or not v.initialized():
                continue
            param = self.param_of(v)
            if param is None:
                return self.unknown(op, ins, "BatchNorm whose statistics are not parameters")
            self.add_members(x, param[0], 0, role, f"BatchNorm {_layer(param[0])} {what}")
        self.values[op.result(0).id] = x

    def op_flatten(self, op, ins) -> None:
        x = ins[0]
        if not isinstance(x, _Layout):
            return self.unknown(op, ins)
        start, stop = (op.attrs()[k] % x.ndim for k in ("start_axis", "stop_axis"))
        shape = list(op.operand_source(0).shape)
        self.values[op.result(0).id] = self._flattened(op, ins, x, start, stop, shape)

    def op_reshape(self, op, ins) -> None:
        x = ins[0]
        if not isinstance(x, _Layout):
            return self.unknown(op, ins)
        shape, out = list(op.operand_source(0).shape), list(op.result(0).shape)
        a = x.axis
        trailing = shape[a:]
        if len(out) == a + 1 and out[:a] == shape[:a] and -1 not in trailing and out[a] == int(np.prod(trailing)):
            self.values[op.result(0).id] = self._flattened(op, ins, x, a, len(shape) - 1, shape)
        elif out == shape:
            self.values[op.result(0).id] = x
        else:
            self.unknown(op, ins, f"a reshape from {shape} to {out} that mixes the channels")

    def _flattened(self, op, ins, x: _Layout, start: int, stop: int, shape: List[int]):
        if stop < x.axis:
            return _Layout(x.axis - (stop - start), x.ndim - (stop - start), x.segments)
        if start > x.axis:
            return _Layout(x.axis, x.ndim - (stop - start), x.segments)
        inner = shape[x.axis + 1:stop + 1]
        if start != x.axis or -1 in inner:
            self.unknown(op, ins, "a flatten that mixes the channel axis with the axes before it")
            return _Opaque("a flatten that mixes the channel axis with the axes before it")
        k = int(np.prod(inner))
        return _Layout(x.axis, x.ndim - (stop - start), tuple((s, st * k) for s, st in x.segments))

    def op_unsqueeze(self, op, ins) -> None:
        self._unsqueeze(op, ins, squeeze=False)

    def op_squeeze(self, op, ins) -> None:
        self._unsqueeze(op, ins, squeeze=True)

    def _unsqueeze(self, op, ins, squeeze: bool) -> None:
        x = ins[0]
        axes = _int_list(op.operand_source(1))
        if not isinstance(x, _Layout) or axes is None:
            return self.unknown(op, ins)
        if squeeze:
            axes = {a % x.ndim for a in axes}
            if x.axis in axes:
                return self.unknown(op, ins, "squeeze of the channel axis")
            layout = _Layout(x.axis - sum(a < x.axis for a in axes), x.ndim - len(axes), x.segments)
        else:
            ndim = x.ndim + len(axes)
            inserted = {a % ndim for a in axes}
            kept = [i for i in range(ndim) if i not in inserted]
            layout = _Layout(kept[x.axis], ndim, x.segments)
        self.values[op.result(0).id] = layout

    def op_concat(self, op, ins) -> None:
        combine = op.operand_source(0).get_defining_op()
        axis = _int_list(op.operand_source(1))
        parts = [self.state(v) for v in combine.operands_source()]
        if axis is None or combine.name() != "builtin.combine":
            return self.unknown(op, parts)
        if all(p is None for p in parts):
            return
        if not all(isinstance(p, _Layout) for p in parts):
            return self.unknown(op, parts, "a concat with a value whose channels are not followed")
        ndim = parts[0].ndim
        axis = axis[0] % ndim
        if any(p.ndim != ndim or p.axis != parts[0].axis for p in parts):
            return self.unknown(op, parts, "a concat of values with different channel axes")
        if axis == parts[0].axis:
            self.values[op.result(0).id] = _Layout(axis, ndim, tuple(s for p in parts for s in p.segments))
            return
        first = parts[0]
        for p in parts[1:]:
            if len(p.segments) != len(first.segments):
                return self.unknown(op, parts, "a concat of values with different channel layouts")
            for (x, _), (y, _) in zip(first.segments, p.segments):
                self.union(x, y, "a concat along another axis")
        self.values[op.result(0).id] = first

    # ---------------------------------------------------------------- result
    def graph(self) -> ChannelGraph:
        groups, refused = [], list(self.inputs)
        for i, s in enumerate(self.spaces):
            if self.find(i) != i or not s.producers:
                continue
            members = list(dict.fromkeys(s.members))
            g = ChannelGroup("+".join(dict.fromkeys(s.producers)), s.size, list(dict.fromkeys(s.producers)),
                             members, list(dict.fromkeys(s.ties)), list(dict.fromkeys(s.reasons)))
            (groups if g.prunable else refused).append(g)
        return ChannelGraph(groups, refused, self.flops)


def _base(name: str) -> str:
    base = name.split(".", 1)[-1]
    return base[:-1] if base.endswith("_") else base


def _layer(param: str) -> str:
    return param.rpartition(".")[0] or param


def _operands(op) -> list:
    return [v if v is not None and v.initialized() else None for v in op.operands_source()]


def _int_list(v) -> Optional[List[int]]:
    op = v.get_defining_op() if v is not None and v.initialized() else None
    if op is None:
        return None
    if op.name() == "pd_op.full_int_array":
        return [int(a) for a in op.attrs()["value"]]
    if op.name() == "pd_op.full":
        return [int(op.attrs()["value"])]
    return None


def trace_channel_groups(network: paddle.nn.Layer, example_inputs) -> ChannelGraph:
    """Trace ``network`` and return its channel groups.

    Args:
        network (paddle.nn.Layer): the model. It is traced in eval mode; its training flags are restored.
        example_inputs (paddle.Tensor|list): one batch of inputs (or ``paddle.static.InputSpec``\\ s); only
            shapes and dtypes are used, with the batch axis left free.

    Returns:
        ChannelGraph: ``groups`` (prunable), ``refused`` (with reasons) and ``flops`` per example.
    """
    program, outputs = trace_program(network, example_inputs)
    walker = _Walker(network)
    walker.walk(program, outputs)
    return walker.graph()
