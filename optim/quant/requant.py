r"""Integer-only requantization with a fixed-point multiplier (Jacob et al. 2018, section 2.2).

An int8 layer accumulates :math:`acc = \sum (q_1 - z_1)(q_2 - z_2)` (plus an int32 bias) in
int32; its real value is :math:`s_1 s_2\, acc`, and the output code is
:math:`q_3 = z_3 + M\, acc` with :math:`M = s_1 s_2 / s_3`. ``quantize_multiplier`` writes
:math:`M` as an int32 :math:`M_0` and a shift, and ``requantize`` applies it with integer
operations only (gemmlowp's ``SaturatingRoundingDoublingHighMul`` and ``RoundingDivideByPOT``),
computed exactly in int64.
"""
from __future__ import annotations

import numpy as np

from ._checks import channel_param, check_qrange, check_zero_point, n_channels
from .affine import quantize
from .ranges import quant_dtype

INT32_MIN, INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)
MIN_SHIFT, MAX_SHIFT = -31, 62


def quantize_multiplier(multiplier: object) -> tuple[np.ndarray, np.ndarray]:
    r"""Fixed-point form of a real multiplier :math:`M \ge 0`:

    .. math::
        M \approx M_0 \cdot 2^{-31} \cdot 2^{-n}, \qquad M_0 \in [2^{30},\ 2^{31} - 1]

    from :math:`M = f \cdot 2^{e}`, :math:`f \in [1/2, 1)` (``frexp``):
    :math:`M_0 = \operatorname{round}(f\, 2^{31})` (half to even), :math:`n = -e`; a rounding
    carry to :math:`2^{31}` becomes :math:`M_0 = 2^{30},\ n - 1`. :math:`n > 0` is a right
    shift (:math:`M < 1/2`), :math:`n < 0` a left shift (:math:`M \ge 1`). Because
    :math:`M_0 \ge 2^{30}` and the rounding error is at most 1/2, the relative error is at most
    :math:`2^{-31}`. :math:`M = 0` gives :math:`M_0 = 0, n = 0`. Accepts arrays (per channel).

    Returns ``(M0 as int32, n as int32)``. TFLite's ``QuantizeMultiplier`` returns the
    left-shift exponent :math:`-n` and rounds half away from zero, which differs from half to
    even only when :math:`f\, 2^{31}` is exactly a half-integer.

    Source: Jacob et al. 2018, section 2.2; gemmlowp / TFLite ``QuantizeMultiplier``.
    Checked by ``tests/optim/quant/test_quant_requant.py::test_multiplier_relative_error``.

    >>> quantize_multiplier(0.25)
    (array(1073741824, dtype=int32), array(1, dtype=int32))
    """
    m = np.asarray(multiplier, dtype=np.float64)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError(f"multiplier must be finite and >= 0, got {m.ravel()[:8]}")
    fraction, exponent = np.frexp(m)
    m0 = np.rint(fraction * 2.0**31).astype(np.int64)
    carry = m0 == 2**31
    m0 = np.where(carry, m0 // 2, m0)
    shift = -(exponent.astype(np.int64) + carry)
    shift = np.where(m0 == 0, 0, shift)
    if np.any(shift < MIN_SHIFT) or np.any(shift > MAX_SHIFT):
        raise ValueError(
            f"multiplier must lie in [2^-{MAX_SHIFT + 1}, 2^{-MIN_SHIFT}) or be 0, "
            f"got {m.ravel()[:8]}"
        )
    return m0.astype(np.int32), shift.astype(np.int32)


def rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r"""gemmlowp's ``SaturatingRoundingDoublingHighMul`` for int32 ``a`` and ``b >= 0``:
    the high 32 bits of :math:`2ab`, rounded half up,

    .. math:: \operatorname{SRDHM}(a, b) = \left\lfloor \frac{ab + 2^{30}}{2^{31}} \right\rfloor

    (gemmlowp adds a nudge of :math:`2^{30}` or :math:`1 - 2^{30}` and truncates toward zero,
    which is the same). Exact in int64 since :math:`|ab| \le 2^{62}`; with :math:`b \ge 0`
    the saturating case :math:`a = b = -2^{31}` cannot occur.

    Checked by
    ``tests/optim/quant/test_quant_requant.py::test_requantize_matches_gemmlowp_reference``.
    """
    return (a.astype(np.int64) * b.astype(np.int64) + (1 << 30)) >> 31


def rounding_right_shift(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    r"""gemmlowp's ``RoundingDivideByPOT``: :math:`x / 2^n` rounded half away from zero,

    .. math::
        \lfloor x / 2^n \rfloor + [\, r > \lfloor m/2 \rfloor + [x < 0]\, ], \quad
        m = 2^n - 1,\ r = x \mathbin{\&} m

    for int64 ``x`` and ``0 <= n <= 62``.

    Checked by ``tests/optim/quant/test_quant_requant.py::test_rounding_right_shift_is_half_away``.
    """
    n = np.asarray(n, dtype=np.int64)
    mask = (np.int64(1) << n) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> n) + ((x & mask) > threshold)


def requantize(
    acc_int32: object,
    M0: object,
    shift: object,
    zero_point: object,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> np.ndarray:
    r"""Output codes from int32 accumulators, integer operations only:

    .. math::
        q = \operatorname{clamp}\big(z + \operatorname{RDBPOT}(\operatorname{SRDHM}(
            \operatorname{sat}_{32}(acc \cdot 2^{\max(-n, 0)}),\ M_0),\ \max(n, 0)),\
            q_{min},\ q_{max}\big)

    with ``M0, shift`` from ``quantize_multiplier`` (per tensor, or per channel along ``axis``
    with shapes ``(C,)``), :math:`\operatorname{sat}_{32}` saturating to int32 (gemmlowp's
    ``SaturatingLeftShift``). A fused ReLU is ``qmin = z``. Law:
    :math:`|q - \operatorname{clamp}(\operatorname{round}(acc \cdot M) + z)| \le 1`.

    Source: Jacob et al. 2018, section 2.2; gemmlowp ``fixedpoint.h``;
    TFLite ``MultiplyByQuantizedMultiplier``.
    Checked by ``tests/optim/quant/test_quant_requant.py::test_requantize_within_one_of_float``
    and ``::test_requantize_matches_gemmlowp_reference``.

    >>> M0, n = quantize_multiplier(0.01)
    >>> requantize(np.array([1000, -1000, 30000], dtype=np.int32), M0, n, 5, -128, 127)
    array([ 15,  -5, 127], dtype=int8)
    """
    acc = np.asarray(acc_int32)
    if acc.dtype.kind not in "iu":
        raise TypeError(f"acc_int32 must be an integer array, got dtype {acc.dtype}")
    acc = acc.astype(np.int64)
    if np.any(acc < INT32_MIN) or np.any(acc > INT32_MAX):
        raise ValueError("acc_int32 values must fit int32")
    qmin, qmax = check_qrange(qmin, qmax)
    axis, channels = n_channels(acc, axis)
    m0 = channel_param(M0, "M0", acc.ndim, axis, channels)
    n = channel_param(shift, "shift", acc.ndim, axis, channels)
    if m0.dtype.kind not in "iu" or np.any(m0 < 0) or np.any(m0 > INT32_MAX):
        raise ValueError(f"M0 must hold integers in [0, 2^31 - 1], got {m0.ravel()[:8]}")
    if n.dtype.kind not in "iu" or np.any(n < MIN_SHIFT) or np.any(n > MAX_SHIFT):
        raise ValueError(
            f"shift must hold integers in [{MIN_SHIFT}, {MAX_SHIFT}], got {n.ravel()[:8]}"
        )
    z = channel_param(zero_point, "zero_point", acc.ndim, axis, channels)
    z = check_zero_point(z, qmin, qmax)
    n = n.astype(np.int64)
    shifted = np.clip(acc << np.maximum(-n, 0), INT32_MIN, INT32_MAX)
    scaled = rounding_right_shift(rounding_doubling_high_mul(shifted, m0), np.maximum(n, 0))
    return np.clip(scaled + z, qmin, qmax).astype(quant_dtype(qmin, qmax))


def quantize_bias(
    bias: object, input_scale: object, weight_scale: object, axis: int | None = None
) -> np.ndarray:
    r"""int32 bias codes with scale :math:`s_{in} s_w` and zero point 0,

    .. math::
        q_b = \operatorname{clamp}(\operatorname{round}(b / (s_{in} s_w)),\ -2^{31},\ 2^{31} - 1)

    so the bias adds directly to the int32 accumulator. ``weight_scale`` may be per channel
    (shape ``(C,)`` with ``axis=0`` for a bias of shape ``(C,)``). Computed in float64.

    Source: Jacob et al. 2018, section 2.4.
    Checked by
    ``tests/optim/quant/test_quant_requant.py::test_quantize_bias_rounds_to_accumulator_scale``.

    >>> quantize_bias(np.array([0.5, -0.25]), 0.1, np.array([0.5, 0.25]), axis=0)
    array([ 10, -10], dtype=int32)
    """
    scale = np.asarray(input_scale, dtype=np.float64) * np.asarray(weight_scale, dtype=np.float64)
    zero = np.zeros(scale.shape, dtype=np.int64)
    return quantize(np.asarray(bias, dtype=np.float64), scale, zero, INT32_MIN, INT32_MAX, axis)
