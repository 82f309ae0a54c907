"""NVIDIA's entropy calibration at its edges, worked by hand: ties go to the widest range,
empty last bins, the zero-bin rule and fractional counts."""
import numpy as np
import pytest

from optim.quant.calibration import kl_divergences_nvidia, kl_threshold_nvidia


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
