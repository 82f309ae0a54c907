r"""Fake quantization as differentiable minnet ops: the clipped straight-through estimator
(STE) and learned step size quantization (LSQ).

Rounding has zero derivative almost everywhere, so quantization-aware training replaces
:math:`\partial \operatorname{round}(u) / \partial u` by 1 in the backward pass (Bengio,
Léonard & Courville 2013, "Estimating or Propagating Gradients Through Stochastic Neurons")
and keeps the clamp's true derivative, 0 where it saturates. The pure functions below state
the forward values and gradients; ``FakeQuantizeSTE`` and ``LSQQuantize`` wrap them as
``Function`` s.
"""
from __future__ import annotations

import math

import numpy as np

from minnet.tensor import Function, Tensor, as_tensor

from ._checks import as_float_array, channel_param, check_qrange, n_channels
from .affine import _prepare, _rounded_steps, fake_quantize


def ste_mask(
    x: object, scale: object, zero_point: object, qmin: int, qmax: int, axis: int | None = None
) -> np.ndarray:
    r"""Where the clipped STE passes the gradient: the codes that the clamp leaves alone,

    .. math:: m = [\, q_{min} \le \operatorname{round}(x/s) + z \le q_{max} \,]

    so :math:`\partial L / \partial x = m \cdot \partial L / \partial \hat x` for
    :math:`\hat x = \operatorname{fake\_quantize}(x)`. The test is on the rounded code (the
    clamp acts after rounding), as in ``torch.fake_quantize_per_tensor_affine``'s backward; it
    passes the gradient up to half a step beyond the representable interval.
    Arguments as ``quantize``.

    Source: Jacob et al. 2018, section 3 (simulated quantization); PyTorch's
    ``fake_quantize_per_tensor_affine`` backward.
    Checked by ``tests/optim/quant/test_quant_ste.py::test_ste_gradient_is_in_range_indicator``.

    >>> ste_mask(np.array([-1.6, -1.4, 0.0, 7.4, 7.6]), 1.0, 0, -1, 7)
    array([False,  True,  True,  True, False])
    """
    x, scale, zero_point, qmin, qmax = _prepare(x, scale, zero_point, qmin, qmax, axis)
    codes = _rounded_steps(x, scale, zero_point, qmin, qmax, "half_even", None)
    codes = codes + zero_point.astype(x.dtype)
    return (codes >= qmin) & (codes <= qmax)


class FakeQuantizeSTE(Function):
    r""":math:`\hat x = \operatorname{fake\_quantize}(x; s, z)` with frozen ``scale`` /
    ``zero_point``; :math:`\partial \hat x / \partial x = \operatorname{ste\_mask}(x)`."""

    @staticmethod
    def forward(ctx, x, *, scale, zero_point, qmin, qmax, axis):
        ctx.save_for_backward(ste_mask(x, scale, zero_point, qmin, qmax, axis))
        return fake_quantize(x, scale, zero_point, qmin, qmax, axis)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask


def fake_quantize_ste(
    x: object, scale: object, zero_point: object, qmin: int, qmax: int, axis: int | None = None
) -> Tensor:
    r"""``fake_quantize`` on a Tensor, differentiable in ``x`` by the clipped STE
    (``ste_mask``); ``scale`` and ``zero_point`` are constants.

    Checked by ``tests/optim/quant/test_quant_ste.py::test_ste_gradient_is_in_range_indicator``
    and ``::test_fake_quantize_ste_matches_torch``.
    """
    return FakeQuantizeSTE.apply(as_tensor(x), scale=scale, zero_point=zero_point, qmin=qmin,
                                 qmax=qmax, axis=axis)


# ---- learned step size (LSQ) ------------------------------------------------------------


def _lsq_prepare(v, step, qmin, qmax, axis):
    v = as_float_array(v, "v")
    qmin, qmax = check_qrange(qmin, qmax)
    if not qmin <= 0 < qmax:
        raise ValueError(f"LSQ needs qmin <= 0 < qmax (0 representable), got [{qmin}, {qmax}]")
    axis, channels = n_channels(v, axis)
    s = channel_param(step, "step", v.ndim, axis, channels).astype(v.dtype)
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"step must be positive and finite, got {s.ravel()[:8]}")
    return v, s, qmin, qmax, axis


def lsq_quantize(
    v: object, step: object, qmin: int, qmax: int, axis: int | None = None
) -> np.ndarray:
    r"""LSQ's quantizer with step size :math:`s`, :math:`Q_N = -q_{min}`, :math:`Q_P = q_{max}`:

    .. math::
        \bar v = \operatorname{round}(\operatorname{clip}(v/s,\ -Q_N,\ Q_P)), \qquad
        \hat v = \bar v\, s

    (round half to even). Equal to ``fake_quantize(v, s, 0, qmin, qmax)`` since the clip
    bounds are integers. ``step`` is a scalar, or shape ``(C,)`` with ``axis``.

    Source: Esser et al. 2020, "Learned Step Size Quantization" (ICLR), eq. (1)-(2).
    Checked by ``tests/optim/quant/test_quant_ste.py::test_lsq_equals_symmetric_fake_quantize``.
    """
    v, s, qmin, qmax, _ = _lsq_prepare(v, step, qmin, qmax, axis)
    return np.rint(np.clip(v / s, qmin, qmax)) * s


def lsq_gradients(
    grad: object,
    v: object,
    step: object,
    qmin: int,
    qmax: int,
    grad_scale: float = 1.0,
    axis: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Backward of ``lsq_quantize``: the gradients with respect to :math:`v` and :math:`s`.

    .. math::
        \frac{\partial \hat v}{\partial v} = [-Q_N < v/s < Q_P], \qquad
        \frac{\partial \hat v}{\partial s} = \begin{cases}
            -v/s + \operatorname{round}(v/s) & -Q_N < v/s < Q_P \\
            -Q_N & v/s \le -Q_N \\
            Q_P & v/s \ge Q_P
        \end{cases}

        \frac{\partial L}{\partial s} = g \sum_i \frac{\partial L}{\partial \hat v_i}
            \frac{\partial \hat v_i}{\partial s}

    with the gradient scale :math:`g` (``lsq_grad_scale``); the sum runs over the tensor, or
    over all axes but ``axis`` for per-channel steps. In the clipped regions this is the
    exact derivative of :math:`\hat v = \pm Q\, s`; inside, it is the exact derivative
    :math:`\operatorname{round}(v/s)` of :math:`\hat v = s \operatorname{round}(v/s)` between
    rounding jumps plus the STE term :math:`s\, \partial(v/s)/\partial s = -v/s`. The range
    test is on :math:`v/s` before rounding (LSQ clips, then rounds), unlike ``ste_mask``.

    Returns ``(grad_v, grad_step)`` with the shapes of ``v`` and ``step``.

    Source: Esser et al. 2020, eq. (3) and section 2.2 (step size gradient scale).
    Checked by
    ``tests/optim/quant/test_quant_ste.py::test_lsq_step_gradient_matches_finite_differences``
    and ``::test_lsq_matches_torch_learnable_fake_quantize``.
    """
    v, s, qmin, qmax, axis = _lsq_prepare(v, step, qmin, qmax, axis)
    g = np.asarray(grad, dtype=v.dtype)
    if g.shape != v.shape:
        raise ValueError(f"grad must have v's shape {v.shape}, got {g.shape}")
    u = v / s
    inside = (u > qmin) & (u < qmax)
    d_step = np.where(inside, np.rint(u) - u, np.where(u <= qmin, qmin, qmax))
    reduce = tuple(range(v.ndim)) if axis is None else tuple(a for a in range(v.ndim) if a != axis)
    grad_step = (grad_scale * np.sum(g * d_step, axis=reduce)).astype(v.dtype)
    return g * inside, grad_step.reshape(np.shape(step))


def lsq_grad_scale(n: int, qmax: int) -> float:
    r"""LSQ's step-size gradient scale :math:`g = 1 / \sqrt{N Q_P}`, with :math:`N` the number
    of weights of the layer (per channel for per-channel steps) or of features of one sample
    for activations. It keeps the step's update in proportion to the weights' updates.

    Source: Esser et al. 2020, section 2.2.
    Checked by ``tests/optim/quant/test_quant_ste.py::test_lsq_grad_scale_scales_step_gradient``.

    >>> lsq_grad_scale(100, 1)
    0.1
    """
    if n < 1 or qmax < 1:
        raise ValueError(f"n and qmax must be >= 1, got n={n}, qmax={qmax}")
    return 1.0 / math.sqrt(n * qmax)


def lsq_initial_step(v: object, qmax: int, axis: int | None = None) -> np.ndarray:
    r"""LSQ's initial step size :math:`s_0 = 2 \langle |v| \rangle / \sqrt{Q_P}` (mean over the
    tensor, or per channel along ``axis``), floored at float32's smallest normal number so
    that an all-zero input still gives a valid step.

    Source: Esser et al. 2020, section 2.1.
    Checked by ``tests/optim/quant/test_quant_ste.py::test_lsq_initial_step``.
    """
    v = as_float_array(v, "v")
    if qmax < 1:
        raise ValueError(f"qmax must be >= 1, got {qmax}")
    axis, _ = n_channels(v, axis)
    reduce = None if axis is None else tuple(a for a in range(v.ndim) if a != axis)
    step = 2 * np.mean(np.abs(v), axis=reduce) / np.sqrt(qmax)
    return np.maximum(step, np.finfo(np.float32).tiny).astype(v.dtype)


class LSQQuantize(Function):
    r""":math:`\hat v = \operatorname{lsq\_quantize}(v; s)`, differentiable in :math:`v` and the
    step :math:`s` (``lsq_gradients``)."""

    @staticmethod
    def forward(ctx, v, step, *, qmin, qmax, grad_scale, axis):
        ctx.save_for_backward(v, step)
        ctx.attrs = (qmin, qmax, grad_scale, axis)
        return lsq_quantize(v, step, qmin, qmax, axis)

    @staticmethod
    def backward(ctx, grad):
        v, step = ctx.saved_tensors
        return lsq_gradients(grad, v, step, *ctx.attrs)


def lsq_fake_quantize(
    v: object, step: object, qmin: int, qmax: int, grad_scale: float = 1.0,
    axis: int | None = None,
) -> Tensor:
    """``lsq_quantize`` on Tensors, differentiable in ``v`` and ``step`` (``lsq_gradients``).

    Checked by
    ``tests/optim/quant/test_quant_ste.py::test_lsq_step_gradient_matches_finite_differences``.
    """
    return LSQQuantize.apply(as_tensor(v), as_tensor(step), qmin=qmin, qmax=qmax,
                             grad_scale=grad_scale, axis=axis)


# ---- straight-through substitution -------------------------------------------------------


class StraightThrough(Function):
    r""":math:`y = v` (precomputed quantized values) with
    :math:`\partial L / \partial x = m \cdot \partial L / \partial y` (a precomputed mask)."""

    @staticmethod
    def forward(ctx, x, *, values, mask):
        ctx.save_for_backward(mask)
        return values

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask


def straight_through(x: object, values: np.ndarray, mask: np.ndarray | None = None) -> Tensor:
    r"""A Tensor whose value is ``values`` (the quantized ``x``) and whose gradient with respect
    to ``x`` is :math:`m \odot g` (the identity STE when ``mask`` is None): the one mechanism
    by which binary, ternary and DoReFa quantizers substitute a surrogate derivative for the
    zero derivative of a step function.

    Source: Bengio, Léonard & Courville 2013 (straight-through estimator).
    Checked by ``tests/optim/quant/test_quant_binary_qat.py::test_binary_connect_gradient_is_clipped_ste``.
    """
    x = as_tensor(x)
    values = np.asarray(values, dtype=x.dtype)
    if values.shape != x.shape:
        raise ValueError(f"values must have x's shape {x.shape}, got {values.shape}")
    mask = np.ones(x.shape, dtype=bool) if mask is None else np.asarray(mask)
    if mask.shape != x.shape:
        raise ValueError(f"mask must have x's shape {x.shape}, got {mask.shape}")
    return StraightThrough.apply(x, values=values, mask=mask)
