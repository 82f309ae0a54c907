"""Integer ranges of b-bit codes and the smallest NumPy dtype that holds a range."""
from __future__ import annotations

import numpy as np

from ._checks import check_int, check_qrange

MIN_BITS, MAX_BITS = 2, 16

# Storage types narrower than int32, narrowest first; signed ones only when qmin < 0.
_DTYPES = (np.uint8, np.int8, np.uint16, np.int16)


def check_bits(bits: object) -> int:
    """Validate a bit width in ``[2, 16]``."""
    bits = check_int(bits, "bits")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    return bits


def int_range(bits: int, signed: bool = True, restricted: bool = False) -> tuple[int, int]:
    r"""Integer range ``(qmin, qmax)`` of ``bits``-bit codes.

    .. math::
        \text{signed: } [-2^{b-1},\ 2^{b-1}-1], \quad
        \text{restricted: } [-(2^{b-1}-1),\ 2^{b-1}-1], \quad
        \text{unsigned: } [0,\ 2^b-1]

    The restricted (narrow) range drops :math:`-2^{b-1}` so the grid is symmetric about 0
    (int8: -127..127, TensorFlow Lite's and ONNX Runtime's symmetric weights); it is defined
    for signed codes only.

    Source: two's-complement ranges; narrow range as in TFLite's int8 quantization spec.
    Checked by ``tests/optim/quant/test_quant_ranges.py::test_int_range_matches_dtype_limits``.

    >>> int_range(8), int_range(8, restricted=True), int_range(4, signed=False)
    ((-128, 127), (-127, 127), (0, 15))
    """
    bits = check_bits(bits)
    if restricted and not signed:
        raise ValueError(
            "restricted=True needs signed=True: the narrow range is -(2^(b-1)-1)..2^(b-1)-1"
        )
    if not signed:
        return 0, 2**bits - 1
    half = 2 ** (bits - 1)
    return (-half + 1 if restricted else -half), half - 1


def quant_dtype(qmin: int, qmax: int) -> np.dtype:
    """Narrowest of uint8, int8, uint16, int16, int32 holding ``[qmin, qmax]``
    (unsigned when ``qmin >= 0``).

    Checked by ``tests/optim/quant/test_quant_ranges.py::test_quant_dtype_is_narrowest_fit``.

    >>> quant_dtype(-128, 127), quant_dtype(0, 15), quant_dtype(0, 256)
    (dtype('int8'), dtype('uint8'), dtype('uint16'))
    """
    qmin, qmax = check_qrange(qmin, qmax)
    for dtype in _DTYPES:
        info = np.iinfo(dtype)
        if (qmin < 0) == (info.min < 0) and info.min <= qmin and qmax <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int32)
