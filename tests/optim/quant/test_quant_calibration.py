"""Calibration functions: histogram quantiles, the streaming histogram, KL and MSE range search."""
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.quant import (
    SignedHistogram,
    fake_quantize,
    histogram_quantile,
    kl_clip_bins,
    kl_divergences,
    mse_clip_range,
    qparams,
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


def _recount(rows, width, bins):
    """Direct histogram of a (C, N) array with the final widths (bin m holds |x| in (m w, (m+1) w])."""
    pos, neg = np.zeros((rows.shape[0], bins)), np.zeros((rows.shape[0], bins))
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
    """Growing the range merges bin pairs; the result equals counting everything again with the
    final widths, which cover every observed |x|. Integer-valued data puts many values exactly
    on bin edges."""
    histogram = SignedHistogram(2, bins)
    seen = [batch * scale for batch, scale in zip(batches, scales)]
    for rows in seen:
        histogram.update(rows)
    rows = np.concatenate(seen, axis=1)
    pos, neg = _recount(rows, histogram.width, bins)
    np.testing.assert_array_equal(histogram.pos, pos)
    np.testing.assert_array_equal(histogram.neg, neg)
    np.testing.assert_array_equal(histogram.min, rows.min(axis=1))
    np.testing.assert_array_equal(histogram.max, rows.max(axis=1))
    assert np.all(np.abs(rows).max(axis=1) <= bins * histogram.width)


def _kl_reference(counts, n_levels, i):
    """KL(P || Q) for i kept bins, written out loop by loop from Migacz 2017."""
    p = [float(c) for c in counts[:i]]
    p[-1] += float(sum(counts[i:]))
    merged = i // n_levels
    q = [0.0] * i
    for j in range(n_levels):
        start, stop = j * merged, (j + 1) * merged if j < n_levels - 1 else i
        total = float(sum(counts[start:stop]))
        support = [k for k in range(start, stop) if p[k] > 0]
        for k in support:
            q[k] = total / len(support)
    p_sum, q_sum = sum(p), sum(q)
    kl = 0.0
    for pk, qk in zip(p, q):
        if pk > 0:
            if qk == 0:
                return math.inf
            kl += pk / p_sum * math.log((pk / p_sum) / (qk / q_sum))
    return kl


@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=40).filter(lambda c: sum(c) > 0),
       n_levels=st.integers(2, 8))
def test_kl_clip_bins_matches_brute_force(counts, n_levels):
    chosen = kl_clip_bins(np.array(counts), n_levels)
    if len(counts) <= n_levels:
        assert chosen == len(counts)
        return
    assert n_levels <= chosen <= len(counts)
    divergences = [_kl_reference(counts, n_levels, i) for i in range(n_levels, len(counts) + 1)]
    assert math.isfinite(divergences[-1])
    np.testing.assert_allclose(kl_divergences(np.array(counts), n_levels), divergences, rtol=1e-9, atol=1e-12)
    assert _kl_reference(counts, n_levels, chosen) <= min(divergences) + 1e-12


def test_kl_clips_a_far_outlier():
    """Gaussian data plus one value at 50 sigma: the entropy threshold stays near the bulk."""
    x = np.random.default_rng(0).standard_normal(100_000)
    x[0] = 50.0
    histogram = SignedHistogram(1, 2048)
    histogram.update(x.reshape(1, -1))
    threshold = kl_clip_bins(histogram.magnitude(0), 128) * histogram.width[0]
    assert 3.0 < threshold < 10.0


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
