"""Physical removal of all-zero channel groups: a smaller network that computes the same outputs.

    report = slim(net, paddle.randn([1, 3, 32, 32]))
    print(report)                     # parameters and FLOPs before/after, channels removed per group
    paddle.jit.save(net, "slim/model", input_spec=[InputSpec([None, 3, 32, 32], "float32")])

A channel is removed when every slice of its group (see :mod:`.graph`) is exactly zero: the producer's
filter, its bias, the following BatchNorm's scale and shift, and every consumer's input slice. The
BatchNorm running statistics are sliced with it and need not be zero. Such a channel contributes nothing
to any output, so removing it changes nothing; ``slim`` checks that on the example inputs and restores the
network if it does not hold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import paddle

from .graph import ChannelGraph, ChannelGroup, trace_channel_groups

_FLOAT_HOST = (paddle.float16, paddle.float32, paddle.float64)


@dataclass
class SlimReport:
    """What :func:`slim` did. ``channels`` maps each group's name to (channels before, channels after);
    ``kept_zero`` lists refused groups that had all-zero channels, with why they were kept."""

    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    channels: Dict[str, Tuple[int, int]]
    kept_zero: Dict[str, str] = field(default_factory=dict)
    max_abs_diff: float = 0.0

    def __str__(self) -> str:
        lines = [f"parameters {self.params_before:,} -> {self.params_after:,} "
                 f"({self.params_after / max(self.params_before, 1):.1%}); FLOPs per example "
                 f"{self.flops_before:,} -> {self.flops_after:,} ({self.flops_after / max(self.flops_before, 1):.1%})"]
        for name, (before, after) in self.channels.items():
            lines.append(f"  {name}: {before} -> {after} channels")
        for name, why in self.kept_zero.items():
            lines.append(f"  {name}: all-zero channels kept: {why}")
        return "\n".join(lines)


def zero_channels(group: ChannelGroup, tensors: Dict[str, paddle.Tensor]) -> np.ndarray:
    """Boolean array over the group's channels: True where every scored slice (all but the running
    statistics) is exactly zero."""
    alive = np.zeros(group.size, dtype=bool)
    for m in group.members:
        if m.role == "statistic":
            continue
        t = tensors[m.parameter].detach()
        w = (t if t.dtype in _FLOAT_HOST else t.astype("float32")).numpy()
        w = np.moveaxis(w, m.axis, 0)[m.offset:m.offset + group.size * m.stride]
        alive |= w.reshape(group.size, -1).any(axis=1)
    return ~alive


def _layer_attrs(network: paddle.nn.Layer) -> Dict[str, Tuple[paddle.nn.Layer, str]]:
    """Structured parameter (and buffer) name -> (owning layer, attribute name)."""
    owners = {}
    for prefix, layer in network.named_sublayers(include_self=True):
        for attr, p in list(layer._parameters.items()) + list(layer._buffers.items()):
            if p is not None:
                owners[f"{prefix}.{attr}" if prefix else attr] = (layer, attr)
    return owners


def _shape_attrs(layer: paddle.nn.Layer) -> Dict[str, int]:
    """The layer's shape attributes that ``print`` and ``paddle.summary`` show, from its parameters."""
    if isinstance(layer, (paddle.nn.Conv1D, paddle.nn.Conv2D, paddle.nn.Conv3D)):
        out_c, in_c = layer.weight.shape[:2]
        if layer._groups > 1:   # depthwise (one filter per channel): the only grouped convolution traced
            return {"_out_channels": out_c, "_in_channels": out_c, "_groups": out_c}
        return {"_out_channels": out_c, "_in_channels": in_c}
    if isinstance(layer, paddle.nn.layer.norm._BatchNormBase):
        return {"_num_features": layer._mean.shape[0]}
    if isinstance(layer, paddle.nn.Embedding):
        return {"_embedding_dim": layer.weight.shape[1]}
    return {}   # Linear shows its weight's shape


def _outputs(network: paddle.nn.Layer, example_inputs) -> List[np.ndarray]:
    inputs = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
    modes = [(layer, layer.training) for layer in network.sublayers(include_self=True)]
    network.eval()
    try:
        with paddle.no_grad():
            out = network(*inputs)
    finally:
        for layer, training in modes:
            layer.training = training
    flat = out if isinstance(out, (list, tuple)) else [out]
    return [o.astype("float32").numpy() if o.dtype not in _FLOAT_HOST else o.numpy() for o in flat
            if isinstance(o, paddle.Tensor)]


def _count(network: paddle.nn.Layer) -> int:
    return sum(int(np.prod(p.shape)) for p in network.parameters())


def slim(network: paddle.nn.Layer, example_inputs, *, graph: ChannelGraph | None = None,
         rtol: float = 1e-5) -> SlimReport:
    """Remove, in place, every channel whose whole group is zero.

    Parameters, BatchNorm running statistics and consumers' input slices are replaced by smaller ones
    (the same ``Parameter`` objects, so names stay), and the layers' shape attributes are updated, so
    ``print(network)``, ``paddle.summary`` and ``paddle.jit.save`` show and export the smaller network.
    Optimizer state is not carried over: build a new optimizer to train on.

    Args:
        network (paddle.nn.Layer): the masked network.
        example_inputs (paddle.Tensor|list): a batch of inputs, used to trace the network and to check
            that its outputs are unchanged (in eval mode).
        graph (ChannelGraph, optional): the result of ``trace_channel_groups(network, example_inputs)``,
            if already at hand. Default: None, traced here.
        rtol (float, optional): the check's tolerance, relative to the largest absolute output.
            Default: 1e-5.

    Returns:
        SlimReport: parameters and FLOPs per example before and after, channels per group.

    Raises:
        ValueError: a group would lose all of its channels.
        RuntimeError: the network cannot be traced, or the slimmed network fails to run or computes other
            outputs (it is then restored). The network is unchanged whenever ``slim`` raises.
    """
    graph = graph if graph is not None else trace_channel_groups(network, example_inputs)
    owners = _layer_attrs(network)
    tensors = {name: getattr(layer, attr) for name, (layer, attr) in owners.items()}
    params_before = _count(network)
    report = SlimReport(params_before, params_before, graph.flops, graph.flops, {})
    for group in graph.refused:
        if group.members and zero_channels(group, tensors).any():
            report.kept_zero[group.name] = "; ".join(group.reasons)

    removed: Dict[Tuple[str, int], set] = {}
    for group in graph.groups:
        dead = np.flatnonzero(zero_channels(group, tensors))
        report.channels[group.name] = (group.size, group.size - dead.size)
        if dead.size == group.size:
            raise ValueError(f"every one of the {group.size} channels of group {group.name!r} is zero; slim "
                             f"would remove the layer's whole output. Nothing was changed: keep at least one "
                             f"channel per group (the channel pattern always does).")
        for m in group.members:
            removed.setdefault((m.parameter, m.axis), set()).update(m.indices(dead).tolist())
    removed = {k: v for k, v in removed.items() if v}
    if not removed:
        return report

    reference = _outputs(network, example_inputs)
    changed = sorted({name for name, _ in removed})
    saved = {name: tensors[name].detach().clone() for name in changed}
    layers = {owners[name][0] for name in changed}
    saved_attrs = {layer: {k: getattr(layer, k) for k in _shape_attrs(layer)} for layer in layers}

    def restore():
        for name, old in saved.items():
            old._share_underline_tensor_to(tensors[name])
        for layer, attrs in saved_attrs.items():
            for k, v in attrs.items():
                setattr(layer, k, v)

    try:
        with paddle.no_grad():
            for name in changed:
                t, new = tensors[name], tensors[name].detach()
                for (pname, axis), idx in removed.items():
                    if pname == name:
                        keep = np.setdiff1d(np.arange(t.shape[axis]), np.fromiter(idx, dtype=np.int64))
                        new = paddle.index_select(new, paddle.to_tensor(keep, place=t.place), axis=axis)
                new.clone()._share_underline_tensor_to(t)
        for layer in layers:
            for k, v in _shape_attrs(layer).items():
                setattr(layer, k, v)
        after = _outputs(network, example_inputs)
        slimmed = trace_channel_groups(network, example_inputs)
    except Exception as err:
        restore()
        raise RuntimeError(f"the slimmed network failed to run ({type(err).__name__}: {err}); the network was "
                           f"restored. Its channel groups are incomplete: please report the network.") from err
    diff = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(after, reference))
    tolerance = rtol * max(1.0, max(float(np.max(np.abs(b), initial=0.0)) for b in reference))
    if diff > tolerance:
        restore()
        raise RuntimeError(f"the slimmed network's outputs differ from the masked network's by {diff:.3g} "
                           f"(tolerance {tolerance:.3g}); the network was restored.")
    report.params_after = _count(network)
    report.flops_after = slimmed.flops
    report.max_abs_diff = diff
    return report


__all__ = ["slim", "SlimReport", "zero_channels"]
