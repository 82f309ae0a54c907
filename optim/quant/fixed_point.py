"""Fixed-point Qm.n numbers."""
from __future__ import annotations

import numpy as np

from ._checks import check_int
from .affine import fake_quantize


def qformat_range(int_bits: int, frac_bits: int, signed: bool = True) -> tuple[int, int, float]:
    r"""Code range and step of the fixed-point format Qm.n (``m = int_bits``, ``n = frac_bits``).

    A value is :math:`q \cdot 2^{-n}` with an integer code

    .. math::
        q \in [-2^{m+n},\ 2^{m+n} - 1] \ \text{(signed, } m + n + 1 \text{ bits)}, \qquad
        q \in [0,\ 2^{m+n} - 1] \ \text{(unsigned UQm.n, } m + n \text{ bits)}

    so signed Qm.n covers :math:`[-2^m,\ 2^m - 2^{-n}]`. ``m`` counts integer bits without the
    sign bit (ARM's convention: Q15 = Q0.15 is a 16-bit signed fraction). At most 32 bits.

    Source: ARM "Qm.n" notation (e.g. CMSIS-DSP q15/q31 types).
    Checked by ``tests/optim/quant/test_quant_lowbit.py::test_fixed_point_grid_and_range``.

    >>> qformat_range(3, 4)
    (-128, 127, 0.0625)
    """
    m, n = check_int(int_bits, "int_bits"), check_int(frac_bits, "frac_bits")
    if m < 0:
        raise ValueError(f"int_bits must be >= 0, got {m}")
    if n < 0:
        raise ValueError(f"frac_bits must be >= 0, got {n}")
    total = m + n + (1 if signed else 0)
    if not 2 <= total <= 32 or m + n > 31:
        raise ValueError(
            f"Q{m}.{n} ({'signed' if signed else 'unsigned'}) needs {total} bits; "
            "int_bits + frac_bits must give 2..32 bits with int_bits + frac_bits <= 31"
        )
    top = 2 ** (m + n)
    return (-top if signed else 0), top - 1, 2.0**-n


def fixed_point_quantize(
    x: object,
    int_bits: int,
    frac_bits: int,
    signed: bool = True,
    *,
    rounding: str = "half_even",
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    r"""Round ``x`` to the Qm.n grid and saturate:
    :math:`\hat x = 2^{-n} \operatorname{clamp}(\operatorname{round}(x\, 2^n),\ q_{min},\ q_{max})`.

    This is ``fake_quantize`` with :math:`s = 2^{-n}, z = 0` and ``qformat_range``'s codes;
    ``rounding``/``rng`` as there. In float32 the result is exact for ``m + n <= 23``
    (use float64 beyond).

    Source: Gupta et al. 2015, "Deep Learning with Limited Numerical Precision", section 3
    (fixed point <IL, FL> with round-to-nearest or stochastic rounding and saturation).
    Checked by ``tests/optim/quant/test_quant_lowbit.py::test_fixed_point_grid_and_range``.

    >>> fixed_point_quantize(np.array([0.1, -3.0, 9.0]), 2, 3)
    array([ 0.125, -3.   ,  3.875])
    """
    qmin, qmax, step = qformat_range(int_bits, frac_bits, signed)
    return fake_quantize(x, step, 0, qmin, qmax, rounding=rounding, rng=rng)
