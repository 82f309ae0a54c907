"""Convolution factorization: channel (kxk + 1x1) and Jaderberg's spatial (kx1 + 1xk) schemes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import functional as F
from minnet import nn
from optim.lowrank import (SCHEMES, compose_kernel, conv_factors, factorize_conv2d,
                           factorized_params, kernel_matrix, singular_values, truncation_error)


@st.composite
def conv_cases(draw):
    """A float64 Conv2d with drawn geometry and an input it accepts."""
    c, n = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    bias = draw(st.booleans())
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, 7))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, 7))
    minnet.manual_seed(draw(st.integers(0, 2**16)))
    conv = nn.Conv2d(c, n, (kh, kw), stride, padding, dilation, bias=bias, dtype=np.float64)
    x = draw(hnp.arrays(np.float64, (2, c, h, w), elements=st.floats(-2, 2, allow_nan=False)))
    return conv, x, draw(st.sampled_from(SCHEMES))


def _run(module, x):
    return module(minnet.Tensor(x)).data


@given(case=conv_cases())
def test_full_rank_factors_reproduce_the_convolution(case):
    conv, x, scheme = case
    full = min(kernel_matrix(conv.weight.data, scheme).shape)
    factorized = factorize_conv2d(conv, full, scheme=scheme)
    np.testing.assert_allclose(_run(factorized, x), _run(conv, x), rtol=1e-9, atol=1e-10)


@given(case=conv_cases(), data=st.data())
def test_factorized_conv_matches_composed_kernel(case, data):
    conv, x, scheme = case
    w = conv.weight.data
    rank = data.draw(st.integers(1, min(kernel_matrix(w, scheme).shape)))
    factorized = factorize_conv2d(conv, rank, scheme=scheme)
    composed = compose_kernel(factorized[0].weight.data, factorized[1].weight.data, scheme)
    expected = F.conv2d(x, composed, conv.bias, conv.stride, conv.padding, conv.dilation).data
    np.testing.assert_allclose(_run(factorized, x), expected, rtol=1e-9, atol=1e-10)
    per_rank, _ = factorized_params(w.shape, scheme)
    bias = w.shape[0] if conv.bias is not None else 0
    assert sum(p.size for p in factorized.parameters()) == rank * per_rank + bias


@given(case=conv_cases(), data=st.data())
def test_kernel_error_is_the_discarded_energy(case, data):
    conv, _, scheme = case
    w = conv.weight.data
    s = singular_values(kernel_matrix(w, scheme))
    rank = data.draw(st.integers(1, len(s)))
    first, second = conv_factors(w, rank, scheme)
    np.testing.assert_allclose(np.linalg.norm(compose_kernel(first, second, scheme) - w),
                               truncation_error(s, rank), rtol=1e-7, atol=1e-9)


@given(case=conv_cases())
def test_rank_one_spatial_scheme_gives_separable_slices(case):
    conv, _, _ = case
    first, second = conv_factors(conv.weight.data, 1, "spatial")
    kh, kw = conv.kernel_size
    assert first.shape[2:] == (kh, 1) and second.shape[2:] == (1, kw)
    kernel = compose_kernel(first, second, "spatial")
    for n in range(kernel.shape[0]):
        for c in range(kernel.shape[1]):
            assert np.linalg.matrix_rank(kernel[n, c], tol=1e-9) <= 1


def test_conv_factorization_rejects_groups_and_bad_schemes():
    with pytest.raises(ValueError, match="groups"):
        factorize_conv2d(nn.Conv2d(4, 4, 3, groups=2), 1)
    with pytest.raises(ValueError, match="scheme"):
        factorize_conv2d(nn.Conv2d(1, 2, 3), 1, scheme="tucker")
    with pytest.raises(ValueError, match="rank"):
        factorize_conv2d(nn.Conv2d(1, 2, 3), 3)  # channel matrix is 2 x 9
    with pytest.raises(TypeError, match="Conv2d"):
        factorize_conv2d(nn.Linear(2, 2), 1)
