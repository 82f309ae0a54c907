"""Hypothesis strategies for convolution and pooling geometry, shared by the kernel and op tests
(imported as ``kernels.cases``; ``tests/minnet`` is on ``sys.path``)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import strategies as st

from minnet.kernels.backend import HAVE_NUMBA

needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="the numba backend needs numba installed")
BACKENDS = ["numpy", pytest.param("numba", marks=needs_numba)]


class ConvCase(NamedTuple):
    x_shape: tuple
    w_shape: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int

    @property
    def geometry(self) -> tuple:
        return self.stride, self.padding, self.dilation, self.groups


class PoolCase(NamedTuple):
    x_shape: tuple
    kernel_size: tuple
    stride: tuple
    padding: tuple


def _pairs(low: int, high: int):
    return st.tuples(st.integers(low, high), st.integers(low, high))


@st.composite
def conv_cases(draw, max_batch: int = 2, max_group_channels: int = 2, max_groups: int = 3):
    """Any valid conv2d geometry: groups, stride 1-3, padding 0-2, dilation 1-2, and an input
    just large enough for the dilated kernel to fit the padded input, or up to 4 larger."""
    groups = draw(st.integers(1, max_groups))
    c_in = groups * draw(st.integers(1, max_group_channels))
    c_out = groups * draw(st.integers(1, max_group_channels))
    kernel, stride = draw(_pairs(1, 3)), draw(_pairs(1, 3))
    padding, dilation = draw(_pairs(0, 2)), draw(_pairs(1, 2))
    hw = tuple(draw(st.integers(0, 4)) + max(1, d * (k - 1) + 1 - 2 * p)
               for k, p, d in zip(kernel, padding, dilation))
    return ConvCase((draw(st.integers(1, max_batch)), c_in) + hw,
                    (c_out, c_in // groups) + kernel, stride, padding, dilation, groups)


@st.composite
def pool_cases(draw, max_batch: int = 2, max_channels: int = 2):
    """Any valid pooling window: kernel 1-3, stride 1-3, padding up to half the kernel, and an
    input giving at least one output."""
    kernel, stride = draw(_pairs(1, 3)), draw(_pairs(1, 3))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    hw = tuple(draw(st.integers(0, 4)) + max(1, k - 2 * p) for k, p in zip(kernel, padding))
    shape = (draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels))) + hw
    return PoolCase(shape, kernel, stride, padding)


@st.composite
def adaptive_cases(draw):
    """(x_shape, output_size) with outputs smaller, equal to or larger than the input."""
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) + draw(_pairs(1, 7))
    return shape, draw(_pairs(1, 5))


def random_array(shape: tuple, dtype, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def tied_array(shape: tuple, dtype, seed: int) -> np.ndarray:
    """Small integers, so that pooling windows hold many tied maxima."""
    return np.random.default_rng(seed).integers(0, 3, shape).astype(dtype)
