"""Architectures of ``mlp_space`` / ``cnn_space`` as minnet models, and their cost from the genes.

``build_mlp`` / ``build_cnn`` decode an architecture (the layer order is in ``spaces``'s
docstring); a used skip wraps its block in ``Residual``, an identity shortcut. ``mlp_cost`` /
``cnn_cost`` give the parameter and MAC counts of the same model in closed form, without
building it, so a MACs budget can reject an architecture before anything is trained.
MACs follow ``optim.metrics``'s convention (per image), which counts every op by the graph
IR's work rule: a used shortcut's addition is one per output element, like an activation.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

from minnet import nn
from minnet.tensor import Tensor

from .spaces import cnn_feature_shape, conv_output_size

__all__ = ["Residual", "Cost", "build_mlp", "build_cnn", "mlp_cost", "cnn_cost", "macs_at_most",
           "describe"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class Residual(nn.Module):
    """``body(x) + x``: an identity shortcut around ``body``, which must keep ``x``'s shape."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        if out.shape != x.shape:
            raise ValueError(f"Residual: body maps shape {x.shape} to {out.shape}; an identity "
                             f"shortcut needs them equal")
        return out + x


class Cost(NamedTuple):
    """Parameter elements and multiply-accumulates for one image."""

    params: int
    macs: int


def _activation(arch: dict) -> nn.Module:
    return _ACTIVATIONS[arch["activation"]]()


def _skip(arch: dict, i: int) -> bool:
    return bool(i > 0 and arch[f"skip_{i}"])


def _block(arch: dict, i: int, *layers: nn.Module) -> nn.Module:
    body = nn.Sequential(*layers, _activation(arch))
    return Residual(body) if _skip(arch, i) else body


def _head(arch: dict, features: int, num_classes: int) -> list[nn.Module]:
    hidden = arch.get("fc_width", 0)
    if hidden:
        return [nn.Linear(features, hidden), _activation(arch), nn.Linear(hidden, num_classes)]
    return [nn.Linear(features, num_classes)]


def build_mlp(arch: dict, in_features: int = 784, num_classes: int = 10) -> nn.Sequential:
    """The ``mlp_space`` model: Flatten, ``n_blocks`` blocks Linear -> activation (each a
    ``Residual`` where ``skip_i``), then Linear(width, ``num_classes``).

    Tested by ``tests/optim/nas/test_nas_build.py::test_mlp_builds_and_costs_match_closed_form``.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for i in range(arch["n_blocks"]):
        layers.append(_block(arch, i, nn.Linear(width, arch[f"width_{i}"])))
        width = arch[f"width_{i}"]
    return nn.Sequential(*layers, *_head(arch, width, num_classes))


def build_cnn(arch: dict, input_size: int = 28, in_channels: int = 1,
              num_classes: int = 10) -> nn.Sequential:
    """The ``cnn_space`` model: per block Conv2d -> activation (a ``Residual`` where
    ``skip_i``) then the block's pooling, then Flatten, the optional hidden Linear and
    Linear(features, ``num_classes``).

    Raises ValueError when the feature map would shrink below 1x1 (``cnn_feature_shape``).
    Tested by ``tests/optim/nas/test_nas_build.py::test_cnn_builds_and_costs_match_closed_form``.
    """
    channels, size, _ = cnn_feature_shape(arch, input_size, in_channels)
    layers: list[nn.Module] = []
    previous = in_channels
    for i in range(arch["n_blocks"]):
        kernel = arch[f"kernel_{i}"]
        padding = kernel // 2 if arch["padding"] == "same" else 0
        layers.append(_block(arch, i, nn.Conv2d(previous, arch[f"channels_{i}"], kernel,
                                                padding=padding)))
        if arch[f"pool_{i}"] != "none":
            layers.append(_POOLS[arch[f"pool_{i}"]](2))
        previous = arch[f"channels_{i}"]
    return nn.Sequential(*layers, nn.Flatten(), *_head(arch, channels * size * size, num_classes))


def _head_cost(arch: dict, features: int, num_classes: int) -> Cost:
    hidden = arch.get("fc_width", 0)
    if hidden:
        return Cost(features * hidden + hidden + hidden * num_classes + num_classes,
                    features * hidden + hidden + hidden * num_classes)
    return Cost(features * num_classes + num_classes, features * num_classes)


def mlp_cost(arch: dict, in_features: int = 784, num_classes: int = 10) -> Cost:
    """Parameters and MACs per image of ``build_mlp(arch)``, from the genes.

    With :math:`w_{-1}` = ``in_features`` and :math:`n` = ``n_blocks``:

    .. math:: P = \\sum_{i<n} (w_{i-1} + 1)\\,w_i + (w_{n-1} + 1)\\,K, \\qquad
              M = \\sum_{i<n} (w_{i-1} + 1 + [\\text{skip}_i])\\,w_i + w_{n-1} K

    (the ``+ w_i`` MACs are the activation's, one per output, and the shortcut's addition where
    block i > 0 has one). Tested by
    ``tests/optim/nas/test_nas_build.py::test_mlp_builds_and_costs_match_closed_form``
    (against ``optim.metrics.count_params`` and ``macs`` on the built model).
    """
    params = macs = 0
    width = in_features
    for i in range(arch["n_blocks"]):
        params += (width + 1) * arch[f"width_{i}"]
        macs += (width + 1 + _skip(arch, i)) * arch[f"width_{i}"]
        width = arch[f"width_{i}"]
    head = _head_cost(arch, width, num_classes)
    return Cost(params + head.params, macs + head.macs)


def cnn_cost(arch: dict, input_size: int = 28, in_channels: int = 1, num_classes: int = 10) -> Cost:
    """Parameters and MACs per image of ``build_cnn(arch)``, from the genes.

    Block :math:`i` maps :math:`c_{i-1} \\times s_{i-1}^2` to a convolution output of side
    :math:`s'_i = s_{i-1} + 2p_i - k_i + 1` (:math:`p_i = \\lfloor k_i/2 \\rfloor` for "same",
    else 0), then :math:`s_i = \\lfloor s'_i / 2 \\rfloor` if pooled, else :math:`s'_i`:

    .. math:: P_i = c_{i-1} c_i k_i^2 + c_i, \\qquad
              M_i = s_i'^2 c_i (c_{i-1} k_i^2 + 1 + [\\text{skip}_i]) + [\\text{pool}_i]\\, 4 s_i^2 c_i

    (convolution, activation, the shortcut's addition, a 2x2 window per pooled output). The head on
    :math:`F = c_{n-1} s_{n-1}^2` features with hidden width :math:`h` and :math:`K` classes:
    :math:`P = (F + 1) h + (h + 1) K`, :math:`M = (F + 1) h + h K`, or
    :math:`P = (F + 1) K`, :math:`M = F K` without a hidden layer. Raises ValueError when
    the map shrinks below 1x1. Tested by
    ``tests/optim/nas/test_nas_build.py::test_cnn_builds_and_costs_match_closed_form``
    (against ``optim.metrics.count_params`` and ``macs`` on the built model).
    """
    cnn_feature_shape(arch, input_size, in_channels)  # raises when the map shrinks below 1x1
    params = macs = 0
    side, previous = input_size, in_channels
    for i in range(arch["n_blocks"]):
        kernel, out = arch[f"kernel_{i}"], arch[f"channels_{i}"]
        side = conv_output_size(side, kernel, padding=kernel // 2 if arch["padding"] == "same" else 0)
        params += previous * out * kernel ** 2 + out
        macs += side ** 2 * out * (previous * kernel ** 2 + 1 + _skip(arch, i))
        if arch[f"pool_{i}"] != "none":
            side //= 2
            macs += 4 * side ** 2 * out
        previous = out
    head = _head_cost(arch, previous * side * side, num_classes)
    return Cost(params + head.params, macs + head.macs)


def _macs_at_most(arch: dict, budget: float, cost: Callable[[dict], Cost]) -> bool:
    try:
        return cost(arch).macs <= budget
    except ValueError:  # cannot be built at all
        return False


def macs_at_most(budget: float, cost: Callable[[dict], Cost] = cnn_cost) -> Callable[[dict], bool]:
    """A constraint ``arch -> cost(arch).macs <= budget`` for ``SearchSpace.with_constraints``
    (picklable, so a space using it can be sent to worker processes).

    Tested by ``tests/optim/nas/test_nas_build.py::test_macs_budget_rejects_before_training``.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(f"budget must be a positive number of MACs, got {budget!r}")
    if not callable(cost):
        raise TypeError(f"cost must be callable, got {cost!r}")
    return partial(_macs_at_most, budget=budget, cost=cost)


def describe(arch: dict) -> str:
    """A one-line summary of an ``mlp_space`` or ``cnn_space`` architecture's used genes, e.g.
    ``"same: 8c5 max, 8c3+skip avg; fc 32; relu"`` (channels ``c`` kernel, pooling) or
    ``"64, 64+skip; relu"`` (widths). Tested by
    ``tests/optim/nas/test_nas_build.py::test_describe_lists_the_used_blocks``."""
    blocks = []
    for i in range(arch["n_blocks"]):
        skip = "+skip" if i > 0 and arch[f"skip_{i}"] else ""
        if "kernel_0" in arch:
            pool = "" if arch[f"pool_{i}"] == "none" else f" {arch[f'pool_{i}']}"
            blocks.append(f"{arch[f'channels_{i}']}c{arch[f'kernel_{i}']}{skip}{pool}")
        else:
            blocks.append(f"{arch[f'width_{i}']}{skip}")
    if "kernel_0" in arch:
        return (f"{arch['padding']}: {', '.join(blocks)}; fc {arch['fc_width'] or 'none'}; "
                f"{arch['activation']}")
    return f"{', '.join(blocks)}; {arch['activation']}"
