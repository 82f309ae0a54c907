"""Model size and cost: parameters, MACs, bytes and measured latency.

MAC convention (as thop/fvcore count for these layers): Linear, in·out per sample; Conv2d,
(C_in/groups)·kh·kw per output element; BatchNorm and elementwise activations, one per output
element; pooling, one per window element read (k_h·k_w per output). Counts are for one
forward pass on an input of the given shape, batch included.
Tests: ``tests/optim/test_metrics.py`` (against hand counts of each layer).
"""
from __future__ import annotations

import time

import numpy as np

import minnet
from minnet import nn

LAYERS = (nn.Linear, nn.Conv2d)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.size for p in model.parameters() if p.requires_grad or not trainable_only)


def model_bytes(model: nn.Module, include_buffers: bool = True) -> int:
    """Bytes of the parameters (and buffers), each array counted once even if shared."""
    arrays = [p.data for p in model.parameters()]
    if include_buffers:
        arrays += list(model.buffers())
    return sum({id(a): a.nbytes for a in arrays}.values())


def _pair(v) -> tuple[int, int]:
    return (v, v) if np.isscalar(v) else tuple(v)


def _layer_macs(module: nn.Module, input_shape: tuple[int, ...], output: minnet.Tensor) -> int:
    out = output.size
    if isinstance(module, nn.Linear):
        return out * module.in_features
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kh, kw = _pair(module.kernel_size)
        return out * kh * kw
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return int(np.prod(input_shape))
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.GELU,
                           nn.Sigmoid, nn.Tanh)):
        return out
    return 0


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
    """Multiply-accumulates of one forward pass on a zero input of ``input_shape``, counted
    per leaf module through forward hooks (see the module docstring for the convention).

    A module holding its Linear/Conv2d as ``.layer`` and running it with replaced weights
    (``QuantStage``, ``SharedWeightLayer``) counts as that layer, plus one per output element
    for a fused ReLU (``relu=True``)."""
    counts: list[int] = []

    def hook(module, args, output):
        counts.append(_layer_macs(module, args[0].shape, output))

    def wrapper_hook(module, args, output):
        counts.append(_layer_macs(module.layer, args[0].shape, output)
                      + (output.size if getattr(module, "relu", False) is True else 0))

    wrappers = [m for m in model.modules() if isinstance(getattr(m, "layer", None), LAYERS)]
    wrapped = {id(m.layer) for m in wrappers}
    hooks = {m: hook for m in model.modules()
             if not any(True for _ in m.children()) and id(m) not in wrapped}
    hooks.update({m: wrapper_hook for m in wrappers})
    forward_with_hooks(model, input_shape, hooks)
    return int(sum(counts))


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
