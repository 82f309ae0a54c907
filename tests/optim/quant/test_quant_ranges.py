"""Integer ranges and storage dtypes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim.quant import int_range, quant_dtype


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16])
def test_int_range_matches_dtype_limits(dtype):
    info = np.iinfo(dtype)
    assert int_range(info.bits, signed=info.min < 0) == (info.min, info.max)


@given(bits=st.integers(2, 16), signed=st.booleans())
def test_int_range_has_2_to_the_bits_codes(bits, signed):
    qmin, qmax = int_range(bits, signed)
    assert qmax - qmin + 1 == 2**bits
    assert (qmin < 0) == signed and qmin <= 0 <= qmax


@given(bits=st.integers(2, 16))
def test_restricted_range_is_symmetric_and_one_code_shorter(bits):
    qmin, qmax = int_range(bits, signed=True, restricted=True)
    assert qmin == -qmax
    assert (qmin, qmax) == (int_range(bits)[0] + 1, int_range(bits)[1])


def _fits(dtype, qmin, qmax):
    return np.iinfo(dtype).min <= qmin and qmax <= np.iinfo(dtype).max


@given(qmin=st.integers(-(2**31), 2**31 - 2), width=st.integers(1, 2**17))
def test_quant_dtype_is_narrowest_fit(qmin, width):
    qmax = min(qmin + width, 2**31 - 1)
    dtype = quant_dtype(qmin, qmax)
    assert _fits(dtype, qmin, qmax)
    same_kind = (np.uint8, np.uint16) if qmin >= 0 else (np.int8, np.int16)
    assert not any(_fits(t, qmin, qmax) for t in same_kind if np.dtype(t).itemsize < dtype.itemsize)
    if dtype != np.int32:
        assert dtype.kind == ("u" if qmin >= 0 else "i")
