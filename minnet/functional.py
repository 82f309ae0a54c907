"""The public functional API (``minnet.functional as F``): validated wrappers around the ops.

Arguments may be Tensors, ndarrays or Python scalars; Python scalars take the dtype of the
tensor they meet, so float32 stays float32. Each function's formula and derivative are in the
docstring of the op class it applies (``minnet/ops``).
"""
from __future__ import annotations

import builtins
from typing import Any, Sequence

import numpy as np

from minnet.ops import elementwise as E
from minnet.ops import linalg as L
from minnet.ops import loss as Lo
from minnet.ops import norm as N
from minnet.ops import reduce as R
from minnet.ops import shape as S
from minnet.ops.conv import conv2d  # noqa: F401  (re-exported)
from minnet.ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d  # noqa: F401
from minnet.ops.resize import interpolate, resize  # noqa: F401
from minnet.random import get_rng
from minnet.tensor import Tensor, as_tensor

Operand = Any  # Tensor | np.ndarray | float | int

# ---- elementwise -------------------------------------------------------------------------


def _pair(a: Operand, b: Operand) -> tuple[Tensor, Tensor]:
    """Tensors for a binary op; a Python scalar takes the other operand's dtype."""
    if isinstance(a, (int, float)) and not isinstance(a, bool) and isinstance(b, Tensor):
        a = np.asarray(a, dtype=b.dtype if np.issubdtype(b.dtype, np.floating) else None)
    if isinstance(b, (int, float)) and not isinstance(b, bool) and isinstance(a, Tensor):
        b = np.asarray(b, dtype=a.dtype if np.issubdtype(a.dtype, np.floating) else None)
    return as_tensor(a), as_tensor(b)


def add(a: Operand, b: Operand) -> Tensor:
    return E.Add.apply(*_pair(a, b))


def sub(a: Operand, b: Operand) -> Tensor:
    return E.Sub.apply(*_pair(a, b))


def mul(a: Operand, b: Operand) -> Tensor:
    return E.Mul.apply(*_pair(a, b))


def div(a: Operand, b: Operand) -> Tensor:
    return E.Div.apply(*_pair(a, b))


def pow(a: Operand, b: Operand) -> Tensor:
    return E.Pow.apply(*_pair(a, b))


def maximum(a: Operand, b: Operand) -> Tensor:
    return E.Maximum.apply(*_pair(a, b))


def minimum(a: Operand, b: Operand) -> Tensor:
    return E.Minimum.apply(*_pair(a, b))


def where(condition: Operand, a: Operand, b: Operand) -> Tensor:
    """Elements of ``a`` where ``condition`` holds, else of ``b`` (no gradient to condition)."""
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    return E.Where.apply(cond, *_pair(a, b))


def neg(x: Operand) -> Tensor:
    return E.Neg.apply(x)


def exp(x: Operand) -> Tensor:
    return E.Exp.apply(x)


def log(x: Operand) -> Tensor:
    return E.Log.apply(x)


def sqrt(x: Operand) -> Tensor:
    return E.Sqrt.apply(x)


def abs(x: Operand) -> Tensor:
    return E.Abs.apply(x)


def clip(x: Operand, min: float | None = None, max: float | None = None) -> Tensor:
    """Clamp to [min, max]; either bound may be None (``torch.clamp``)."""
    if min is None and max is None:
        raise ValueError("clip needs at least one of min and max")
    if min is not None and max is not None and min > max:
        raise ValueError(f"clip min ({min}) must not exceed max ({max})")
    return E.Clip.apply(x, min=min, max=max)


def relu(x: Operand) -> Tensor:
    return E.ReLU.apply(x)


def leaky_relu(x: Operand, negative_slope: float = 0.01) -> Tensor:
    return E.LeakyReLU.apply(x, negative_slope=negative_slope)


def sigmoid(x: Operand) -> Tensor:
    return E.Sigmoid.apply(x)


def tanh(x: Operand) -> Tensor:
    return E.Tanh.apply(x)


def gelu(x: Operand) -> Tensor:
    return E.GELU.apply(x)


def _floating(name: str, x: Tensor) -> Tensor:
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    return x


def _finite_number(name: str, value: Any) -> float:
    if not isinstance(value, (int, float, np.number)) or isinstance(value, bool) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def erf(x: Operand) -> Tensor:
    """Gauss error function erf x = (2/sqrt(pi)) int_0^x e^(-t^2) dt (``torch.erf``, ONNX Erf).
    Tested in ``tests/minnet/ops/test_elementwise.py::test_erf_is_the_integral_of_the_gaussian_density``."""
    return E.Erf.apply(_floating("x", as_tensor(x)))


def hardsigmoid(x: Operand, alpha: float = 1 / 6, beta: float = 0.5) -> Tensor:
    """max(0, min(1, alpha x + beta)); PyTorch's ``hardsigmoid`` is alpha = 1/6, beta = 1/2,
    ONNX HardSigmoid defaults to alpha = 0.2, beta = 0.5. Tested in
    ``tests/minnet/ops/test_elementwise.py::test_hard_activation_derivatives_at_their_corners``."""
    alpha, beta = _finite_number("alpha", alpha), _finite_number("beta", beta)
    return E.HardSigmoid.apply(_floating("x", as_tensor(x)), alpha=alpha, beta=beta)


def hardswish(x: Operand) -> Tensor:
    """x hardsigmoid(x) = x min(1, max(0, x/6 + 1/2)) (``torch.nn.functional.hardswish``).
    Tested in ``tests/minnet/ops/test_elementwise.py::test_hardswish_is_x_times_hardsigmoid``."""
    return E.HardSwish.apply(_floating("x", as_tensor(x)))


# ---- reductions --------------------------------------------------------------------------


def sum(x: Operand, axis=None, keepdims: bool = False) -> Tensor:
    return R.Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x: Operand, axis=None, keepdims: bool = False) -> Tensor:
    return R.Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x: Operand, axis=None, keepdims: bool = False) -> Tensor:
    """Largest element over ``axis``; tied maxima share the gradient evenly."""
    return R.Max.apply(x, axis=axis, keepdims=keepdims)


def min(x: Operand, axis=None, keepdims: bool = False) -> Tensor:
    """Smallest element over ``axis``: -max(-x); tied minima share the gradient evenly."""
    return neg(max(neg(x), axis=axis, keepdims=keepdims))


def var(x: Operand, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance over ``axis`` with NumPy's ``ddof`` (0: biased, 1: unbiased)."""
    return R.Var.apply(x, axis=axis, keepdims=keepdims, ddof=ddof)


def softmax(x: Operand, axis: int = -1) -> Tensor:
    return R.Softmax.apply(x, axis=axis)


def log_softmax(x: Operand, axis: int = -1) -> Tensor:
    return R.LogSoftmax.apply(x, axis=axis)


# ---- movement ----------------------------------------------------------------------------


def _shape_args(args) -> tuple:
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)


def reshape(x: Operand, *shape) -> Tensor:
    """Reshape (``x.reshape(2, 3)`` or ``x.reshape((2, 3))``; one dimension may be -1)."""
    x = as_tensor(x)
    shape = _shape_args(shape)
    for size in shape:
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
            raise TypeError(f"reshape sizes must be ints, got {size!r} in shape {shape}")
        if size < -1:
            raise ValueError(f"reshape sizes must be >= -1 (-1: inferred), got {size} in shape {shape}")
    try:
        np.empty(x.shape, dtype=np.bool_).reshape(shape)
    except ValueError:
        raise ValueError(f"cannot reshape a tensor of shape {x.shape} into shape {shape}") from None
    return S.Reshape.apply(x, shape=shape)


def transpose(x: Operand, *axes) -> Tensor:
    """Permute axes (reverse them when none are given), as ``np.transpose``."""
    x = as_tensor(x)
    axes = _shape_args(axes) or tuple(reversed(range(x.ndim)))
    if sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
        raise ValueError(f"axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    return S.Transpose.apply(x, axes=tuple(a % x.ndim for a in axes))


permute = transpose


def flatten(x: Operand, start_axis: int = 0, end_axis: int = -1) -> Tensor:
    """Merge axes start_axis..end_axis into one (``torch.flatten``: a 0-d tensor counts as having
    one axis and becomes 1-d)."""
    x = as_tensor(x)
    axes = builtins.max(x.ndim, 1)
    for name, axis in (("start_axis", start_axis), ("end_axis", end_axis)):
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool) or not -axes <= axis < axes:
            raise ValueError(f"{name} {axis!r} is out of range for a tensor of shape {x.shape} "
                             f"(valid: {-axes} to {axes - 1})")
    start, end = start_axis % axes, end_axis % axes
    if start > end:
        raise ValueError(f"start_axis {start_axis} comes after end_axis {end_axis} for a tensor "
                         f"of shape {x.shape}")
    return reshape(x, x.shape[:start] + (-1,) + x.shape[end + 1:])


def getitem(x: Operand, index) -> Tensor:
    """``x[index]``: basic slicing and integer-array indexing; repeated indices accumulate."""
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return S.GetItem.apply(x, index=index)


def concatenate(tensors: Sequence[Operand], axis: int = 0) -> Tensor:
    if len(tensors) == 0:
        raise ValueError("concatenate needs at least one tensor")
    return S.Concatenate.apply(*tensors, axis=axis)


def stack(tensors: Sequence[Operand], axis: int = 0) -> Tensor:
    if len(tensors) == 0:
        raise ValueError("stack needs at least one tensor")
    return S.Stack.apply(*tensors, axis=axis)


def pad(x: Operand, pad_width, value: float = 0.0) -> Tensor:
    """Constant padding with NumPy's ``pad_width`` ((before, after) per axis, or one int)."""
    x = as_tensor(x)
    widths = np.broadcast_to(np.asarray(pad_width, dtype=int), (x.ndim, 2))
    if (widths < 0).any():
        raise ValueError(f"pad_width must be non-negative, got {pad_width}")
    return S.Pad.apply(x, pad_width=tuple(map(tuple, widths.tolist())), value=value)


# ---- linear algebra ----------------------------------------------------------------------


def matmul(a: Operand, b: Operand) -> Tensor:
    """Matrix product with NumPy's batch broadcasting and 1-D promotion rules."""
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs at least 1-D operands, got shapes {a.shape} and {b.shape}")
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != k_b:
        raise ValueError(f"matmul shape mismatch: a {a.shape} and b {b.shape} "
                         f"({a.shape[-1]} != {k_b})")
    return L.MatMul.apply(a, b)


def linear(x: Operand, weight: Operand, bias: Operand | None = None) -> Tensor:
    """y = x W^T + b with weight (out_features, in_features), as ``torch.nn.functional.linear``."""
    x, weight = as_tensor(x), as_tensor(weight)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x of shape {x.shape} does not match weight of shape {weight.shape}: "
                         f"last axis must be {weight.shape[1]}")
    if bias is not None and as_tensor(bias).shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {as_tensor(bias).shape}")
    return L.Linear.apply(x, weight, bias)


# ---- normalization and regularization ----------------------------------------------------


def batch_norm(x: Operand, running_mean: np.ndarray | None, running_var: np.ndarray | None,
               weight: Operand | None = None, bias: Operand | None = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization over axis 1 of (N, C), (N, C, L) or (N, C, H, W) inputs.

    When ``training``, batch statistics normalize and ``running_mean``/``running_var`` (ndarrays
    of shape (C,)) are updated in place; otherwise the running estimates normalize.
    """
    x = as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm expects x of shape (N, C, ...), got {x.shape}")
    channels = x.shape[1]
    for name, value in (("running_mean", running_mean), ("running_var", running_var)):
        if value is not None and (not isinstance(value, np.ndarray) or value.shape != (channels,)):
            raise ValueError(f"{name} must be an ndarray of shape ({channels},), got "
                             f"{getattr(value, 'shape', type(value).__name__)}")
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and as_tensor(value).shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},), got {as_tensor(value).shape}")
    if training and x.size // channels < 2:
        raise ValueError(f"batch_norm in training needs more than 1 value per channel, got x {x.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    return N.BatchNorm.apply(x, weight, bias, running_mean=running_mean, running_var=running_var,
                             training=training, momentum=momentum, eps=eps)


def layer_norm(x: Operand, normalized_shape: int | Sequence[int], weight: Operand | None = None,
               bias: Operand | None = None, eps: float = 1e-5) -> Tensor:
    """Layer normalization over the last len(normalized_shape) axes, as
    ``torch.nn.functional.layer_norm``: y = weight (x - mean) / sqrt(var + eps) + bias with the
    biased variance of each normalized group. Formula and gradients: ``minnet.ops.norm.LayerNorm``.
    Tested in ``tests/minnet/ops/test_norm.py::test_layer_norm_matches_torch``.
    """
    x = _floating("x", as_tensor(x))
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
    if (not isinstance(shape, (tuple, list)) or len(shape) == 0
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in shape)):
        raise TypeError(f"normalized_shape must be an int or a non-empty sequence of ints, got "
                        f"{normalized_shape!r}")
    shape = tuple(int(n) for n in shape)
    if x.shape[x.ndim - len(shape):] != shape or len(shape) > x.ndim:
        raise ValueError(f"normalized_shape {shape} must be the trailing shape of x, got x {x.shape}")
    if builtins.min(shape) < 1:
        raise ValueError(f"normalized_shape must be positive, got {shape}")
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and as_tensor(value).shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {as_tensor(value).shape}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    return N.LayerNorm.apply(x, weight, bias, normalized_shape=shape, eps=float(eps))


LRN_WINDOWS = ("pytorch", "onnx")


def local_response_norm(x: Operand, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0, *, window: str = "pytorch") -> Tensor:
    """Local response normalization across channels of (N, C, ...) (Krizhevsky et al. 2012 §3.3):
    b_c = a_c / (k + alpha/n sum_{c' in W(c)} a_{c'}^2)^beta with n = ``size``.

    W(c) holds ``size`` channels around c: ``window="pytorch"`` puts floor(size/2) before c
    (``torch.nn.functional.local_response_norm``), ``"onnx"`` puts floor((size-1)/2) before and
    ceil((size-1)/2) after (the ONNX LRN operator); they differ only for even sizes.
    Gradients: ``minnet.ops.norm.LocalResponseNorm``. Tested in
    ``tests/minnet/ops/test_norm.py::test_local_response_norm_is_the_formula``.
    """
    x = _floating("x", as_tensor(x))
    if x.ndim < 3:
        raise ValueError(f"local_response_norm expects x of shape (N, C, ...) with at least 3 "
                         f"dimensions, got {x.shape}")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if window not in LRN_WINDOWS:
        raise ValueError(f"window must be one of {LRN_WINDOWS}, got {window!r}")
    alpha, beta, k = (_finite_number(n, v) for n, v in (("alpha", alpha), ("beta", beta), ("k", k)))
    if not k > 0:
        raise ValueError(f"k must be positive (it keeps the divisor away from 0), got {k}")
    before = int(size) // 2 if window == "pytorch" else (int(size) - 1) // 2
    return N.LocalResponseNorm.apply(x, size=int(size), alpha=alpha, beta=beta, k=k, before=before)


def dropout(x: Operand, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p); identity when not
    training. Randomness comes from ``minnet.random`` (seeded by ``minnet.manual_seed``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1], got {p}")
    x = as_tensor(x)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return mul(x, 0.0)
    return N.Dropout.apply(x, p=p, rng=get_rng())


# ---- losses ------------------------------------------------------------------------------

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str, allowed: tuple[str, ...] = _REDUCTIONS) -> Tensor:
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    if reduction == "batchmean":
        return div(sum(loss), loss.shape[0])
    return loss


def _class_targets(target: Operand, n: int, n_classes: int) -> np.ndarray:
    target = target.data if isinstance(target, Tensor) else np.asarray(target)
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.shape != (n,):
        raise ValueError(f"target must have shape ({n},), got {target.shape}")
    if n and (target.min() < 0 or target.max() >= n_classes):
        raise ValueError(f"target values must be in [0, {n_classes}), got range "
                         f"[{target.min()}, {target.max()}]")
    return target.astype(np.intp, copy=False)


def cross_entropy(logits: Operand, target: Operand, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross entropy of logits (N, C) against class indices (N,), fused and stable.

    l_i = -sum_c q_ic log softmax(x_i)_c with q = (1 - eps) onehot + eps / C (PyTorch's
    ``label_smoothing``). Tested against ``nll_loss(log_softmax(x))`` in
    ``tests/minnet/ops/test_loss.py``.
    """
    logits = as_tensor(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, C), got shape {logits.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    t = _class_targets(target, logits.shape[0], logits.shape[1])
    losses = Lo.CrossEntropy.apply(logits, target=t, label_smoothing=label_smoothing)
    return _reduce(losses, reduction)


def nll_loss(log_probs: Operand, target: Operand, reduction: str = "mean") -> Tensor:
    """l_i = -log_probs[i, target_i] (``torch.nn.functional.nll_loss``)."""
    log_probs = as_tensor(log_probs)
    if log_probs.ndim != 2:
        raise ValueError(f"log_probs must be 2-D (N, C), got shape {log_probs.shape}")
    t = _class_targets(target, log_probs.shape[0], log_probs.shape[1])
    return _reduce(neg(getitem(log_probs, (np.arange(len(t)), t))), reduction)


def _same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} of shape {a.shape} and {name_b} of shape {b.shape} differ")


def mse_loss(input: Operand, target: Operand, reduction: str = "mean") -> Tensor:
    """l = (input - target)^2 elementwise, then reduced."""
    input, target = _pair(input, target)
    _same_shape("input", input, "target", target)
    diff = sub(input, target)
    return _reduce(mul(diff, diff), reduction)


def kl_div(input: Operand, target: Operand, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """Pointwise KL term t (log t - input), input given as log-probabilities
    (``torch.nn.functional.kl_div``; 0 where t = 0). ``reduction="batchmean"`` divides the sum by
    the batch size and is the mathematical KL divergence per sample."""
    input, target = _pair(input, target)
    _same_shape("input", input, "target", target)
    if log_target:
        pointwise = mul(exp(target), sub(target, input))
    else:
        positive = target.data > 0
        safe_log = log(where(positive, target, 1.0))
        pointwise = where(positive, mul(target, sub(safe_log, input)), 0.0)
    return _reduce(pointwise, reduction, _REDUCTIONS + ("batchmean",))


def binary_cross_entropy_with_logits(input: Operand, target: Operand,
                                     reduction: str = "mean") -> Tensor:
    """l = -y log sigmoid(x) - (1 - y) log(1 - sigmoid(x)), in the stable fused form."""
    input, target = _pair(input, target)
    _same_shape("input", input, "target", target)
    return _reduce(Lo.BCEWithLogits.apply(input, target), reduction)
