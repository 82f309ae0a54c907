r"""Physical shrinking: turn removed neurons/filters into a smaller dense model.

An output unit :math:`k` of a Linear or Conv2d layer is *removed* when all its weights are zero
(e.g. masked by a structured mask). Its output is then the constant :math:`b_k`, and after the
channel-wise layers that follow (BatchNorm in eval mode, activations, pooling) still a constant
:math:`c_k = f(b_k)`. Shrinking deletes the unit and, in its consumer, the inputs it fed,
folding the constant into the consumer's bias:

.. math:: b'_o = b_o + \sum_{k \text{ removed}} c_k \sum_{j \in J(k)} W_{o j}

where :math:`J(k)` are the consumer's inputs owned by unit :math:`k`: one column of a Linear,
the :math:`H \cdot W` columns of a Linear after ``Flatten`` (channel-major order), or the
:math:`k_h \cdot k_w` taps of input channel :math:`k` of a Conv2d (exact only without zero
padding, so padding with a non-zero constant is refused). BatchNorm, pooling and activation
layers between them lose channel :math:`k` too. The shrunk model computes the same function as
the masked model in eval mode. Removing a filter with the next layer's kernels that read its
feature map is Li et al. 2017, "Pruning Filters for Efficient ConvNets", Sec. 3.1; coupled
layers are found as Torch-Pruning's dependency graph does (Fang et al. 2023, "DepGraph"),
restricted here to chains; the bias fold is the exact contribution of the constant inputs.

Supported: ``nn.Sequential`` chains (nested Sequentials are flattened) of Linear, Conv2d
(groups=1), BatchNorm1d/2d (with running statistics), ReLU, LeakyReLU, GELU, Sigmoid, Tanh,
MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, Identity and Flatten. Any other layer that a
removal flows through raises ``ValueError`` naming it. The last Linear/Conv2d keeps all its
outputs (they are the model's outputs). Tests: ``tests/optim/prune/test_prune_shrink.py``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

import minnet
from minnet import nn

from .parametrize import effective_weight, remove_all

PRODUCERS = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Sigmoid, nn.Tanh)
PASS_THROUGH = (nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity)
PER_CHANNEL = NORMS + ACTIVATIONS + PASS_THROUGH + (nn.AvgPool2d,)


def flat_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf layers of a (nested) ``nn.Sequential`` in execution order, with their names."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"pruning dependency analysis supports nn.Sequential models, got "
                         f"{type(model).__name__}")
    layers = []
    for name, module in model.named_children():
        if isinstance(module, nn.Sequential):
            layers += [(f"{name}.{inner}", m) for inner, m in flat_layers(module)]
        elif nn.parametrize.has_submodules(module):
            raise ValueError(f"layer {name!r} ({type(module).__name__}) has submodules; "
                             "the dependency analysis supports only nested nn.Sequential")
        else:
            layers.append((name, module))
    return layers


def kept_units(module: nn.Module) -> np.ndarray:
    """Boolean per output unit of a Linear/Conv2d: True unless all of its weights are zero."""
    w = effective_weight(module, "weight")
    return (w.reshape(w.shape[0], -1) != 0).any(axis=1)


@dataclass
class _Removal:
    """Units removed upstream: ``keep`` per channel, each channel's constant value ``const``,
    and the layout of the tensor carrying them ("features" (N, C), "channels" (N, C, H, W) or
    "flat" (N, C*H*W) after Flatten)."""
    keep: np.ndarray
    const: np.ndarray
    layout: str


def _unsupported(name: str, module: nn.Module, why: str) -> ValueError:
    return ValueError(f"cannot shrink through layer {name!r} ({type(module).__name__}): {why}")


def _set_param(module: nn.Module, attr: str, data: np.ndarray | None) -> None:
    if data is None:
        module.register_parameter(attr, None)
    else:
        setattr(module, attr, nn.Parameter(np.ascontiguousarray(data)))


def _fold(module: nn.Module, extra: np.ndarray) -> None:
    """Add ``extra`` to the module's bias (creating one if needed and ``extra`` is non-zero)."""
    w = module.weight.data
    if module.bias is not None:
        _set_param(module, "bias", (module.bias.data + extra).astype(w.dtype))
    elif np.any(extra != 0):
        _set_param(module, "bias", extra.astype(w.dtype))


def _consume(name: str, module: nn.Module, removal: _Removal) -> None:
    """Delete the inputs of ``module`` fed by removed units, folding their constants."""
    keep, const, w = removal.keep, removal.const, module.weight.data
    gone = ~keep
    if isinstance(module, nn.Linear):
        if removal.layout == "channels":
            raise _unsupported(name, module, "a Linear on a 4-D input needs a Flatten before it")
        group = module.in_features // keep.size
        if group * keep.size != module.in_features or (removal.layout == "features" and group != 1):
            raise _unsupported(name, module, f"in_features={module.in_features} does not match "
                                             f"{keep.size} incoming units")
        columns = np.repeat(keep, group)
        extra = w[:, ~columns].astype(np.float64) @ np.repeat(const, group)[~columns]
        _set_param(module, "weight", w[:, columns])
        module.in_features = int(columns.sum())
    else:
        if removal.layout != "channels" or module.groups != 1:
            raise _unsupported(name, module, "needs a 4-D input and groups=1")
        padded = np.any(np.atleast_1d(module.padding) != 0)
        if padded and np.any(const[gone] != 0):
            raise _unsupported(name, module, "zero padding makes a removed channel's non-zero "
                                             "constant output position-dependent")
        extra = w[:, gone].sum(axis=(2, 3)).astype(np.float64) @ const[gone]
        _set_param(module, "weight", w[:, keep])
        module.in_channels = int(keep.sum())
    _fold(module, extra)


def _produce(name: str, module: nn.Module) -> _Removal | None:
    """Delete the removed output units of ``module``; describe them for the layers after."""
    keep = kept_units(module)
    if keep.all():
        return None
    if not keep.any():
        raise ValueError(f"layer {name!r} would lose all of its {keep.size} output units")
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        raise _unsupported(name, module, "removing outputs of a grouped convolution")
    bias = np.zeros(keep.size) if module.bias is None else module.bias.data.astype(np.float64)
    _set_param(module, "weight", module.weight.data[keep])
    if module.bias is not None:
        _set_param(module, "bias", module.bias.data[keep])
    if isinstance(module, nn.Linear):
        module.out_features = int(keep.sum())
        return _Removal(keep, bias, "features")
    module.out_channels = int(keep.sum())
    return _Removal(keep, bias, "channels")


def _through(name: str, module: nn.Module, removal: _Removal) -> None:
    """Carry the removed channels' constants through a channel-wise layer and drop them."""
    keep, const = removal.keep, removal.const
    if isinstance(module, NORMS):
        if module.running_mean is None:
            raise _unsupported(name, module, "BatchNorm without running statistics")
        scale = 1.0 / np.sqrt(module.running_var.astype(np.float64) + module.eps)
        gamma = module.weight.data if module.weight is not None else 1.0
        beta = module.bias.data if module.bias is not None else 0.0
        removal.const = (const - module.running_mean) * scale * gamma + beta
        for attr in ("weight", "bias"):
            if getattr(module, attr) is not None:
                _set_param(module, attr, getattr(module, attr).data[keep])
        module.running_mean = module.running_mean[keep]
        module.running_var = module.running_var[keep]
        module.num_features = int(keep.sum())
    elif isinstance(module, ACTIVATIONS):
        with minnet.no_grad():
            removal.const = module(minnet.Tensor(const)).data.astype(np.float64)
    elif isinstance(module, nn.AvgPool2d):
        if np.any(np.atleast_1d(module.padding) != 0) and np.any(const[~keep] != 0):
            raise _unsupported(name, module, "zero padding changes a non-zero constant channel")
    elif not isinstance(module, PASS_THROUGH):
        raise _unsupported(name, module, "unknown layer type")


def shrink(model: nn.Sequential) -> nn.Sequential:
    """A smaller dense copy of ``model`` without its removed units (see the module docstring).

    Pruning parametrizations are made permanent in the copy; ``model`` is left unchanged. The
    copy's outputs equal ``model``'s in eval mode (up to rounding). Test:
    ``tests/optim/prune/test_prune_shrink.py::test_shrinking_random_masks_preserves_outputs``.
    """
    flat_layers(model)  # validates the structure before copying
    shrunk = remove_all(copy.deepcopy(model))
    layers = flat_layers(shrunk)
    producers = [i for i, (_, m) in enumerate(layers) if isinstance(m, PRODUCERS)]
    removal: _Removal | None = None
    for i, (name, module) in enumerate(layers):
        if isinstance(module, PRODUCERS):
            if removal is not None:
                _consume(name, module, removal)
            removal = _produce(name, module) if i != producers[-1] else None
        elif removal is None:
            continue
        elif isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise _unsupported(name, module, "only Flatten(start_dim=1, end_dim=-1)")
            if removal.layout == "channels":
                removal.layout = "flat"
        elif isinstance(module, PER_CHANNEL):
            _through(name, module, removal)
        else:
            raise _unsupported(name, module, "unknown layer type")
    return shrunk
