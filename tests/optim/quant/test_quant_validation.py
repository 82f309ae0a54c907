"""Bad input raises ValueError/TypeError naming the argument; the docstring examples hold."""
import doctest
import importlib

import numpy as np
import pytest

from optim.quant import (
    HistogramKLObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    dequantize,
    fake_quantize,
    fixed_point_quantize,
    histogram_quantile,
    int_range,
    pow2_quantize,
    qparams,
    quantize,
    requantize,
)

X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)

VALUE_ERRORS = [
    ("qmin must be < qmax", lambda: quantize(X, 0.1, 0, 5, 5)),
    ("qmin must be < qmax", lambda: qparams(-1.0, 1.0, 10, -10)),
    ("scale must be positive", lambda: quantize(X, 0.0, 0, -128, 127)),
    ("scale must be positive", lambda: fake_quantize(X, -0.5, 0, -128, 127)),
    ("scale must be positive", lambda: dequantize(np.zeros(3, dtype=np.int8), np.inf, 0)),
    ("scale must be positive", lambda: quantize(X, np.nan, 0, -128, 127)),
    ("zero_point must lie in", lambda: quantize(X, 0.1, 300, 0, 255)),
    ("zero_point must lie in", lambda: fake_quantize(X, 0.1, -129, -128, 127)),
    ("zero_point must hold integers", lambda: quantize(X, 0.1, 0.5, -128, 127)),
    ("bits must be in", lambda: int_range(1)),
    ("bits must be in", lambda: int_range(17)),
    ("bits must be in", lambda: pow2_quantize(X, 32)),
    ("axis=2 is out of range", lambda: quantize(X, np.ones(4), np.zeros(4, dtype=int), -128, 127, axis=2)),
    ("axis=-3 is out of range", lambda: dequantize(np.zeros((3, 4), dtype=np.int8), np.ones(3), 0, axis=-3)),
    ("scale must have shape \\(4,\\)", lambda: quantize(X, np.ones(3), np.zeros(4, dtype=int), -128, 127, axis=1)),
    ("zero_point must have shape \\(3,\\)", lambda: fake_quantize(X, np.ones(3), np.zeros(4, dtype=int), -128, 127, axis=0)),
    ("scale must be a scalar when axis is None", lambda: quantize(X, np.ones(4), 0, -128, 127)),
    ("x_min must be <= x_max", lambda: qparams(1.0, -1.0, -128, 127)),
    ("x_min must be finite", lambda: qparams(-np.inf, 1.0, -128, 127)),
    ("x_max must be finite", lambda: qparams(-1.0, np.nan, -128, 127)),
    ("eps must be positive", lambda: qparams(-1.0, 1.0, -128, 127, eps=0.0)),
    ("x must not contain NaN", lambda: quantize(np.array([np.nan]), 0.1, 0, -128, 127)),
    ("restricted=True needs signed=True", lambda: int_range(8, signed=False, restricted=True)),
    ("int32 range", lambda: quantize(X, 1.0, 0, 0, 2**32)),
    ("Q3.30", lambda: fixed_point_quantize(X, 3, 30)),
    ("frac_bits must be >= 0", lambda: fixed_point_quantize(X, 3, -1)),
    ("acc_int32 values must fit int32", lambda: requantize(np.array([2**31]), 2**30, 0, 0, -128, 127)),
    ("M0 must hold integers", lambda: requantize(np.array([1]), -5, 0, 0, -128, 127)),
    ("shift must hold integers", lambda: requantize(np.array([1]), 2**30, 70, 0, -128, 127)),
    ("rounding must be one of", lambda: quantize(X, 0.1, 0, -128, 127, rounding="up")),
    ("q must be in \\[0, 100\\]", lambda: histogram_quantile(np.ones(3), np.arange(4.0), 101)),
    ("percentile must be in", lambda: PercentileObserver(percentile=40)),
    ("averaging_constant must be in", lambda: MovingAverageMinMaxObserver(averaging_constant=0)),
    ("grid must be >= 1", lambda: MSEObserver(grid=0)),
    ("bins must be >= 2", lambda: HistogramKLObserver(bins=1)),
    ("x must not be empty", lambda: MinMaxObserver()(np.zeros((0, 3)))),
]


@pytest.mark.parametrize("message, call", VALUE_ERRORS, ids=[m for m, _ in VALUE_ERRORS])
def test_value_error_names_the_argument(message, call):
    with pytest.raises(ValueError, match=message):
        call()


TYPE_ERRORS = [
    ("qmin must be an integer", lambda: quantize(X, 0.1, 0, -128.0, 127)),
    ("bits must be an integer", lambda: int_range(8.0)),
    ("q must be an integer array", lambda: dequantize(X, 0.1, 0)),
    ("x must be a real numeric array", lambda: quantize(np.array(["a"]), 0.1, 0, -128, 127)),
    ("rng must be", lambda: quantize(X, 0.1, 0, -128, 127, rounding="stochastic", rng="seed")),
]


@pytest.mark.parametrize("message, call", TYPE_ERRORS, ids=[m for m, _ in TYPE_ERRORS])
def test_type_error_names_the_argument(message, call):
    with pytest.raises(TypeError, match=message):
        call()


MODULES = ["affine", "ranges", "pow2", "fixed_point", "binary", "requant", "sharing", "huffman"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"optim.quant.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
