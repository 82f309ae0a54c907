"""Weight initialisation, in place on Parameters, drawing from ``minnet.random``.

PyTorch's default for Linear and Conv2d is ``kaiming_uniform_(w, a=sqrt(5))``:
bound = gain sqrt(3 / fan_in) with gain = sqrt(2 / (1 + a^2)), which is 1/sqrt(fan_in) for
a = sqrt(5) (He et al. 2015, eq. 10, as in ``torch.nn.init``); the bias is uniform in
±1/sqrt(fan_in). Tested by ``tests/minnet/nn/test_init.py``.
"""
from __future__ import annotations

import math

import numpy as np

from minnet.random import get_rng
from minnet.tensor import Tensor


def fan_in_and_fan_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field."""
    if len(shape) < 2:
        raise ValueError(f"fan in/out need a tensor with at least 2 dimensions, got shape {shape}")
    receptive = int(np.prod(shape[2:], dtype=np.int64))
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Recommended gain: 1 for linear/sigmoid, 5/3 for tanh, sqrt(2) for relu,
    sqrt(2 / (1 + a^2)) for leaky_relu with slope a (``torch.nn.init.calculate_gain``)."""
    if nonlinearity in ("linear", "conv2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def uniform_(t: Tensor, low: float = 0.0, high: float = 1.0) -> Tensor:
    t.data[...] = get_rng().uniform(low, high, size=t.shape)
    return t


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    t.data[...] = get_rng().normal(mean, std, size=t.shape)
    return t


def zeros_(t: Tensor) -> Tensor:
    t.data[...] = 0
    return t


def ones_(t: Tensor) -> Tensor:
    t.data[...] = 1
    return t


def kaiming_uniform_(t: Tensor, a: float = 0.0, nonlinearity: str = "leaky_relu") -> Tensor:
    """U(-b, b) with b = gain sqrt(3 / fan_in)."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan_in_and_fan_out(t.shape)[0])
    return uniform_(t, -bound, bound)


def kaiming_normal_(t: Tensor, a: float = 0.0, nonlinearity: str = "leaky_relu") -> Tensor:
    """N(0, std^2) with std = gain / sqrt(fan_in)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan_in_and_fan_out(t.shape)[0])
    return normal_(t, 0.0, std)


def xavier_uniform_(t: Tensor, gain: float = 1.0) -> Tensor:
    """U(-b, b) with b = gain sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    fan_in, fan_out = fan_in_and_fan_out(t.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def default_init_(weight: Tensor, bias: Tensor | None) -> None:
    """PyTorch's Linear/Conv2d reset_parameters: kaiming_uniform_(a=sqrt(5)), bias ±1/sqrt(fan_in)."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(fan_in_and_fan_out(weight.shape)[0])
        uniform_(bias, -bound, bound)
