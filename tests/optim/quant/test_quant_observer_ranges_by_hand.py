"""Observers' documented defaults and the histogram L2 search against PyTorch on histograms that
move both ends of the range (PyTorch's own distributions only ever trim the right end)."""
import numpy as np
import pytest

from optim.quant import (HistogramKLObserver, HistogramL2Observer, MinMaxObserver, MSEObserver,
                         MovingAverageMinMaxObserver, PercentileObserver, histogram_l2_search)


@pytest.mark.parametrize("cls", [MinMaxObserver, MovingAverageMinMaxObserver,
                                 PercentileObserver, HistogramKLObserver, MSEObserver,
                                 HistogramL2Observer])
def test_observers_default_to_signed_8_bit_affine_ranges(cls):
    """bits = 8, signed, affine (torch.ao.quantization's observers default to 8-bit affine
    with a signed or unsigned dtype): codes [-128, 127], and data in [0, 2] keep a zero point of
    -128 (an affine range), not 0 (a symmetric one)."""
    observer = cls()
    assert (observer.qmin, observer.qmax, observer.symmetric) == (-128, 127, False)
    observer(np.linspace(0.0, 2.0, 4096, dtype=np.float32))
    _, zero_point = observer.calculate_qparams()
    assert int(zero_point) == -128


def test_histogram_observers_default_to_2048_bins_and_l2_search_to_256_levels():
    """PyTorch's HistogramObserver defaults: 2048 source bins, 2^8 destination bins."""
    assert HistogramL2Observer().n_bins == 2048 and HistogramKLObserver().n_bins == 2048
    assert PercentileObserver().n_bins == 2048


def _random_histogram(seed):
    rng = np.random.default_rng(seed)
    bins = int(rng.integers(8, 64))
    counts = rng.integers(0, 50, bins).astype(np.float64)
    counts[:rng.integers(0, bins // 3)] = 0           # empty bins at the left end, sometimes
    if rng.random() < 0.5:
        counts[bins - rng.integers(0, bins // 3):] = 0  # and at the right end
    counts[rng.integers(0, bins)] += 1
    lo = float(np.float32(rng.uniform(-5, 0)))
    return counts, lo, float(np.float32(lo + rng.uniform(0.5, 10)))


@pytest.mark.parametrize("seed", range(40))
def test_l2_search_equals_torch_on_histograms_trimmed_at_both_ends(seed):
    """Optional oracle: HistogramObserver._non_linear_param_search on the same histogram and
    range (its default 2^8 destination bins; ours by default too)."""
    torch = pytest.importorskip("torch")
    counts, lo, hi = _random_histogram(seed)
    reference = torch.ao.quantization.HistogramObserver(bins=counts.size)
    reference.histogram = torch.tensor(counts, dtype=torch.float32)
    reference.min_val, reference.max_val = torch.tensor(lo), torch.tensor(hi)
    expected = [float(v) for v in reference._non_linear_param_search()]
    np.testing.assert_allclose(histogram_l2_search(counts, lo, hi), expected, rtol=1e-5,
                               atol=1e-5)


def test_l2_search_accepts_its_smallest_inputs_and_refuses_each_bad_one():
    """Two bins, a constant range (x_min = x_max) and 2 destination bins are valid; a NaN
    bound or x_min > x_max alone is refused."""
    assert histogram_l2_search([3.0, 4.0], 1.0, 1.0) == (1.0, 1.0)
    lo, hi = histogram_l2_search([3.0, 0.0, 4.0], 0.0, 3.0, dst_bins=2)
    assert 0.0 <= lo < hi <= 3.0
    for bounds in ((np.nan, 1.0), (0.0, np.inf), (2.0, 1.0)):
        with pytest.raises(ValueError, match="x_min"):
            histogram_l2_search([3.0, 4.0], *bounds)
