"""Power-of-two, fixed-point Qm.n, binary (XNOR-Net) and ternary (TWN) quantization."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.quant import (
    binarize,
    dequantize,
    fixed_point_quantize,
    pow2_quantize,
    qformat_range,
    ternarize,
)

from quant_helpers import FLOAT_DTYPES, float_arrays

SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)


@given(dtype=FLOAT_DTYPES, shape=SHAPES, bits=st.integers(2, 8), data=st.data())
def test_pow2_nearest_level_in_log_domain(dtype, shape, bits, data):
    """Output is 0 or +-2^e with e in the allowed window, same sign as x; inside the window it
    is the nearest level in log2; below it flushes to 0, above it saturates."""
    x = data.draw(float_arrays(dtype, shape, bound=1e3))
    e_max = data.draw(st.integers(-6, 10))
    out = pow2_quantize(x, bits, max_exponent=e_max)
    e_min = e_max - 2 ** (bits - 1) + 2
    levels = 2.0 ** np.arange(e_min, e_max + 1)
    assert out.dtype == dtype and out.shape == x.shape
    for xi, oi in zip(x.ravel().astype(np.float64), out.ravel().astype(np.float64)):
        if oi == 0:
            assert xi == 0 or np.log2(abs(xi)) < e_min - 0.5 + 1e-12
            continue
        assert np.sign(oi) == np.sign(xi) and abs(oi) in levels
        nearest = levels[np.argmin(np.abs(np.log2(levels) - np.log2(abs(xi))))]
        if abs(xi) <= levels[-1]:
            assert abs(np.log2(abs(oi)) - np.log2(abs(xi))) <= abs(np.log2(nearest) - np.log2(abs(xi))) + 1e-12
        else:
            assert abs(oi) == levels[-1]


@given(dtype=FLOAT_DTYPES, shape=SHAPES, bits=st.integers(2, 8), data=st.data())
def test_pow2_idempotent_and_default_top_level(dtype, shape, bits, data):
    x = data.draw(float_arrays(dtype, shape, bound=1e3))
    out = pow2_quantize(x, bits)
    peak = np.abs(x).max()
    if peak > 0:
        assert np.abs(out).max() == 2.0 ** np.rint(np.log2(peak))
    np.testing.assert_array_equal(pow2_quantize(out, bits), out)
    assert len(np.unique(np.abs(out[out != 0]))) <= 2 ** (bits - 1) - 1


@given(dtype=FLOAT_DTYPES, m=st.integers(0, 6), n=st.integers(0, 8), signed=st.booleans(), data=st.data())
def test_fixed_point_grid_and_range(dtype, m, n, signed, data):
    """Qm.n outputs are multiples of 2^-n in [-2^m, 2^m - 2^-n] ([0, ...] unsigned), within
    2^-n / 2 of x inside that range, and the format has 2^(m + n + signed) codes."""
    if m + n + signed < 2:
        return
    qmin, qmax, step = qformat_range(m, n, signed)
    assert qmax - qmin + 1 == 2 ** (m + n + signed) and step == 2.0**-n
    x = data.draw(float_arrays(dtype, (16,), bound=2.0 ** (m + 1)))
    out = fixed_point_quantize(x, m, n, signed).astype(np.float64)
    low, high = (-(2.0**m) if signed else 0.0), 2.0**m - step
    assert np.all(out >= low) and np.all(out <= high)
    np.testing.assert_array_equal(out / step, np.round(out / step))
    inside = (x >= low) & (x <= high)
    assert np.all(np.abs(out - x)[inside] <= step / 2)


def _binary_error(w, alpha, codes, axis):
    """||w - alpha codes||^2 with alpha per channel along axis (or one alpha)."""
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    approx = codes * np.reshape(np.asarray(alpha, dtype=np.float64), shape)
    return float(np.sum((w.astype(np.float64) - approx) ** 2))


@given(dtype=FLOAT_DTYPES, shape=hnp.array_shapes(min_dims=2, max_dims=3, max_side=4), data=st.data())
def test_binarize_is_least_squares_optimal(dtype, shape, data):
    """alpha = mean|w| and B = sign(w) minimise ||w - alpha B||^2 (XNOR-Net eqs. 3-5): no other
    alpha and no single sign flip does better."""
    w = data.draw(float_arrays(dtype, shape, bound=10.0))
    codes, alpha = binarize(w, axis=0)
    assert codes.dtype == np.int8 and set(np.unique(codes)) <= {-1, 1}
    assert np.all(codes[w >= 0] == 1) and np.all(codes[w < 0] == -1)
    best = _binary_error(w, alpha, codes, 0)
    for factor in (0.5, 0.9, 1.1, 2.0):
        assert best <= _binary_error(w, alpha * factor, codes, 0) + 1e-9
    flat = codes.reshape(-1).copy()
    i = data.draw(st.integers(0, flat.size - 1))
    flat[i] = -flat[i]
    assert best <= _binary_error(w, alpha, flat.reshape(codes.shape), 0) + 1e-9
    if np.all(alpha > 0):
        np.testing.assert_array_equal(dequantize(codes, alpha, 0, axis=0), codes * alpha.reshape(-1, *[1] * (w.ndim - 1)))
    _, alpha_all = binarize(w, axis=None)
    np.testing.assert_allclose(alpha_all, np.abs(w.astype(np.float64)).mean(), rtol=1e-6)


@given(dtype=FLOAT_DTYPES, shape=SHAPES, data=st.data())
def test_ternarize_threshold_and_optimal_scale(dtype, shape, data):
    """Delta = 0.7 mean|w|, support |w| > Delta, and alpha minimises ||w - alpha T||^2 for that
    support (TWN eqs. 6 and 10)."""
    w = data.draw(float_arrays(dtype, shape, bound=10.0))
    codes, alpha, delta = ternarize(w)
    magnitude = np.abs(w.astype(np.float64))
    np.testing.assert_allclose(delta, 0.7 * magnitude.mean(), rtol=1e-6)
    np.testing.assert_array_equal(codes, np.sign(w) * (np.abs(w) > delta))
    best = _binary_error(w, alpha, codes, None)
    for factor in (0.5, 0.9, 1.1, 2.0):
        assert best <= _binary_error(w, alpha * factor, codes, None) + 1e-9
    if np.any(codes != 0):
        np.testing.assert_allclose(alpha, magnitude[codes != 0].mean(), rtol=1e-6)
    else:
        assert alpha == 0


def test_ternarize_threshold_is_strict():
    """|w| equal to Delta is zeroed: the support is |w| > Delta (TWN eq. 5)."""
    codes, alpha, delta = ternarize(np.array([0.7, -1.3]))
    assert delta == 0.7 and codes.tolist() == [0, -1] and alpha == 1.3


@given(dtype=FLOAT_DTYPES, shape=hnp.array_shapes(min_dims=2, max_dims=3, max_side=4), data=st.data())
def test_ternarize_per_channel_equals_per_slice(dtype, shape, data):
    w = data.draw(float_arrays(dtype, shape, bound=10.0))
    codes, alpha, delta = ternarize(w, axis=1)
    for c in range(w.shape[1]):
        t, a, d = ternarize(np.take(w, c, axis=1))
        np.testing.assert_array_equal(np.take(codes, c, axis=1), t)
        np.testing.assert_allclose([alpha[c], delta[c]], [a, d], rtol=1e-6)


def _twn_objective(magnitude, delta):
    """TWN's threshold objective (sum_{|w|>delta} |w|)^2 / #{|w| > delta} (Li & Liu 2016,
    eq. 8), whose maximiser minimises ||W - alpha T||^2."""
    kept = magnitude > delta
    return magnitude[kept].sum() ** 2 / max(kept.sum(), 1)


def test_twn_optimal_threshold_for_uniform_and_gaussian():
    """The optimal Delta / E|W| is 2/3 for uniform and ~0.768 for Gaussian weights, found by
    maximising the expected objective E[|W| 1(|W|>D)]^2 / P(|W|>D) numerically (scipy), and
    confirmed by a brute-force search over a large sample; 0.7 is exact for neither."""
    from scipy import integrate, optimize, stats

    def expected_ratio(dist, mean_abs):
        def negative(d):  # per unit sample size; |W| has density 2 f on [0, inf)
            tail = integrate.quad(lambda x: x * 2 * dist.pdf(x), d, np.inf)[0]
            return -tail ** 2 / (2 * dist.sf(d))
        best = optimize.minimize_scalar(negative, bounds=(1e-3, 3 * mean_abs), method="bounded",
                                        options={"xatol": 1e-9})
        return best.x / mean_abs

    uniform = expected_ratio(stats.uniform(-1, 2), 0.5)
    gaussian = expected_ratio(stats.norm(), np.sqrt(2 / np.pi))
    np.testing.assert_allclose(uniform, 2 / 3, atol=1e-4)
    np.testing.assert_allclose(gaussian, 0.768, atol=1e-3)
    assert abs(uniform - 0.7) > 0.03 and abs(gaussian - 0.7) > 0.06
    rng = np.random.default_rng(0)
    for sample, ratio in ((rng.uniform(-1, 1, 200_000), uniform),
                          (rng.normal(size=200_000), gaussian)):
        magnitude = np.abs(sample)
        grid = np.linspace(0.5, 0.9, 81) * magnitude.mean()
        best = grid[np.argmax([_twn_objective(magnitude, d) for d in grid])]
        assert abs(best / magnitude.mean() - ratio) <= 0.01
        # ternarize's own threshold is the fixed 0.7 E|W|, not the optimum
        _, _, delta = ternarize(sample)
        np.testing.assert_allclose(delta / magnitude.mean(), 0.7, rtol=1e-9)
