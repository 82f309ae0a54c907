"""Calibration at its edges, worked by hand: NVIDIA's entropy threshold (ties go to the widest
range within a stated tolerance, empty last bins, the zero-bin rule, fractional counts), the
MSE grid, MXNet's level count and the streaming histogram's growth."""
import numpy as np
import pytest

from optim.quant import calibration
from optim.quant.calibration import (SignedHistogram, kl_divergences_mxnet, kl_divergences_nvidia,
                                     kl_threshold_mxnet, kl_threshold_nvidia, mse_clip_range,
                                     squared_error)


def test_ties_go_to_the_widest_range():
    """200 bins, data in the first 130, unsigned 8-bit: 256 levels >= 200 bins, so every bin is
    its own level and Q = P once no data is clipped: KL = 0 for every candidate from 130 on.
    The last minimiser, 200 bins, sets the threshold: the histogram's upper edge."""
    counts = np.zeros(200)
    counts[:130] = np.arange(1, 131)
    edges = np.arange(201) * 0.5
    divergences = kl_divergences_nvidia(counts, 8, True, start_bin=128)
    assert np.all(divergences[2:] == 0) and divergences[0] > 0
    assert kl_threshold_nvidia(counts, edges, 8, True, start_bin=128) == 100.0


def test_an_empty_last_bin_without_clipped_data_is_finite():
    """A candidate whose last kept bin is empty and clips nothing (trailing empty bins) has a
    finite divergence (here 0); one whose last bin is empty but clips data is infinite."""
    counts = np.array([3.0, 3.0, 2.0, 0.0, 0.0])
    divergences = kl_divergences_nvidia(counts, 8, True, start_bin=2)
    assert np.isfinite(divergences[1:]).all()  # candidates 3 bins (clips nothing) and on
    gapped = np.array([3.0, 3.0, 0.0, 2.0])
    assert np.isinf(kl_divergences_nvidia(gapped, 8, True, start_bin=3)[0])


def test_the_zero_bin_copies_bin_1_and_must_leave_mass():
    """h[0] := h[1] (NVIDIA's rule): counts (5, 0, 0, 0) leave nothing and are refused;
    (0, 0.5, 0, 0) leave a mass of exactly 1, enough."""
    with pytest.raises(ValueError, match="zero bin"):
        kl_divergences_nvidia(np.array([5.0, 0.0, 0.0, 0.0]), 8, start_bin=2)
    assert np.isfinite(kl_divergences_nvidia(np.array([0.0, 0.5, 0.0, 0.0]), 8,
                                             start_bin=2)).all()


def test_fractional_counts_use_x_log_x():
    """Counts (0.5, 0.5, 0.25) (below 1, where x log x < 0), 256 levels, each bin its own:
    kept whole, Q = P and KL = 0; kept to 2 bins, the clipped 0.25 joins the last kept bin,
    P = (0.5, 0.75) / 1.25, while Q = (0.5, 0.5) / 1: KL = Σ p log(p / q)."""
    counts = np.array([0.5, 0.5, 0.25])
    kl2, kl3 = kl_divergences_nvidia(counts, 8, True, start_bin=2)
    assert kl3 == 0.0
    p = np.array([0.5, 0.75]) / 1.25
    q = np.array([0.5, 0.5]) / 1.0
    assert kl2 == pytest.approx(np.sum(p * np.log(p / q)), rel=1e-12)


def test_mse_clip_range_defaults_to_affine_with_a_100_point_grid():
    """Rows of zeros with a given range [-1, 1]: every α has error 0, the tie goes to the
    smallest α on {1/100, ..., 1}, so the range shrinks to [-0.01, 0.01] (α = 0 is not on the
    grid). On (1, 2.8, -0.4, 2.8) with codes -2..1 the affine default shrinks the range to
    α = 0.88 while the symmetric grid keeps α = 1."""
    lo, hi = mse_clip_range(np.zeros((1, 4)), np.array([-1.0]), np.array([1.0]), -128, 127)
    assert (lo[0], hi[0]) == (-0.01, 0.01)
    rows = np.array([[1.0, 2.8, -0.4, 2.8]])
    x_min, x_max = np.array([-0.4]), np.array([2.8])
    lo, hi = mse_clip_range(rows, x_min, x_max, -2, 1)
    np.testing.assert_allclose([lo[0], hi[0]], [-0.4 * 0.88, 2.8 * 0.88])
    alphas = np.arange(1, 101) / 100
    errors = [squared_error(rows, a * x_min, a * x_max, -2, 1)[0] for a in alphas]
    assert alphas[np.argmin(errors)] == 0.88
    lo, hi = mse_clip_range(rows, x_min, x_max, -2, 1, symmetric=True)
    assert (lo[0], hi[0]) == (-0.4, 2.8)


def _fake_divergences(monkeypatch, values):
    monkeypatch.setattr(calibration, "kl_divergences_nvidia",
                        lambda *args, **kwargs: np.array(values))


@pytest.mark.parametrize("values, last", [
    ([0.5, 0.5 + 0.9e-12], 1),   # within 1e-12 of a minimum below 1: a tie, the wider wins
    ([0.5, 0.5 + 1.5e-12], 0),   # outside
    ([4.0, 4.0 + 3.9e-12], 1),   # within 1e-12 · 4 of a minimum of 4
    ([4.0, 4.0 + 4.1e-12], 0)])
def test_nvidia_ties_are_within_a_relative_tolerance_of_the_minimum(monkeypatch, values, last):
    """Divergences within 1e-12 · max(1, |D_min|) of the minimum count as ties."""
    _fake_divergences(monkeypatch, values)
    counts, edges = np.ones(4), np.arange(5.0)
    assert kl_threshold_nvidia(counts, edges, start_bin=2) == edges[2 + last]


def test_mxnet_defaults_to_255_levels():
    """Signed int8: n = 255 quantized levels, candidates i = 127 ... K // 2. Data within ±3 in
    301 bins over ±4: the narrowest slice (i = 127, upper edge index 150 + 127 + 1) is best."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5000)
    hist, edges = np.histogram(x[np.abs(x) < 3], bins=301, range=(-4, 4))
    divergences = kl_divergences_mxnet(hist)
    assert divergences.size == 301 // 2 - 255 // 2 + 1
    np.testing.assert_array_equal(divergences, kl_divergences_mxnet(hist, 255))
    assert np.argmin(divergences) == 0
    assert kl_threshold_mxnet(hist, edges) == edges[150 + 127 + 1]


def test_signed_histogram_defaults_and_its_growth_boundary():
    """2048 bins by default. With 4 bins: the first batch (peak 1) sets w = 1/4; a peak of 2
    needs exactly 8 = 2 · 4 bins, the capacity, so nothing merges; a peak of 2.1 merges pairs
    (w = 1/2, 5 bins)."""
    assert SignedHistogram(3).bins == 2048
    h = SignedHistogram(1, bins=4)
    h.update(np.array([[1.0, -0.5]]))
    h.update(np.array([[2.0]]))
    assert (h.width[0], h.n_bins[0]) == (0.25, 8)
    h.update(np.array([[-2.1]]))
    assert (h.width[0], h.n_bins[0]) == (0.5, 5)
    counts, edges = h.magnitude(0)
    np.testing.assert_array_equal(counts, [1, 1, 0, 1, 1])  # |x| = 0.5, 1, 2, 2.1
    np.testing.assert_array_equal(edges, np.arange(6) * 0.5)


def test_an_all_zero_row_has_one_unit_bin_each_side():
    """Only zeros seen: one bin each side, width 1, the zeros counted on the + side at 0."""
    h = SignedHistogram(1, bins=4)
    h.update(np.zeros((1, 3)))
    counts, edges = h.signed(0)
    np.testing.assert_array_equal(counts, [0, 3])
    np.testing.assert_array_equal(edges, [-1.0, 0.0, 1.0])
    counts, edges = h.magnitude(0)
    np.testing.assert_array_equal(counts, [3])
    np.testing.assert_array_equal(edges, [0.0, 1.0])
