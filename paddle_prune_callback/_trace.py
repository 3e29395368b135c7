"""The PIR program of a network's ``forward``, traced with ``paddle.jit.to_static`` in eval mode."""
from __future__ import annotations

from typing import List

import paddle


def input_spec(example_inputs) -> List[paddle.static.InputSpec]:
    """InputSpecs with a free batch axis for a tensor, a list/tuple of tensors, or InputSpecs."""
    items = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
    if not items:
        raise ValueError("`example_inputs` is empty; pass a batch of inputs such as paddle.randn([1, 3, 32, 32]).")
    specs = []
    for i, x in enumerate(items):
        if isinstance(x, paddle.static.InputSpec):
            specs.append(x)
        elif isinstance(x, paddle.Tensor):
            specs.append(paddle.static.InputSpec([None] + list(x.shape[1:]), x.dtype, f"input_{i}"))
        else:
            raise TypeError(f"`example_inputs` must be a paddle.Tensor, a list of them, or InputSpecs; item {i} is "
                            f"a {type(x).__name__}. Pass for example paddle.randn([1, 3, 32, 32]).")
    return specs


def trace_program(network: paddle.nn.Layer, example_inputs):
    """The network's PIR program and output values, traced in eval mode (training flags restored)."""
    if not isinstance(network, paddle.nn.Layer):
        raise TypeError(f"expected a paddle.nn.Layer, got {type(network).__name__}.")
    specs = input_spec(example_inputs)
    modes = [(layer, layer.training) for layer in network.sublayers(include_self=True)]
    network.eval()
    try:
        fn = paddle.jit.to_static(network.forward, input_spec=specs, full_graph=True)
        concrete = fn.concrete_program
        # Paddle < 3.3.1 traces inputs whose shapes do not fit the weights without an error; an eager
        # forward of the example tensors finds the mismatch on every version.
        tensors = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
        if all(isinstance(x, paddle.Tensor) for x in tensors):
            with paddle.no_grad():
                network(*tensors)
    except Exception as err:
        raise RuntimeError(f"could not trace {type(network).__name__}.forward with paddle.jit.to_static for "
                           f"its channel groups: {type(err).__name__}: {err}") from err
    finally:
        for layer, training in modes:
            layer.training = training
    return concrete.main_program, list(concrete.outputs)
