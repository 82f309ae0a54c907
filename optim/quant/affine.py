r"""Uniform affine quantization: scale/zero-point, quantize, dequantize, fake-quantize.

Conventions follow ``torch.ao.quantization`` (``observer.py``'s ``_calculate_qparams`` and
``torch.fake_quantize_per_tensor_affine`` / ``_per_channel_affine``):

.. math::
    q = \operatorname{clamp}(\operatorname{round}(x / s) + z,\ q_{min},\ q_{max}), \qquad
    \hat x = (q - z)\, s

Where ONNX Runtime (``quantization/quant_utils.py::compute_scale_zp``) differs:

* symmetric int8: ORT uses the narrow range -127..127, so :math:`s = \max|x| / 127`; PyTorch
  keeps -128..127 and divides by :math:`(q_{max}-q_{min})/2 = 127.5`. Both come out of
  ``qparams(..., symmetric=True)`` by passing the range (``int_range(8, restricted=True)``
  gives ORT's);
* a zero range: ORT returns :math:`s = 1, z = 0`; PyTorch (and this module) clamps the scale
  to ``eps`` and keeps :math:`z = q_{min} - \operatorname{round}(r_{min}/s)`;
* zero point: both round half to even, ORT as :math:`\operatorname{round}(q_{min} - r_{min}/s)`,
  PyTorch as :math:`q_{min} - \operatorname{round}(r_{min}/s)`, equal because half-to-even
  rounding is odd-symmetric. TFLite's "nudged" zero point is the same grid.

PyTorch's kernels multiply by the float32 reciprocal :math:`1/s` where this module divides by
:math:`s`; the two can differ by one step only when :math:`x/s` lies within a rounding error of
a .5 tie.
"""
from __future__ import annotations

import numpy as np

from ._checks import (
    as_float_array,
    channel_param,
    check_finite,
    check_qrange,
    check_scale,
    check_zero_point,
    n_channels,
)
from .ranges import quant_dtype
from .rounding import round_values

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def qparams(
    x_min: object,
    x_max: object,
    qmin: int,
    qmax: int,
    symmetric: bool = False,
    *,
    eps: float = FLOAT32_EPS,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Scale and zero point mapping the range ``[x_min, x_max]`` onto ``[qmin, qmax]``.

    The range is first extended to contain 0, so 0.0 is exactly representable:
    :math:`r_{min} = \min(x_{min}, 0)`, :math:`r_{max} = \max(x_{max}, 0)`.

    .. math::
        \text{affine:}\quad
        s = \max\Big(\frac{r_{max} - r_{min}}{q_{max} - q_{min}},\ \epsilon\Big), \quad
        z = \operatorname{clamp}(q_{min} - \operatorname{round}(r_{min}/s),\ q_{min},\ q_{max})

        \text{symmetric:}\quad
        s = \max\Big(\frac{\max(-r_{min}, r_{max})}{(q_{max} - q_{min})/2},\ \epsilon\Big), \quad
        z = \begin{cases}
            0 & q_{min} < 0 \\
            \lceil (q_{min} + q_{max})/2 \rceil & q_{min} \ge 0
        \end{cases}

    ``round`` is half to even. ``x_min == x_max == 0`` gives :math:`s = \epsilon` (float32's
    machine epsilon, as PyTorch). For unsigned symmetric ranges the zero point is the upper
    midpoint: 128 for 0..255 and 2^15 for 0..65535, as PyTorch's defaults and ONNX Runtime;
    PyTorch's custom ranges use the lower midpoint instead.

    Scalars give scalars; arrays of per-channel minima/maxima give arrays. The scale has the
    inputs' floating dtype (float32 for Python floats), the zero point is int64.

    Source: ``torch.ao.quantization.observer.UniformQuantizationObserverBase._calculate_qparams``;
    Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", section 2.1 (zero exactly representable).
    Checked by ``tests/optim/quant/test_quant_affine.py::test_qparams_zero_exact_and_range_covered``
    and ``tests/optim/quant/test_quant_torch.py::test_qparams_match_torch_minmax_observer``.

    >>> qparams(-1.0, 3.0, 0, 255)
    (np.float32(0.015686275), np.int64(64))
    """
    qmin, qmax = check_qrange(qmin, qmax)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be positive and finite, got {eps}")
    dtype = np.result_type(x_min, x_max, np.float32)
    if dtype.kind != "f":
        raise TypeError(f"x_min and x_max must be real numbers, got dtype {dtype}")
    lo, hi = np.asarray(x_min, dtype=dtype), np.asarray(x_max, dtype=dtype)
    if lo.shape != hi.shape:
        raise ValueError(f"x_min and x_max must have the same shape, got {lo.shape} and {hi.shape}")
    check_finite(lo, "x_min")
    check_finite(hi, "x_max")
    if np.any(lo > hi):
        raise ValueError(
            f"x_min must be <= x_max, got x_min={lo.ravel()[:8]}, x_max={hi.ravel()[:8]}"
        )
    lo, hi = np.minimum(lo, dtype.type(0)), np.maximum(hi, dtype.type(0))
    if symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / dtype.type((qmax - qmin) / 2), dtype.type(eps))
        zero_point = np.full(lo.shape, 0 if qmin < 0 else (qmin + qmax + 1) // 2, dtype=np.int64)
    else:
        scale = np.maximum((hi - lo) / dtype.type(qmax - qmin), dtype.type(eps))
        zero_point = np.clip(qmin - np.rint(lo / scale).astype(np.int64), qmin, qmax)
    return scale[()], zero_point[()]


def _prepare(x, scale, zero_point, qmin, qmax, axis):
    """Validated ``x`` (floating), broadcastable scale (x's dtype) and int64 zero point."""
    x = as_float_array(x)
    qmin, qmax = check_qrange(qmin, qmax)
    axis, channels = n_channels(x, axis)
    scale = channel_param(scale, "scale", x.ndim, axis, channels).astype(x.dtype)
    check_scale(scale)
    zero_point = channel_param(zero_point, "zero_point", x.ndim, axis, channels)
    zero_point = check_zero_point(zero_point, qmin, qmax)
    if np.any(np.isnan(x)):
        raise ValueError("x must not contain NaN")
    return x, scale, zero_point, qmin, qmax


def _rounded_steps(x, scale, zero_point, qmin, qmax, rounding, rng) -> np.ndarray:
    """round(x / s) in x's dtype; x / s is first clipped to one step beyond the range, which
    keeps +-Inf and huge values finite without changing the clamped result."""
    low, high = (qmin - zero_point - 1).astype(x.dtype), (qmax - zero_point + 1).astype(x.dtype)
    v = np.clip(x / scale, low, high)
    return round_values(v, rounding, rng)


def quantize(
    x: object,
    scale: object,
    zero_point: object,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    *,
    rounding: str = "half_even",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    r"""Integer codes
    :math:`q = \operatorname{clamp}(\operatorname{round}(x/s) + z,\ q_{min},\ q_{max})`.

    ``axis=None`` is per-tensor (scalar ``scale``/``zero_point``); ``axis=k`` is per-channel
    with ``scale``/``zero_point`` of shape ``(x.shape[k],)``. The result has the narrowest
    dtype holding ``[qmin, qmax]`` (``quant_dtype``). ``rounding`` is one of
    ``round_values``' modes (default half to even, as ``torch.quantize_per_tensor``);
    ``rng`` seeds stochastic rounding. +-Inf saturate to ``qmin``/``qmax``; NaN is rejected.

    Source: Jacob et al. 2018, eq. (1) solved for q; ``torch.quantize_per_tensor`` /
    ``torch.quantize_per_channel``.
    Checked by ``tests/optim/quant/test_quant_affine.py::test_quantize_in_range_and_fits_dtype``
    and ``::test_per_channel_equals_per_tensor_on_each_slice``.

    >>> quantize(np.array([-1.0, 0.0, 0.26, 9.0]), 0.5, 2, 0, 15)
    array([ 0,  2,  3, 15], dtype=uint8)
    """
    x, scale, zero_point, qmin, qmax = _prepare(x, scale, zero_point, qmin, qmax, axis)
    steps = _rounded_steps(x, scale, zero_point, qmin, qmax, rounding, rng).astype(np.int64)
    return np.clip(steps + zero_point, qmin, qmax).astype(quant_dtype(qmin, qmax))


def dequantize(
    q: object,
    scale: object,
    zero_point: object,
    axis: int | None = None,
    *,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    r"""Real values :math:`\hat x = (q - z)\, s`.

    The result's dtype is ``dtype`` if given, else the scale's floating dtype when the scale
    is a NumPy array or scalar, else float32. ``axis`` as in ``quantize``.

    Source: Jacob et al. 2018, eq. (1).
    Checked by
    ``tests/optim/quant/test_quant_affine.py::test_dequantize_quantize_is_fake_quantize``.

    >>> dequantize(np.array([0, 2, 3], dtype=np.uint8), 0.5, 2)
    array([-1. ,  0. ,  0.5], dtype=float32)
    """
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise TypeError(f"q must be an integer array, got dtype {q.dtype}")
    if dtype is None:
        numpy_scale = isinstance(scale, (np.ndarray, np.generic))
        is_float = numpy_scale and np.asarray(scale).dtype.kind == "f"
        dtype = np.asarray(scale).dtype if is_float else np.float32
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    axis, channels = n_channels(q, axis)
    scale = channel_param(scale, "scale", q.ndim, axis, channels).astype(dtype)
    check_scale(scale)
    zero_point = check_zero_point(channel_param(zero_point, "zero_point", q.ndim, axis, channels))
    return (q.astype(np.int64) - zero_point).astype(dtype) * scale


def fake_quantize(
    x: object,
    scale: object,
    zero_point: object,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    *,
    rounding: str = "half_even",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    r"""Quantize and dequantize in floating point:

    .. math::
        \hat x = (\operatorname{clamp}(\operatorname{round}(x/s) + z,\ q_{min},\ q_{max}) - z)\, s


    Same arguments as ``quantize``; the result has ``x``'s floating dtype. Computed in floating
    point as ``torch.fake_quantize_per_tensor_affine`` does, so it equals
    ``dequantize(quantize(x, ...), ...)`` whenever the codes are exact in that dtype
    (:math:`|q| \le 2^{24}` in float32, i.e. every bit width up to 16).

    Source: Jacob et al. 2018, section 3 (training with simulated quantization);
    ``torch.fake_quantize_per_tensor_affine`` / ``torch.fake_quantize_per_channel_affine``.
    Checked by ``tests/optim/quant/test_quant_affine.py::test_fake_quantize_idempotent``,
    ``::test_fake_quantize_error_at_most_half_step_inside_range`` and
    ``tests/optim/quant/test_quant_torch.py::test_fake_quantize_matches_torch_per_tensor``.

    >>> fake_quantize(np.array([-1.2, 0.1, 0.3, 9.0], dtype=np.float32), 0.5, 2, 0, 15)
    array([-1. ,  0. ,  0.5,  6.5], dtype=float32)
    """
    x, scale, zero_point, qmin, qmax = _prepare(x, scale, zero_point, qmin, qmax, axis)
    z = zero_point.astype(x.dtype)
    steps = _rounded_steps(x, scale, zero_point, qmin, qmax, rounding, rng)
    return (np.clip(steps + z, x.dtype.type(qmin), x.dtype.type(qmax)) - z) * scale
