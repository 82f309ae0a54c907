"""Gradient ops of the graph IR: the vector-Jacobian products reverse-mode AD emits as nodes.

Each op is a pure function on arrays (formula and test in its docstring), registered into the
shared op table ``optim.graph.ops.OPS`` so a graph holding backward nodes infers, runs and
costs them like any other node. Tests: ``tests/optim/graph/test_graph_training.py``.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from minnet.kernels import conv as MK
from minnet.kernels.conv_direct import conv_cost
from minnet.kernels.im2col import im2col
from optim.graph.grad_kernels import max_pool2d_grad_into
from optim.graph.ir import TensorType
from optim.graph.ops import _out_elements, _register

__all__ = ["relu_grad", "softmax_cross_entropy_grad", "linear_input_grad", "linear_weight_grad",
           "bias_grad", "conv2d_input_grad", "conv2d_weight_grad",
           "conv2d_input_grad_transposed", "conv2d_weight_grad_swapped", "conv_grad",
           "conv_grad_algorithms", "conv_grad_cost", "choose_conv_grad", "channel_bias_grad",
           "max_pool2d_grad", "softmax_cross_entropy", "GRADIENT_OPS"]


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


def conv2d_input_grad(dy: np.ndarray, weight: np.ndarray, input_shape: tuple, stride: tuple,
                      padding: tuple, dilation: tuple, groups: int) -> np.ndarray:
    """VJP of y = conv2d(x, W) in x: dx = col2im(Wᵀ G_y) per sample and group (the transposed
    convolution of dy by W, Dumoulin & Visin 2016 §4).

    Test: ``tests/optim/graph/test_graph_training.py::test_conv_and_pool_grads_equal_minnet_backward``.
    """
    return MK.conv2d_input_grad(dy, weight, tuple(input_shape), stride, padding, dilation, groups)


def conv2d_weight_grad(dy: np.ndarray, x: np.ndarray, kernel_size: tuple, stride: tuple,
                       padding: tuple, dilation: tuple, groups: int) -> np.ndarray:
    """VJP of y = conv2d(x, W) in W: dW = Σ_n G_y[n] X[n]ᵀ with X[n] = im2col(x[n]).

    Test: ``tests/optim/graph/test_graph_training.py::test_conv_and_pool_grads_equal_minnet_backward``.
    """
    cols = im2col(x, tuple(kernel_size), stride, padding, dilation)
    c_out = dy.shape[1]
    shape = (c_out, x.shape[1] // groups) + tuple(kernel_size)
    return MK.conv2d_weight_grad(dy, cols, shape, groups)


def conv2d_input_grad_transposed(dy: np.ndarray, weight: np.ndarray,
                                 padding: tuple) -> np.ndarray:
    """The same VJP in x for stride 1, dilation 1 and one group, as a forward convolution:
    dx = conv2d(dy, W̃, padding k - 1 - p) with W̃[c, o, i, j] = W[o, c, k_h-1-i, k_w-1-j]
    (the transpose of a unit-stride convolution is a unit-stride convolution of the flipped
    kernel with padding k - 1 - p: Dumoulin & Visin 2016, §4.1-4.2), so minnet's per-shape
    forward kernels (direct, indirect, im2col) run it.

    Test: ``tests/optim/graph/test_graph_training.py::test_conv_grad_algorithms_equal_the_reference``.
    """
    kh, kw = weight.shape[2:]
    flipped = np.ascontiguousarray(weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    return MK.conv2d_forward(dy, flipped, (1, 1), (kh - 1 - padding[0], kw - 1 - padding[1]),
                             (1, 1), 1)[0]


def conv2d_weight_grad_swapped(dy: np.ndarray, x: np.ndarray, padding: tuple) -> np.ndarray:
    """The same VJP in W for stride 1, dilation 1 and one group, as a forward convolution with
    batch and channels swapped: dW[o, c, i, j] = Σ_{n,u,v} dy[n, o, u, v] xpad[n, c, u+i, v+j]
    = conv2d(xᵀ, dyᵀ, padding p)[c, o, i, j], xᵀ = x as (C_in, N, H, W) and dyᵀ = dy as
    (C_out, N, H_out, W_out) (the output is k_h x k_w since H + 2p - H_out + 1 = k_h).

    Test: ``tests/optim/graph/test_graph_training.py::test_conv_grad_algorithms_equal_the_reference``.
    """
    x_t = np.ascontiguousarray(x.transpose(1, 0, 2, 3))
    dy_t = np.ascontiguousarray(dy.transpose(1, 0, 2, 3))
    return MK.conv2d_forward(x_t, dy_t, (1, 1), tuple(padding), (1, 1), 1)[0].transpose(1, 0, 2, 3)


# the column algorithm first (any geometry), then the one that runs a forward convolution
CONV_GRAD_ALGORITHMS = {"Conv2dInputGrad": ("col2im", "transposed"),
                        "Conv2dWeightGrad": ("im2col", "swapped")}


def conv_grad_algorithms(op: str, weight_shape: tuple, attrs: Mapping) -> list[str]:
    """The algorithms that compute this convolution gradient: the column one always; the
    forward-convolution one for stride 1, dilation 1, one group (and p <= k - 1 for x's)."""
    column, as_forward = CONV_GRAD_ALGORITHMS[op]
    stride, padding, dilation = _pairs(attrs, "stride", "padding", "dilation")
    unit = stride == (1, 1) and dilation == (1, 1) and attrs["groups"] == 1
    if op == "Conv2dInputGrad":
        unit = unit and all(p <= k - 1 for p, k in zip(padding, weight_shape[2:]))
    return [column, as_forward] if unit else [column]


def conv_grad_cost(op: str, algorithm: str, dy_shape: tuple, x_shape: tuple,
                   weight_shape: tuple, attrs: Mapping, dtype=np.float32) -> int:
    """Lane-multiply-adds of one gradient algorithm, by minnet's forward cost model
    (``minnet.kernels.conv_direct.conv_cost``): the column algorithms cost what im2col does on
    the forward shape (the same GEMM and column traffic); the forward-convolution ones cost the
    cheapest forward algorithm on their transformed shapes, plus the transposed copies."""
    stride, padding, dilation = _pairs(attrs, "stride", "padding", "dilation")
    if algorithm == CONV_GRAD_ALGORITHMS[op][0]:
        return conv_cost("im2col", x_shape, weight_shape, stride, padding, dilation,
                         attrs["groups"], dtype)
    n, c_out = dy_shape[:2]
    c_in, (kh, kw) = x_shape[1], weight_shape[2:]
    if op == "Conv2dInputGrad":
        shapes = (dy_shape, (c_in, c_out, kh, kw), (kh - 1 - padding[0], kw - 1 - padding[1]))
        moved = math.prod(weight_shape)
    else:
        shapes = ((c_in, n) + tuple(x_shape[2:]), (c_out, n) + tuple(dy_shape[2:]), padding)
        moved = 2 * (math.prod(x_shape) + math.prod(dy_shape))
    forward = MK.choose_algorithm(shapes[0], shapes[1], (1, 1), shapes[2], (1, 1), 1, dtype)
    return moved + conv_cost(forward, shapes[0], shapes[1], (1, 1), shapes[2], (1, 1), 1, dtype)


def choose_conv_grad(op: str, dy_shape: tuple, x_shape: tuple, weight_shape: tuple,
                     attrs: Mapping, dtype=np.float32) -> str:
    """The applicable gradient algorithm of least ``conv_grad_cost`` (ties: the column one)."""
    return min(conv_grad_algorithms(op, weight_shape, attrs),
               key=lambda a: conv_grad_cost(op, a, dy_shape, x_shape, weight_shape, attrs, dtype))


def conv_grad(op: str, algorithm: str, dy: np.ndarray, other: np.ndarray,
              attrs: Mapping) -> np.ndarray:
    """Run gradient node ``op`` (``other``: W for x's gradient, x for W's) by ``algorithm``."""
    if algorithm not in CONV_GRAD_ALGORITHMS[op]:
        raise ValueError(f"{op} has algorithms {CONV_GRAD_ALGORITHMS[op]}, got {algorithm!r}")
    if algorithm == "transposed":
        return conv2d_input_grad_transposed(dy, other, _pairs(attrs, "padding")[0])
    if algorithm == "swapped":
        return conv2d_weight_grad_swapped(dy, other, _pairs(attrs, "padding")[0])
    run = _conv_input_grad_run if op == "Conv2dInputGrad" else _conv_weight_grad_run
    return run([dy, other], attrs)


def channel_bias_grad(dy: np.ndarray) -> np.ndarray:
    """VJP of y = z + b (b broadcast along axis 1 of NCHW) in b: db_c = Σ_{n,h,w} dy_nchw.

    Test: ``tests/optim/graph/test_graph_training.py::test_conv_and_pool_grads_equal_minnet_backward``.
    """
    return dy.sum(axis=(0, 2, 3))


def max_pool2d_grad(dy: np.ndarray, x: np.ndarray, kernel_size: tuple, stride: tuple,
                    padding: tuple, relu: bool = False) -> np.ndarray:
    """VJP of max pooling: each dy goes to its window's first maximum of x (PyTorch's rule;
    the indices are recomputed from x rather than kept from the forward pass); with ``relu``
    also times 1[x > 0], the VJP of a ReLU whose output x is (fused into one pass).

    Test: ``tests/optim/graph/test_graph_training.py::test_conv_and_pool_grads_equal_minnet_backward``.
    """
    out = np.empty_like(x)
    max_pool2d_grad_into(dy, x, tuple(kernel_size), tuple(stride), tuple(padding), relu, out)
    return out


def softmax_cross_entropy(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The mean cross entropy L = (1/N) Σ_i (log Σ_c exp z_ic − z_{i t_i}) (log-sum-exp with
    the row maximum subtracted), a 0-d array of the logits' dtype.

    Test: ``tests/optim/graph/test_graph_training.py::test_softmax_cross_entropy_equals_minnet``.
    """
    if logits.ndim != 2 or target.shape != (logits.shape[0],):
        raise ValueError(f"logits (N, C) and target (N,) expected, got {logits.shape} and "
                         f"{target.shape}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    picked = shifted[np.arange(len(target)), target.astype(np.intp, copy=False)]
    return np.asarray((log_z - picked).mean(), dtype=logits.dtype)


def _pairs(attrs: Mapping, *names: str) -> list[tuple[int, int]]:
    return [tuple(attrs[n]) if isinstance(attrs[n], (tuple, list)) else (attrs[n], attrs[n])
            for n in names]


def _conv_input_grad_run(arrays, attrs: Mapping) -> np.ndarray:
    stride, padding, dilation = _pairs(attrs, "stride", "padding", "dilation")
    return conv2d_input_grad(arrays[0], arrays[1], attrs["input_shape"], stride, padding,
                             dilation, attrs["groups"])


def _conv_weight_grad_run(arrays, attrs: Mapping) -> np.ndarray:
    kernel, stride, padding, dilation = _pairs(attrs, "kernel_size", "stride", "padding",
                                               "dilation")
    return conv2d_weight_grad(arrays[0], arrays[1], kernel, stride, padding, dilation,
                              attrs["groups"])


def _max_pool_grad_run(arrays, attrs: Mapping) -> np.ndarray:
    kernel, stride, padding = _pairs(attrs, "kernel_size", "stride", "padding")
    return max_pool2d_grad(arrays[0], arrays[1], kernel, stride, padding,
                           attrs.get("relu", False))


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

def _conv_grad_work(types, out: TensorType, attrs: Mapping) -> int:
    """The forward convolution's multiply-adds: each dy element meets C_in/groups·k_h·k_w."""
    kernel = math.prod(attrs["kernel_size"]) if "kernel_size" in attrs else \
        math.prod(types[1].shape[2:])
    in_per_group = (out.shape[1] if "kernel_size" in attrs else types[1].shape[1])
    return types[0].size * in_per_group * kernel


_register("Conv2dInputGrad", (2, 2),
          lambda types, attrs: TensorType(tuple(attrs["input_shape"]), types[0].dtype),
          _conv_input_grad_run, _conv_grad_work, shape_attrs=("input_shape",))
_register("Conv2dWeightGrad", (2, 2),
          lambda types, attrs: TensorType(
              (types[0].shape[1], types[1].shape[1] // attrs["groups"])
              + tuple(attrs["kernel_size"]), types[0].dtype),
          _conv_weight_grad_run, _conv_grad_work)
_register("ChannelBiasGrad", (1, 1),
          lambda types, attrs: TensorType((types[0].shape[1],), types[0].dtype),
          lambda arrays, attrs: channel_bias_grad(arrays[0]),
          lambda types, out, attrs: types[0].size)
_register("MaxPool2dGrad", (2, 2), lambda types, attrs: types[1], _max_pool_grad_run,
          lambda types, out, attrs: types[0].size * math.prod(attrs["kernel_size"]))
_register("SoftmaxCrossEntropy", (2, 2), lambda types, attrs: TensorType((), types[0].dtype),
          lambda arrays, attrs: softmax_cross_entropy(arrays[0], arrays[1]),
          lambda types, out, attrs: types[0].size)

# the op-table names registered here (their own tests: test_graph_training.py)
GRADIENT_OPS = ("LinearInputGrad", "LinearWeightGrad", "BiasGrad", "ReluGrad",
                "SoftmaxCrossEntropyGrad", "Conv2dInputGrad", "Conv2dWeightGrad",
                "ChannelBiasGrad", "MaxPool2dGrad", "SoftmaxCrossEntropy")
