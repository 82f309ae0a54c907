"""Calibration functions: histogram quantiles and percentiles, the streaming histogram, NVIDIA's
and MXNet's entropy (KL) calibration, MSE range search."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.quant import (
    HistogramKLObserver,
    PercentileObserver,
    SignedHistogram,
    abs_percentile_threshold,
    fake_quantize,
    histogram_quantile,
    kl_divergences_mxnet,
    kl_divergences_nvidia,
    kl_threshold_mxnet,
    kl_threshold_nvidia,
    mse_clip_range,
    qparams,
    tail_percentile_range,
)

from quant_helpers import float_arrays, qranges


@given(x=float_arrays(np.float64, st.integers(1, 200), bound=1e3), bins=st.integers(1, 64),
       q=st.floats(0, 100))
def test_histogram_quantile_within_a_bin(x, bins, q):
    """The estimate lies within one bin width of the order statistic x_(ceil(qN/100))."""
    counts, edges = np.histogram(x, bins=bins)
    estimate = histogram_quantile(counts, edges, q)
    rank = max(math.ceil(q / 100 * x.size), 1)
    exact = np.sort(x)[rank - 1]
    assert abs(estimate - exact) <= (edges[1] - edges[0]) * (1 + 1e-9) + 1e-12


def _recount(rows, width, n_bins):
    """Direct histogram of a (C, N) array with the final widths (bin m holds |x| in (m w, (m+1) w])."""
    pos, neg = np.zeros((rows.shape[0], n_bins)), np.zeros((rows.shape[0], n_bins))
    for c, row in enumerate(rows):
        w = width[c] if width[c] > 0 else 1.0
        for value in row:
            m = max(math.ceil(abs(value) / w) - 1, 0)
            (pos if value >= 0 else neg)[c, m] += 1
    return pos, neg


@given(
    batches=st.lists(
        hnp.arrays(np.float64, (2, 12), elements=st.integers(-8, 8).map(float) | st.floats(-8, 8, width=32)),
        min_size=1, max_size=4,
    ),
    scales=st.lists(st.sampled_from([0.0, 2.0**-10, 0.25, 1.0, 3.0, 16.0, 1e3]), min_size=4, max_size=4),
    bins=st.sampled_from([4, 7, 8, 16]),
)
def test_signed_histogram_equals_recount(batches, scales, bins):
    """Growing the range appends bins (or, past 2 * bins, merges bin pairs); the result equals
    counting everything again with the final widths, and every bin lies inside the observed
    range: n = ceil(max|x| / w) bins, the last one holding the maximum. Integer-valued data puts
    many values exactly on bin edges."""
    histogram = SignedHistogram(2, bins)
    seen = [batch * scale for batch, scale in zip(batches, scales)]
    for rows in seen:
        histogram.update(rows)
    rows = np.concatenate(seen, axis=1)
    pos, neg = _recount(rows, histogram.width, 2 * bins)
    np.testing.assert_array_equal(histogram.pos, pos)
    np.testing.assert_array_equal(histogram.neg, neg)
    np.testing.assert_array_equal(histogram.min, rows.min(axis=1))
    np.testing.assert_array_equal(histogram.max, rows.max(axis=1))
    for c, peak in enumerate(np.abs(rows).max(axis=1)):
        counts, edges = histogram.magnitude(c)
        if peak == 0:
            assert counts.size == 1 and histogram.width[c] == 0
            continue
        assert counts.size == math.ceil(peak / histogram.width[c]) and bins <= counts.size <= 2 * bins
        assert counts[-1] > 0 and edges[-2] < peak <= edges[-1]
        assert counts.sum() == rows.shape[1]


def _kl(p, q):
    """KL of the normalised histograms, as ``scipy.stats.entropy`` computes it, term by term."""
    p_sum, q_sum = sum(p), sum(q)
    total = 0.0
    for pk, qk in zip(p, q):
        if pk > 0:
            if qk == 0:
                return math.inf
            total += pk / p_sum * math.log((pk / p_sum) / (qk / q_sum))
    return total


def _nvidia_reference(counts, num_bits, unsigned, start_bin, stride):
    """Divergences of pytorch-quantization's ``_compute_amax_entropy``, bin by bin from its
    description: bins[0] = bins[1]; chunks from np.digitize over linspace(0, i, n + 1); Q over
    the bins with a non-zero count; outliers into P's last bin."""
    bins = [float(c) for c in counts]
    bins[0] = bins[1]
    n = 2 ** (num_bits - 1 + int(unsigned))
    divergences = []
    for i in range(start_bin, len(bins) + 1, stride):
        chunk = np.digitize(range(i), np.linspace(0, i, n + 1)) - 1
        totals, sizes = [0.0] * n, [0] * n
        for k in range(i):
            if bins[k] != 0:
                totals[chunk[k]] += bins[k]
                sizes[chunk[k]] += 1
        q = [totals[chunk[k]] / sizes[chunk[k]] if bins[k] != 0 else 0.0 for k in range(i)]
        p = bins[:i]
        p[-1] += sum(bins[i:])
        divergences.append(_kl(p, q))
    return divergences


def _chosen(divergences, last):
    """Index of the first or last minimiser, ties judged with a relative tolerance (the two
    computations round differently)."""
    best = min(divergences)
    ties = [i for i, d in enumerate(divergences) if d <= best + 1e-12 * max(1.0, abs(best))]
    return ties[-1] if last else ties[0]


@given(counts=st.lists(st.integers(0, 40), min_size=2, max_size=50).filter(lambda c: sum(c[1:]) > 0),
       num_bits=st.integers(1, 4), unsigned=st.booleans(), data=st.data())
def test_nvidia_kl_matches_a_loop_over_the_description(counts, num_bits, unsigned, data):
    start_bin = data.draw(st.integers(1, len(counts)))
    stride = data.draw(st.integers(1, 3))
    expected = _nvidia_reference(counts, num_bits, unsigned, start_bin, stride)
    got = kl_divergences_nvidia(np.array(counts), num_bits, unsigned, start_bin, stride)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    edges = np.arange(len(counts) + 1) * 0.5
    threshold = kl_threshold_nvidia(np.array(counts), edges, num_bits, unsigned, start_bin, stride)
    assert threshold == edges[start_bin + _chosen(expected, last=True) * stride]


def _smooth(p, eps=1e-4):
    zeros = sum(1 for v in p if v == 0)
    if zeros == len(p):
        return None
    taken = eps * zeros / (len(p) - zeros)
    return [eps if v == 0 else v - taken for v in p]


def _mxnet_reference(hist, n_quantized, half_widths=None):
    """Divergences of MXNet's ``_get_optimal_threshold``, bin by bin from its description, for
    every half-width i (or the given ones)."""
    zero = len(hist) // 2
    divergences = []
    for i in half_widths or range(n_quantized // 2, zero + 1):
        sliced = [float(v) for v in hist[zero - i:zero + i + 1]]
        p = list(sliced)
        p[0] += sum(hist[:zero - i])
        p[-1] += sum(hist[zero + i + 1:])
        merged = len(sliced) // n_quantized
        q = [0.0] * len(sliced)
        for j in range(n_quantized):
            start = j * merged
            stop = len(sliced) if j == n_quantized - 1 else start + merged
            total = sum(sliced[start:stop])
            support = [k for k in range(start, stop) if p[k] != 0]
            for k in support:
                q[k] = total / len(support)
        p, q = _smooth(p), _smooth(q)
        divergences.append(math.inf if q is None else _kl(p, q))
    return divergences


@given(half=st.integers(1, 20), n_quantized=st.sampled_from([1, 3, 5, 7]), data=st.data())
def test_mxnet_kl_matches_a_loop_over_the_description(half, n_quantized, data):
    size = 2 * half + 1
    if size < n_quantized:
        return
    hist = data.draw(st.lists(st.integers(0, 30), min_size=size, max_size=size).filter(lambda h: sum(h) > 0))
    expected = _mxnet_reference(hist, n_quantized)
    np.testing.assert_allclose(kl_divergences_mxnet(np.array(hist), n_quantized), expected,
                               rtol=1e-9, atol=1e-12)
    edges = np.linspace(-3.0, 3.0, size + 1)
    threshold = kl_threshold_mxnet(np.array(hist), edges, n_quantized)
    i = n_quantized // 2 + _chosen(expected, last=False)
    assert threshold == edges[half + i + 1]
    assert math.isclose(threshold, (i + 0.5) * (edges[1] - edges[0]), rel_tol=1e-9)


def test_relu_gaussian_thresholds_of_the_two_conventions():
    """ReLU of 10^6 standard normals: each convention's threshold equals its source's own
    algorithm run by the loops above, NVIDIA's at the upper edge i·w of its 2048-bin histogram
    of |x|, MXNet's at (i + 1/2)·w of its 8001-bin signed histogram. Neither is pulled in by
    the half of the data at exactly 0 (NVIDIA copies bin 1 into bin 0; MXNet's zero bin is the
    centre of every slice): both clip only the far tail, beyond 4."""
    x = np.maximum(np.random.default_rng(1).standard_normal(1_000_000), 0.0)
    counts, edges = np.histogram(x, bins=2048, range=(0.0, x.max()))
    nvidia = kl_threshold_nvidia(counts, edges)
    expected = _nvidia_reference(counts, 8, False, 128, 1)
    assert nvidia == edges[128 + _chosen(expected, last=True)]
    hist, hist_edges = np.histogram(x, bins=8001, range=(-x.max(), x.max()))
    mxnet = kl_threshold_mxnet(hist, hist_edges, 255)
    divergences = kl_divergences_mxnet(hist, 255)
    assert mxnet == hist_edges[4000 + 127 + _chosen(divergences, last=False) + 1]
    chosen = _chosen(divergences, last=False)
    # the loop over all 3874 candidates takes minutes in pure Python: check a few, the chosen one too
    for i in (0, 1000, chosen, divergences.size - 1):
        assert math.isclose(divergences[i], _mxnet_reference(hist, 255, [127 + i])[0], rel_tol=1e-9)
    assert 4.0 < nvidia < x.max() and 4.0 < mxnet < x.max()


def test_kl_observer_is_nvidia_on_its_histogram():
    """One batch through HistogramKLObserver gives NVIDIA's threshold on the histogram NVIDIA's
    calibrator collects, np.histogram(|x|, bins, range=(0, max|x|))."""
    x = np.random.default_rng(3).standard_normal((64, 50)).astype(np.float32) ** 3
    for unsigned, data in ((False, x), (True, np.abs(x))):
        observer = HistogramKLObserver(8, bins=512)
        observer(data)
        counts, edges = np.histogram(np.abs(data).astype(np.float64), bins=512, range=(0.0, float(np.abs(data).max())))
        expected = kl_threshold_nvidia(counts, edges, 8, unsigned)
        np.testing.assert_allclose(observer.threshold(), min(expected, float(np.abs(data).max())), rtol=1e-6)


def _order_statistic(x, q):
    """x_(ceil(qN/100)): the smallest value with at least q % of the data at or below it."""
    return float(np.percentile(x, q, method="inverted_cdf"))


@given(x=float_arrays(np.float64, st.integers(1, 300), bound=1e3), p=st.floats(50, 100),
       bins=st.sampled_from([8, 64, 512]))
def test_percentiles_match_numpy_within_a_bin(x, p, bins):
    """tail_percentile_range is (Q_(100-p)(x), Q_p(x)) and abs_percentile_threshold Q_p(|x|),
    each within one bin width of NumPy's order statistic."""
    histogram = SignedHistogram(1, bins)
    histogram.update(x.reshape(1, -1))
    w = histogram.width[0] if histogram.width[0] > 0 else 1.0
    lo, hi = tail_percentile_range(*histogram.signed(0), p)
    assert abs(lo - _order_statistic(x, 100 - p)) <= w * (1 + 1e-9)
    assert abs(hi - _order_statistic(x, p)) <= w * (1 + 1e-9)
    t = abs_percentile_threshold(*histogram.magnitude(0), p)
    assert abs(t - _order_statistic(np.abs(x), p)) <= w * (1 + 1e-9)


def test_percentile_observer_matches_numpy_within_a_bin():
    """Both methods on skewed data seen in three batches of growing range: 'tails' clips
    (100 - p) % in each tail, 'abs' (100 - p) % of the largest magnitudes (Wu et al. 2020)."""
    rng = np.random.default_rng(0)
    batches = [rng.gamma(2.0, s, (4, 500)) - 1.0 for s in (0.5, 1.0, 3.0)]
    x = np.concatenate([b.ravel() for b in batches])
    for p in (90.0, 99.0, 99.9):
        tails = PercentileObserver(percentile=p, bins=256)
        absolute = PercentileObserver(percentile=p, bins=256, method="abs")
        for b in batches:
            tails(b)
            absolute(b)
        w = tails.histogram.width[0]
        lo, hi = tails.range()
        assert abs(lo - _order_statistic(x, 100 - p)) <= w and abs(hi - _order_statistic(x, p)) <= w
        t = _order_statistic(np.abs(x), p)
        lo, hi = absolute.range()
        assert abs(hi - min(t, x.max())) <= w and abs(lo - max(-t, x.min())) <= w


@given(rows=hnp.arrays(np.float32, (3, 20), elements=st.floats(-10, 10, width=32)),
       qrange=qranges(2, 8), symmetric=st.booleans(), grid=st.integers(1, 12))
def test_mse_clip_range_is_grid_argmin(rows, qrange, symmetric, grid):
    qmin, qmax = qrange
    lo, hi = mse_clip_range(rows, rows.min(axis=1), rows.max(axis=1), qmin, qmax, symmetric, grid)
    for c in range(3):
        def error(a, b):
            scale, zp = qparams(a, b, qmin, qmax, symmetric)
            return float(np.sum((rows[c].astype(np.float64) - fake_quantize(rows[c], scale, zp, qmin, qmax)) ** 2))

        candidates = [error(np.float32(k / grid) * rows[c].min(), np.float32(k / grid) * rows[c].max())
                      for k in range(1, grid + 1)]
        # the search and this check round the grid's ranges to float32 in different orders,
        # which moves the errors by a few float32 ulps
        assert error(lo[c], hi[c]) <= min(candidates) * (1 + 1e-5) + 1e-12
        assert error(lo[c], hi[c]) <= candidates[-1] * (1 + 1e-5) + 1e-12  # never worse than min-max


def test_kl_conventions_name_bad_input():
    edges = np.arange(11.0)
    with pytest.raises(ValueError, match="start_bin=128 exceeds the 10 bins"):
        kl_threshold_nvidia(np.ones(10), edges)
    with pytest.raises(ValueError, match="at least 2 bins"):
        kl_divergences_nvidia(np.ones(1), start_bin=1)
    with pytest.raises(ValueError, match="edges one longer"):
        kl_threshold_nvidia(np.ones(10), np.arange(10.0), start_bin=2)
    with pytest.raises(ValueError, match="odd number of bins"):
        kl_divergences_mxnet(np.ones(10), 3)
    with pytest.raises(ValueError, match="percentile must be in"):
        tail_percentile_range(np.ones(4), np.arange(5.0), 40)


def test_nvidia_defaults_on_a_sparse_histogram():
    """The defaults are NVIDIA's (8 bits, signed: 128 chunks, from bin 128, stride 1): a
    300-bin histogram with empty bins, including kept-range ends with outliers behind them,
    gives the loop's divergences and the last minimiser's edge."""
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 9, 300) * (rng.random(300) < 0.6)
    counts[[140, 141, 200]] = 0
    expected = _nvidia_reference(counts, 8, False, 128, 1)
    np.testing.assert_allclose(kl_divergences_nvidia(counts), expected, rtol=1e-9, atol=1e-12)
    edges = np.arange(301) * 0.25
    assert kl_threshold_nvidia(counts, edges) == edges[128 + _chosen(expected, last=True)]


def test_histograms_and_percentiles_are_validated():
    """Negative, non-finite or all-zero counts and non-increasing edges are refused; the
    percentile may be 100 (the last non-empty edge) but not more."""
    edges = np.arange(5.0)
    for counts in ([1, -1, 1, 1], [1, np.nan, 1, 1], [0, 0, 0, 0]):
        with pytest.raises(ValueError, match="counts must be finite"):
            tail_percentile_range(np.array(counts, float), edges, 90)
    with pytest.raises(ValueError, match="strictly increasing"):
        tail_percentile_range(np.ones(4), np.array([0.0, 1.0, 1.0, 2.0, 3.0]), 90)
    assert tail_percentile_range(np.array([0, 2, 2, 0]), edges, 100) == (1.0, 3.0)
    with pytest.raises(ValueError, match="percentile must be in"):
        tail_percentile_range(np.ones(4), edges, 100.5)


def test_mse_clip_range_defaults_to_an_affine_100_point_grid():
    """Leaving symmetric and grid out equals symmetric=False, grid=100 on signed rows."""
    rows = np.random.default_rng(6).standard_normal((2, 200)).astype(np.float32)
    lo, hi = rows.min(axis=1), rows.max(axis=1)
    np.testing.assert_array_equal(mse_clip_range(rows, lo, hi, -128, 127),
                                  mse_clip_range(rows, lo, hi, -128, 127, False, 100))
    assert not np.array_equal(mse_clip_range(rows, lo, hi, -8, 7),
                              mse_clip_range(rows, lo, hi, -8, 7, False, 101))
