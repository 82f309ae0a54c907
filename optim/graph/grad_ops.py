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

__all__ = ["relu_grad", "softmax_cross_entropy_grad", "linear_input_grad", "linear_weight_grad",
           "bias_grad", "GRADIENT_OPS"]


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


def _last_axis(name: str, a: np.ndarray, n: int, what: str) -> None:
    if a.ndim < 1 or a.shape[-1] != n:
        raise ValueError(f"{name} must end in {what} = {n}, got shape {a.shape}")


def linear_input_grad(dy: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """VJP of y = x Wᵀ + b in x: dx = dy W, with dy (..., out) and W (out, in).

    Test: ``tests/optim/graph/test_graph_training.py::test_linear_grads_equal_minnet_backward``.
    """
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {weight.shape}")
    _last_axis("dy", dy, weight.shape[0], "out")
    return dy @ weight


def linear_weight_grad(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """VJP of y = x Wᵀ + b in W: dW = Σ_n dy_nᵀ x_n over every leading axis of dy (..., out)
    and x (..., in): dW = dy₂ᵀ x₂ with both flattened to 2-D.

    Test: ``tests/optim/graph/test_graph_training.py::test_linear_grads_equal_minnet_backward``.
    """
    if dy.shape[:-1] != x.shape[:-1] or dy.ndim < 1:
        raise ValueError(f"dy of shape {dy.shape} and x of shape {x.shape} must share their "
                         f"leading axes")
    return dy.reshape(-1, dy.shape[-1]).T @ x.reshape(-1, x.shape[-1])


def bias_grad(dy: np.ndarray) -> np.ndarray:
    """VJP of y = z + b (b broadcast along the last axis) in b: db = Σ over leading axes of dy.

    Test: ``tests/optim/graph/test_graph_training.py::test_linear_grads_equal_minnet_backward``.
    """
    if dy.ndim < 1:
        raise ValueError(f"dy must have at least one axis, got shape {dy.shape}")
    return dy.reshape(-1, dy.shape[-1]).sum(axis=0)


def _linear_input_type(types, attrs: Mapping) -> TensorType:
    dy, weight = types
    return TensorType(tuple(dy.shape[:-1]) + (weight.shape[1],), dy.dtype)


def _linear_weight_type(types, attrs: Mapping) -> TensorType:
    dy, x = types
    return TensorType((dy.shape[-1], x.shape[-1]), dy.dtype)


def _input_grad_work(types, out: TensorType, attrs: Mapping) -> int:
    return out.size * types[0].shape[-1]  # multiply-adds: each dx element sums over out


def _weight_grad_work(types, out: TensorType, attrs: Mapping) -> int:
    return types[0].size * types[1].shape[-1]  # each dy element meets each input feature


_register("LinearInputGrad", (2, 2), _linear_input_type,
          lambda arrays, attrs: linear_input_grad(arrays[0], arrays[1]), _input_grad_work)
_register("LinearWeightGrad", (2, 2), _linear_weight_type,
          lambda arrays, attrs: linear_weight_grad(arrays[0], arrays[1]), _weight_grad_work)
_register("BiasGrad", (1, 1),
          lambda types, attrs: TensorType((types[0].shape[-1],), types[0].dtype),
          lambda arrays, attrs: bias_grad(arrays[0]), lambda types, out, attrs: types[0].size)
_register("ReluGrad", (2, 2), lambda types, attrs: types[0],
          lambda arrays, attrs: relu_grad(arrays[0], arrays[1]), _out_elements,
          kind="elementwise")
_register("SoftmaxCrossEntropyGrad", (2, 2), lambda types, attrs: types[0],
          lambda arrays, attrs: softmax_cross_entropy_grad(arrays[0], arrays[1]), _out_elements)

# the op-table names registered here (their own tests: test_graph_training.py)
GRADIENT_OPS = ("LinearInputGrad", "LinearWeightGrad", "BiasGrad", "ReluGrad",
                "SoftmaxCrossEntropyGrad")
