"""Model size and cost: parameters, MACs, bytes and measured latency.

MAC convention (``optim.graph.ops``'s work rules, as thop counts these layers): Linear, in·out
per sample; Conv2d, (C_in/groups)·kh·kw per output element; BatchNorm and elementwise ops
(activations, residual adds), one per output element; pooling, one per window element read
(k_h·k_w per output). Counts are for one forward pass on an input of the given shape, batch
included.
Tests: ``tests/optim/test_metrics.py`` (against hand counts of each layer).
"""
from __future__ import annotations

import time

import numpy as np

import minnet
from minnet import nn
from minnet.tensor import observe_ops
from optim.graph.ops import function_work



def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.size for p in model.parameters() if p.requires_grad or not trainable_only)


def model_bytes(model: nn.Module, include_buffers: bool = True) -> int:
    """Bytes of the parameters (and buffers), each array counted once even if shared."""
    arrays = [p.data for p in model.parameters()]
    if include_buffers:
        arrays += list(model.buffers())
    return sum({id(a): a.nbytes for a in arrays}.values())


def forward_with_hooks(model: nn.Module, input_shape: tuple[int, ...], hooks: dict) -> None:
    """Run ``model`` once on zeros of ``input_shape`` in eval mode under ``no_grad`` with
    ``hooks`` (module -> forward hook) registered, then remove them and restore the mode."""
    if not all(isinstance(n, (int, np.integer)) and n > 0 for n in input_shape):
        raise ValueError(f"input_shape must be positive integers, got {input_shape}")
    handles = [module.register_forward_hook(hook) for module, hook in hooks.items()]
    was_training = model.training
    try:
        model.eval()
        with minnet.no_grad():
            model(minnet.Tensor(np.zeros(input_shape, dtype=np.float32)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()


def macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on a zero input of ``input_shape``: every op
    the pass applies, counted by the graph IR's work rule for it (``optim.graph.ops``, the one
    definition per op that the cost model also reads). Modules that run a layer with replaced
    weights (quantized, shared, masked) count as that layer, since the op applied is the same;
    ops the IR does not know (fake quantizers) count 0."""
    total = 0

    def observe(fn, inputs, attrs, output):
        nonlocal total
        total += function_work(fn, inputs, attrs, output)

    with observe_ops(observe):
        forward_with_hooks(model, input_shape, {})
    return int(total)


def latency(model: nn.Module, x, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time in seconds of ``model(x)`` in eval mode under ``no_grad``."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    x = x if isinstance(x, minnet.Tensor) else minnet.Tensor(np.asarray(x))
    was_training = model.training
    model.eval()
    times = []
    try:
        with minnet.no_grad():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return float(np.median(times))
