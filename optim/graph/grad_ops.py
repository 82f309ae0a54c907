"""Gradient ops of the graph IR: the vector-Jacobian products reverse-mode AD emits as nodes.

Each op is a pure function on arrays (formula and test in its docstring), registered into the
shared op table ``optim.graph.ops.OPS`` so a graph holding backward nodes infers, runs and
costs them like any other node. Tests: ``tests/optim/graph/test_graph_training.py``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from optim.graph.ir import TensorType
from optim.graph.ops import _out_elements, _register

__all__ = ["relu_grad", "softmax_cross_entropy_grad"]


def relu_grad(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """VJP of z = max(x, 0): dx = dy ⊙ 1[x > 0] (0 at x = 0, as PyTorch).

    Test: ``tests/optim/graph/test_graph_training.py::test_relu_grad_equals_minnet_backward``.
    """
    if dy.shape != x.shape:
        raise ValueError(f"dy of shape {dy.shape} and x of shape {x.shape} differ")
    return np.where(x > 0, dy, np.zeros((), dy.dtype))


def softmax_cross_entropy_grad(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Gradient of the mean cross entropy L = -(1/N) Σ_i log softmax(z_i)_{t_i} in the logits:
    ∂L/∂z_ic = (softmax(z_i)_c - 1[c = t_i]) / N (Goodfellow, Bengio & Courville 2016,
    §6.2.2.3).

    Test: ``tests/optim/graph/test_graph_training.py::``
    ``test_softmax_cross_entropy_grad_equals_minnet_backward``.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, C), got shape {logits.shape}")
    if target.shape != (logits.shape[0],):
        raise ValueError(f"target must have shape ({logits.shape[0]},), got {target.shape}")
    n, c = logits.shape
    if n and (target.min() < 0 or target.max() >= c):
        raise ValueError(f"target values must be in [0, {c}), got range "
                         f"[{target.min()}, {target.max()}]")
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(n), target.astype(np.intp, copy=False)] -= 1
    return (p / max(n, 1)).astype(logits.dtype, copy=False)


_register("ReluGrad", (2, 2), lambda types, attrs: types[0],
          lambda arrays, attrs: relu_grad(arrays[0], arrays[1]), _out_elements,
          kind="elementwise")
_register("SoftmaxCrossEntropyGrad", (2, 2), lambda types, attrs: types[0],
          lambda arrays, attrs: softmax_cross_entropy_grad(arrays[0], arrays[1]), _out_elements)
