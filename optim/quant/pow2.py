"""Power-of-two (logarithmic) quantization."""
from __future__ import annotations

import numpy as np

from ._checks import as_float_array, check_finite, check_int
from .ranges import check_bits


def pow2_quantize(x: object, bits: int, max_exponent: int | None = None) -> np.ndarray:
    r"""Round each value to a signed power of two, or to 0.

    A ``bits``-bit code is a sign bit and a (b-1)-bit exponent code whose value 0 means zero,
    leaving :math:`n = 2^{b-1} - 1` exponents :math:`e_{min} = e_{max} - n + 1, \dots, e_{max}`:

    .. math::
        \tilde e = \operatorname{round}(\log_2 |x|), \qquad
        Q(x) = \begin{cases}
            0 & x = 0 \text{ or } \tilde e < e_{min} \\
            \operatorname{sign}(x)\, 2^{\min(\tilde e,\ e_{max})} & \text{otherwise}
        \end{cases}

    Rounding is in the log domain (half to even), so :math:`|\log_2|x| - \log_2|Q(x)|| \le 1/2`
    for every value that is neither clipped nor flushed to zero. ``max_exponent`` defaults to
    :math:`e_{max} = \operatorname{round}(\log_2 \max|x|)`, the level the largest value rounds
    to (the role of the "full scale range" FSR in the source).

    Source: Miyashita, Lee & Murmann 2016, "Convolutional Neural Networks using Logarithmic Data
    Representation", section 3 (LogQuant; its Clip flushes small values to zero).
    Checked by ``tests/optim/quant/test_quant_lowbit.py::test_pow2_nearest_level_in_log_domain``.

    >>> pow2_quantize(np.array([0.3, -0.9, 0.01, 0.0, 5.0]), bits=4)
    array([ 0.25, -1.  ,  0.  ,  0.  ,  4.  ])
    """
    x = as_float_array(x)
    bits = check_bits(bits)
    check_finite(x, "x")
    magnitude = np.abs(x)
    if max_exponent is None:
        peak = magnitude.max(initial=0.0)
        if peak == 0:
            return np.zeros_like(x)
        max_exponent = int(np.rint(np.log2(peak)))
    max_exponent = check_int(max_exponent, "max_exponent")
    min_exponent = max_exponent - (2 ** (bits - 1) - 1) + 1
    with np.errstate(divide="ignore"):
        exponent = np.rint(np.log2(magnitude))
    kept = exponent >= min_exponent  # False for x == 0, where log2 is -inf
    exponent = np.minimum(np.where(kept, exponent, 0), max_exponent)
    return np.where(kept, np.sign(x) * np.exp2(exponent), 0).astype(x.dtype)
