"""Model plumbing shared by PTQ, QAT and weight sharing: calling a layer with replaced weights,
flattening a model into a list of modules, folding BatchNorm and finding (layer, ReLU) pairs."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from minnet import functional as F
from minnet import nn
from minnet.tensor import Tensor
from optim.graph.fold import fold_batchnorm

LAYERS = (nn.Linear, nn.Conv2d)
# Modules that map quantized values to values on the same grid (monotone, or pure movement),
# so no new quantization point is needed after them.
PASSTHROUGH = (nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout, nn.ReLU)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def layer_forward(layer: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``layer``'s operation (Linear or Conv2d, with its geometry) on ``x`` with the given
    weight and bias in place of its own."""
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    return F.linear(x, weight, bias)


def flat_modules(model: nn.Module) -> list[nn.Module]:
    """The leaf modules of a model built from (nested) ``nn.Sequential`` containers, in order.

    TypeError for any other container: its forward may not run the children in order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a minnet Module, got {type(model).__name__}")
    if isinstance(model, nn.Sequential):
        return [leaf for child in model for leaf in flat_modules(child)]
    if nn.parametrize.has_submodules(model):
        raise TypeError(
            f"model must be built from nn.Sequential containers and leaf layers; "
            f"{type(model).__name__} has children run by its own forward"
        )
    return [model]


def fold_batchnorms(modules: list[nn.Module]) -> list[nn.Module]:
    """Copies of ``modules`` with every BatchNorm folded into the Linear/Conv2d just before it
    (``optim.graph.fold.fold_batchnorm``: the layer's weight and bias absorb the BN's running
    statistics and affine parameters). A BatchNorm after anything else is a TypeError."""
    out: list[nn.Module] = []
    for module in modules:
        if isinstance(module, BATCHNORMS):
            if not out or not isinstance(out[-1], LAYERS):
                raise TypeError("a BatchNorm must follow a Linear or Conv2d to be folded, got "
                                f"{type(out[-1]).__name__ if out else 'nothing'} before it")
            out[-1] = _folded(out[-1], module)
        else:
            out.append(copy.deepcopy(module))
    return out


def _folded(layer: nn.Module, bn: nn.Module) -> nn.Module:
    weight, bias = fold_batchnorm(
        layer.weight.data, None if layer.bias is None else layer.bias.data,
        bn.running_mean, bn.running_var,
        None if bn.weight is None else bn.weight.data, None if bn.bias is None else bn.bias.data,
        bn.eps)
    nn.parametrize.original(layer, "weight").data = weight  # masks, if any, still apply
    if layer.bias is None:
        layer.bias = nn.Parameter(bias)
    else:
        nn.parametrize.original(layer, "bias").data = bias
    return layer


@dataclass
class Stage:
    """A quantized layer: ``modules[layer]`` (Linear or Conv2d), optionally followed by the
    ReLU at ``modules[relu]`` that is fused into it (its output is the quantization point)."""
    layer: int
    relu: int | None = None

    @property
    def output(self) -> int:
        return self.layer if self.relu is None else self.relu


def plan_stages(modules: list[nn.Module]) -> list[Stage | int]:
    """Walk a flat, BN-folded module list: each Linear/Conv2d becomes a ``Stage`` (with the ReLU
    right after it fused), every other supported module stays as its index. TypeError names
    an unsupported module."""
    plan: list[Stage | int] = []
    i = 0
    while i < len(modules):
        module = modules[i]
        if isinstance(module, LAYERS):
            fused = i + 1 < len(modules) and isinstance(modules[i + 1], nn.ReLU)
            plan.append(Stage(i, i + 1 if fused else None))
            i += 2 if fused else 1
            continue
        if not isinstance(module, PASSTHROUGH):
            supported = ", ".join(t.__name__ for t in LAYERS + PASSTHROUGH + BATCHNORMS)
            raise TypeError(
                f"cannot quantize a model containing {type(module).__name__}; "
                f"supported modules: {supported}"
            )
        plan.append(i)
        i += 1
    if not any(isinstance(p, Stage) for p in plan):
        raise ValueError("model has no Linear or Conv2d layer to quantize")
    return plan
