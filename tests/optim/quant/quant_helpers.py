"""Hypothesis strategies shared by the optim.quant tests."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.quant import int_range

FLOAT_DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def qranges(draw, min_bits=2, max_bits=16):
    """``(qmin, qmax)`` of a signed, restricted-signed or unsigned range of 2..16 bits."""
    bits = draw(st.integers(min_bits, max_bits))
    signed = draw(st.booleans())
    restricted = signed and draw(st.booleans())
    return int_range(bits, signed, restricted)


def float_arrays(dtype, shape, bound=100.0):
    """Finite arrays of ``dtype`` with values exactly representable in float32."""
    elements = st.floats(-bound, bound, width=32, allow_subnormal=False)
    return hnp.arrays(dtype, shape, elements=elements)


@st.composite
def affine_cases(draw, shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)):
    """An array ``x`` (float32 or float64) with a valid per-tensor ``(scale, zero_point, qmin, qmax)``."""
    dtype = draw(FLOAT_DTYPES)
    x = draw(float_arrays(dtype, draw(shape)))
    qmin, qmax = draw(qranges())
    scale = dtype(draw(st.floats(2.0**-10, 8.0, width=32)))
    zero_point = draw(st.integers(qmin, qmax))
    return x, scale, zero_point, qmin, qmax


@st.composite
def per_channel_cases(draw):
    """An array with an axis and per-channel ``scale`` / ``zero_point`` of shape ``(C,)``."""
    dtype = draw(FLOAT_DTYPES)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    x = draw(float_arrays(dtype, shape))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    channels = shape[axis]
    qmin, qmax = draw(qranges())
    scale = np.array(draw(st.lists(st.floats(2.0**-10, 8.0, width=32), min_size=channels, max_size=channels)),
                     dtype=dtype)
    zero_point = np.array(draw(st.lists(st.integers(qmin, qmax), min_size=channels, max_size=channels)))
    return x, scale, zero_point, qmin, qmax, axis


def representable_interval(scale, zero_point, qmin, qmax):
    """The real interval ``[(qmin - z) s, (qmax - z) s]`` covered by the codes."""
    return (qmin - zero_point) * float(scale), (qmax - zero_point) * float(scale)
