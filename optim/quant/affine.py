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
  to ``eps`` and keeps :math:`z = q_{min} - \operatorname{round}(r_{min}/s)`.

The affine zero point is rounded differently by each library; ``qparams(...,
convention=...)`` selects the rule (``affine_zero_point``):

* ``"pytorch"``: :math:`z = \operatorname{clamp}(q_{min} - \operatorname{rint}(r_{min}/s))`,
  half to even applied to :math:`r_{min}/s` alone;
* ``"onnxruntime"``: :math:`z = \operatorname{rint}(q_{min} - r_{min}/s)`, half to even
  applied after the shift. Half-to-even rounding does not commute with a shift by an odd
  :math:`q_{min}`, so the two differ whenever :math:`r_{min}/s` is a tie: with the range
  -127..127, :math:`r_{min} = -0.5`, :math:`r_{max} = 253.5`, :math:`s = 1`, PyTorch gives
  :math:`-127 - \operatorname{rint}(-0.5) = -127` and ORT :math:`\operatorname{rint}(-126.5) = -126`;
* ``"tflite"``: :math:`v = q_{min} - r_{min}/s` clamped to :math:`[q_{min}, q_{max}]`, then
  rounded half away from zero (``std::round``);
* ``"tf_fake_quant"``: TensorFlow's ``FakeQuantWithMinMaxVars`` "nudging": the range is not
  extended to contain 0; :math:`s = (x_{max} - x_{min})/(q_{max} - q_{min})` and
  :math:`z` as TFLite's from :math:`x_{min}`, so the grid is shifted to
  :math:`[(q_{min} - z)s, (q_{max} - z)s]` instead of being widened.

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
ZERO_POINT_CONVENTIONS = ("pytorch", "onnxruntime", "tflite", "tf_fake_quant")


def qparams(
    x_min: object,
    x_max: object,
    qmin: int,
    qmax: int,
    symmetric: bool = False,
    *,
    eps: float = FLOAT32_EPS,
    convention: str = "pytorch",
) -> tuple[np.ndarray, np.ndarray]:
    r"""Scale and zero point mapping the range ``[x_min, x_max]`` onto ``[qmin, qmax]``.

    The range is first extended to contain 0, so 0.0 is exactly representable:
    :math:`r_{min} = \min(x_{min}, 0)`, :math:`r_{max} = \max(x_{max}, 0)` (except in the
    ``"tf_fake_quant"`` convention, which shifts the grid instead).

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

    ``round`` is half to even; ``convention`` picks another library's affine zero-point rule
    (``affine_zero_point``; symmetric ranges have one rule). ``x_min == x_max == 0`` gives :math:`s = \epsilon` (float32's
    machine epsilon, as PyTorch). For unsigned symmetric ranges the zero point is the upper
    midpoint: 128 for 0..255 and 2^15 for 0..65535, as PyTorch's defaults and ONNX Runtime;
    PyTorch's custom ranges use the lower midpoint instead.

    Scalars give scalars; arrays of per-channel minima/maxima give arrays. The scale has the
    inputs' floating dtype (float32 for Python floats), the zero point is int64.

    Source: ``torch.ao.quantization.observer.UniformQuantizationObserverBase._calculate_qparams``;
    Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", section 2.1 (zero exactly representable).
    Checked by ``tests/optim/quant/test_quant_affine.py::test_qparams_zero_exact_and_range_covered``,
    ``::test_zero_point_conventions_on_the_tie_counterexample``
    and ``tests/optim/quant/test_quant_torch.py::test_qparams_match_torch_minmax_observer``.

    >>> qparams(-1.0, 3.0, 0, 255)
    (np.float32(0.015686275), np.int64(64))
    """
    qmin, qmax = check_qrange(qmin, qmax)
    if convention not in ZERO_POINT_CONVENTIONS:
        raise ValueError(f"convention must be one of {ZERO_POINT_CONVENTIONS}, got {convention!r}")
    if symmetric and convention != "pytorch":
        raise ValueError(f"convention={convention!r} is an affine zero-point rule; symmetric "
                         "ranges use the midpoint rule (convention='pytorch')")
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
    if convention != "tf_fake_quant":
        lo, hi = np.minimum(lo, dtype.type(0)), np.maximum(hi, dtype.type(0))
    if symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / dtype.type((qmax - qmin) / 2), dtype.type(eps))
        zero_point = np.full(lo.shape, 0 if qmin < 0 else (qmin + qmax + 1) // 2, dtype=np.int64)
    else:
        scale = np.maximum((hi - lo) / dtype.type(qmax - qmin), dtype.type(eps))
        zero_point = affine_zero_point(lo, scale, qmin, qmax, convention)
    return scale[()], zero_point[()]


def affine_zero_point(
    r_min: np.ndarray, scale: np.ndarray, qmin: int, qmax: int, convention: str = "pytorch"
) -> np.ndarray:
    r"""The affine zero point (int64) of the range starting at ``r_min`` with step ``scale``,
    in the rounding rule of a library (see the module docstring):

    .. math::
        \text{pytorch: } \operatorname{clamp}(q_{min} - \operatorname{rint}(r_{min}/s)), \quad
        \text{onnxruntime: } \operatorname{rint}(q_{min} - r_{min}/s), \quad
        \text{tflite, tf\_fake\_quant: }
            \operatorname{round}_{\text{away}}(\operatorname{clamp}(q_{min} - r_{min}/s))

    with clamp to :math:`[q_{min}, q_{max}]`, rint half to even and
    :math:`\operatorname{round}_{\text{away}}` half away from zero. ``r_min`` is
    :math:`\min(x_{min}, 0)`, or :math:`x_{min}` itself for ``tf_fake_quant``.

    Source: ``torch.ao.quantization.observer._calculate_qparams``; ONNX Runtime
    ``quantization/quant_utils.py::compute_scale_zp``; TFLite
    ``tools/optimize/quantization_utils.cc::GetAsymmetricQuantizationParams``; TensorFlow
    ``kernels/fake_quant_ops_functor.h::Nudge``.
    Checked by ``tests/optim/quant/test_quant_affine.py::test_zero_point_conventions_on_the_tie_counterexample``
    and ``::test_zero_point_conventions_match_each_library_rule``.

    >>> [int(affine_zero_point(np.float32(-0.5), np.float32(1.0), -127, 127, c))
    ...  for c in ZERO_POINT_CONVENTIONS]
    [-127, -126, -127, -127]
    """
    v = np.asarray(r_min) / scale
    if convention == "pytorch":
        return np.clip(qmin - np.rint(v).astype(np.int64), qmin, qmax)
    if convention == "onnxruntime":
        return np.rint(qmin - v).astype(np.int64)
    if convention in ("tflite", "tf_fake_quant"):
        return round_values(np.clip(qmin - v, qmin, qmax), "half_away").astype(np.int64)
    raise ValueError(f"convention must be one of {ZERO_POINT_CONVENTIONS}, got {convention!r}")


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
