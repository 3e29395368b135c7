"""Which parameters are pruned."""
from __future__ import annotations

import fnmatch
from typing import Callable, Dict, Sequence, Union

import paddle

ParameterSpec = Union[None, Sequence[str], Callable[[str, paddle.Tensor], bool]]

_NORM_NAMES = ("BatchNorm", "BatchNorm1D", "BatchNorm2D", "BatchNorm3D", "SyncBatchNorm", "LayerNorm",
               "GroupNorm", "InstanceNorm1D", "InstanceNorm2D", "InstanceNorm3D", "LocalResponseNorm",
               "SpectralNorm", "RMSNorm")
NORM_LAYERS = tuple(getattr(paddle.nn, n) for n in _NORM_NAMES if hasattr(paddle.nn, n))

_FLOAT_DTYPES = (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)


def check_parameter_spec(spec: ParameterSpec) -> ParameterSpec:
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, (str, bytes)):
        raise TypeError(f"`parameters` must be a list of names or patterns, got the string {spec!r}; "
                        f"wrap it in a list: [{spec!r}].")
    if not isinstance(spec, Sequence) or not all(isinstance(s, str) for s in spec):
        raise TypeError(f"`parameters` must be None, a list of parameter names / fnmatch patterns, or a "
                        f"callable (name, param) -> bool; got {spec!r}.")
    if len(spec) == 0:
        raise ValueError("`parameters` is an empty list; pass None to prune the default parameters.")
    return list(spec)


def resolve_parameters(network: paddle.nn.Layer, spec: ParameterSpec) -> Dict[str, paddle.Tensor]:
    """The prunable parameters of ``network`` by structured name, in the network's order.

    ``None`` selects every trainable parameter with ``ndim >= 2`` outside normalization layers and sparse
    embeddings (``Embedding(sparse=True)``: their SelectedRows gradients cannot be masked); a list
    selects the trainable parameters whose names match any of its fnmatch patterns (each pattern must
    match one); a callable ``(name, param) -> bool`` selects those for which it returns True. Frozen
    parameters (``stop_gradient=True``) are never selected. A sparse embedding selected by a list or a
    callable raises ``ValueError``.
    """
    if not isinstance(network, paddle.nn.Layer):
        raise TypeError(f"expected a paddle.nn.Layer, got {type(network).__name__}.")
    named = list(network.named_parameters())
    trainable = [(n, p) for n, p in named if not p.stop_gradient]
    sparse = {id(p) for layer in network.sublayers(include_self=True)
              if isinstance(layer, paddle.nn.Embedding) and getattr(layer, "_sparse", False)
              for p in layer.parameters(include_sublayers=False)}
    if spec is None:
        in_norm = {id(p) for layer in network.sublayers(include_self=True) if isinstance(layer, NORM_LAYERS)
                   for p in layer.parameters(include_sublayers=False)}
        chosen = [(n, p) for n, p in trainable if p.ndim >= 2 and id(p) not in in_norm and id(p) not in sparse]
        if not chosen:
            raise ValueError(
                f"{type(network).__name__} has no prunable parameter: none of its {len(named)} parameters is "
                f"trainable with ndim >= 2 outside a normalization layer. Pass `parameters=[...]` to name "
                f"the ones to prune.")
    elif callable(spec):
        chosen = [(n, p) for n, p in trainable if spec(n, p)]
        if not chosen:
            raise ValueError(f"the `parameters` callable selected none of the trainable parameters "
                             f"{[n for n, _ in trainable]}.")
    else:
        frozen = {n for n, p in named if p.stop_gradient}
        for pattern in spec:
            if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in trainable):
                hint = " (it matches only frozen parameters)" if any(
                    fnmatch.fnmatchcase(n, pattern) for n in frozen) else ""
                raise ValueError(f"`parameters` pattern {pattern!r} matches no trainable parameter{hint}; "
                                 f"the trainable parameters are {[n for n, _ in trainable]}.")
        chosen = [(n, p) for n, p in trainable if any(fnmatch.fnmatchcase(n, pat) for pat in spec)]
    for name, p in chosen:
        if id(p) in sparse:
            raise ValueError(f"parameter {name!r} belongs to an Embedding with sparse=True, whose sparse "
                             f"(SelectedRows) gradients cannot be masked; leave it out of `parameters`, or "
                             f"build the embedding with sparse=False to prune it.")
        if p.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"parameter {name!r} has dtype {p.dtype}; only floating-point parameters can be "
                            f"pruned. Leave it out of `parameters`.")
    return dict(chosen)
