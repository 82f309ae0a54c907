"""A hypothesis strategy shared by the Tucker-2 and CP tests: a float64 Conv2d with drawn
geometry (stride, padding, dilation, bias) and an input it accepts."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import functional as F
from minnet import nn


@st.composite
def conv_cases(draw, max_channels=4):
    c, n = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, 7))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, 7))
    minnet.manual_seed(draw(st.integers(0, 2**16)))
    conv = nn.Conv2d(c, n, (kh, kw), stride, padding, dilation, bias=draw(st.booleans()),
                     dtype=np.float64)
    x = draw(hnp.arrays(np.float64, (2, c, h, w), elements=st.floats(-2, 2, allow_nan=False)))
    return conv, x


def run(module, x):
    with minnet.no_grad():
        return module(minnet.Tensor(x)).data


def conv_with_kernel(conv, kernel, x):
    """``conv`` applied to ``x`` with its weight replaced by ``kernel`` (F.conv2d directly)."""
    bias = None if conv.bias is None else minnet.Tensor(conv.bias.data)
    with minnet.no_grad():
        return F.conv2d(minnet.Tensor(x), minnet.Tensor(kernel), bias, conv.stride, conv.padding,
                        conv.dilation).data
