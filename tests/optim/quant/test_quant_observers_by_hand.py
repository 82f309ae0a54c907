"""Observers by hand: defaults, saved state, histogram percentiles, NVIDIA's KL threshold on
its two level counts, the MSE grid and PyTorch's histogram L2 search on tiny worked cases."""
import numpy as np
import pytest

from optim.quant import (HistogramKLObserver, HistogramL2Observer, MinMaxObserver, MSEObserver,
                         MovingAverageMinMaxObserver, PercentileObserver, histogram_l2_error,
                         histogram_l2_search)
from optim.quant.observers import Observer

ALL_OBSERVERS = [MinMaxObserver, MovingAverageMinMaxObserver, PercentileObserver,
                 HistogramKLObserver, MSEObserver, HistogramL2Observer]


# ---- defaults and saved state -----------------------------------------------------------------

@pytest.mark.parametrize("cls", ALL_OBSERVERS)
def test_every_observer_defaults_to_signed_8_bit_codes(cls):
    """bits = 8 signed: codes -128..127, affine (not symmetric), as torch's default qint8."""
    observer = cls()
    assert (observer.bits, observer.qmin, observer.qmax) == (8, -128, 127)
    assert observer.symmetric is False


def test_minmax_default_qparams_of_minus_one_to_three():
    """[-1, 3] on -128..127: s = 4/255, z = -128 - round(-1 / s) = -128 + round(63.75) = -64."""
    observer = MinMaxObserver()
    observer(np.array([0.5, -1.0, 3.0, 2.0]))
    scale, zero_point = observer.calculate_qparams()
    assert float(scale) == pytest.approx(4 / 255)
    assert int(zero_point) == -64


def test_minmax_state_dict_holds_copies_of_the_extremes():
    """state_dict() after [[1, -2], [3, 0.5]] is {"min": [-2], "max": [3]}; editing it later
    does not touch the observer."""
    observer = MinMaxObserver()
    observer(np.array([[1.0, -2.0], [3.0, 0.5]]))
    state = observer.state_dict()
    assert sorted(state) == ["max", "min"]
    np.testing.assert_array_equal(state["min"], [-2.0])
    np.testing.assert_array_equal(state["max"], [3.0])
    state["max"][0] = 100.0
    assert observer.range() == (-2.0, 3.0)


def test_loaded_state_takes_its_dtype_from_the_min_array():
    """The dtype is the first state key's ("min"): a float64 "max" is cast to float32."""
    observer = MinMaxObserver()
    observer.load_state_dict({"min": np.array([-1.5], np.float32),
                              "max": np.array([2.25], np.float64)})
    lo, hi = observer.range()
    assert (lo.dtype, hi.dtype) == (np.float32, np.float32)
    assert (float(lo), float(hi)) == (-1.5, 2.25)
    assert observer.state_dict()["max"].dtype == np.float32


class _RunningPeak(Observer):
    """A subclass with a single state key: the running max |x| per channel, range [-T, T]."""

    state_keys = ("peak",)

    def reset(self):
        super().reset()
        self.peak = None

    def _observe(self, rows):
        peak = np.abs(rows).max(axis=1)
        self.peak = peak if self.peak is None else np.maximum(self.peak, peak)

    def _range(self):
        return -self.peak, self.peak


def test_a_subclass_with_one_state_key_saves_and_loads_it():
    """Base-class load_state_dict with one key: (C,) arrays load, continue observing, and each
    bad shape alone (2-D, empty, C = 2 per tensor) raises ValueError."""
    observer = _RunningPeak()
    observer.load_state_dict({"peak": np.array([2.0])})
    assert observer.channels == 1 and observer.range() == (-2.0, 2.0)
    observer(np.array([1.0, -3.0]))
    assert observer.range() == (-3.0, 3.0)
    per_channel = _RunningPeak(axis=0)
    per_channel.load_state_dict({"peak": np.array([1.0, 4.0], np.float32)})
    assert per_channel.channels == 2 and per_channel.dtype == np.float32
    np.testing.assert_array_equal(per_channel.range()[1], [1.0, 4.0])
    for bad in (np.array([[2.0]]), np.array([], np.float64), np.array([1.0, 2.0])):
        with pytest.raises(ValueError, match="state arrays"):
            _RunningPeak().load_state_dict({"peak": bad})


# ---- percentile observer ----------------------------------------------------------------------

def test_percentile_histogram_has_2048_bins_by_default():
    """|x| in {0.0002, 1}: bins of width 1/2048; the 50th percentile (t = 1 of 2 counts) is the
    upper edge of bin 0, 1/2048, and x_min = 0.0002 (the observed minimum) is kept."""
    observer = PercentileObserver(percentile=50, method="abs")
    observer(np.array([1.0, 0.0002]))
    lo, hi = observer.range()
    assert float(hi) == 1 / 2048
    assert float(lo) == pytest.approx(0.0002)


def test_percentile_abs_90_of_one_to_ten():
    """|x| = 1..10 in 10 bins of width 1 (one count each): Q_90 = e_8 + (9 - 8) / 1 = 9, so the
    range is [max(-10, -9), min(9, 9)] = [-9, 9]."""
    x = np.array([1.0, -2, 3, -4, 5, -6, 7, -8, 9, -10])
    observer = PercentileObserver(percentile=90, method="abs", bins=10)
    observer(x)
    lo, hi = observer.range()
    assert (float(lo), float(hi)) == pytest.approx((-9.0, 9.0))


def test_percentile_abs_per_channel_clamps_each_channel_to_its_own_extremes():
    """Two channels of three values, p = 100: T_c = max|x_c|, range [max(min_c, -T_c),
    min(max_c, T_c)]: [-1, 2] and [-3, 1]."""
    x = np.array([[-1.0, 0.5, 2.0], [-3.0, 1.0, 0.5]])
    observer = PercentileObserver(percentile=100, method="abs", axis=0)
    observer(x)
    lo, hi = observer.range()
    np.testing.assert_allclose(lo, [-1.0, -3.0])
    np.testing.assert_allclose(hi, [2.0, 1.0])


def test_percentile_tails_per_channel_with_more_values_than_channels():
    """Per channel (C = 2, N = 5), p = 100 clips nothing: the per-channel min and max."""
    x = np.array([[-1.0, 0.0, 0.5, 2.0, 1.0], [3.0, 4.0, -0.5, 0.25, 1.0]])
    observer = PercentileObserver(percentile=100, axis=0)
    observer(x)
    lo, hi = observer.range()
    np.testing.assert_allclose(lo, [-1.0, -0.5])
    np.testing.assert_allclose(hi, [2.0, 4.0])


@pytest.mark.parametrize("percentile", [49.9, 100.5, 101])
def test_percentile_outside_50_to_100_alone_raises(percentile):
    """50 <= p <= 100; each bound is inclusive (50 and 100 are accepted)."""
    PercentileObserver(percentile=50)
    PercentileObserver(percentile=100)
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(percentile=percentile)


# ---- NVIDIA KL observer -----------------------------------------------------------------------

def _uniform_with_one_outlier(with_zero):
    """20 000 values in (0, 1] and one at 2: with bins=256 the |x| histogram has width 1/128,
    bins 0..127 filled, 128..254 empty, 255 holding the outlier."""
    x = 1.0 - np.random.default_rng(0).uniform(0.0, 1.0, 20_000)
    x[0] = 0.0 if with_zero else x[0]
    return np.append(x, 2.0)


def test_kl_signed_threshold_stops_at_128_bins():
    """Signed int8 compares against 128 levels: i = 128 (those bins exactly, the outlier added
    to the last) is the only finite candidate besides i = 256 (pairs merged), and the cheaper,
    so T = 128 / 128 = 1; candidates 129..255 end on an empty bin (infinite divergence)."""
    observer = HistogramKLObserver(symmetric=True, bins=256)
    observer(_uniform_with_one_outlier(with_zero=True))
    assert float(observer.threshold()) == 1.0
    lo, hi = observer.range()
    assert (float(lo), float(hi)) == (0.0, 1.0)


@pytest.mark.parametrize("with_zero", [True, False])
def test_kl_affine_never_negative_data_uses_256_levels(with_zero):
    """Affine (symmetric=False) data with min >= 0 (also min = 0 exactly) is unsigned: 256
    levels hold all 256 bins exactly, divergence 0 at i = 256, so T = max|x| = 2."""
    observer = HistogramKLObserver(bins=256)
    observer(_uniform_with_one_outlier(with_zero))
    assert float(observer.threshold()) == 2.0
    lo, hi = observer.range()
    assert float(hi) == 2.0 and float(lo) >= 0.0


def test_kl_affine_data_with_a_negative_value_stays_signed():
    """One negative value makes the affine observer signed again: T = 1 as in the symmetric
    case, and the range is [max(-0.5, -1), min(2, 1)] = [-0.5, 1]."""
    x = _uniform_with_one_outlier(with_zero=False)
    x[1] = -0.5
    observer = HistogramKLObserver(bins=256)
    observer(x)
    assert float(observer.threshold()) == 1.0
    lo, hi = observer.range()
    assert (float(lo), float(hi)) == (-0.5, 1.0)


# ---- MSE observer -----------------------------------------------------------------------------

def _fake_quant_error(x, lo, hi):
    """sum (x - fq(x))^2 for the affine int8 grid of [lo, hi] (PyTorch's qparams, by hand)."""
    r_min, r_max = min(lo, 0.0), max(hi, 0.0)
    scale = max((r_max - r_min) / 255, float(np.finfo(np.float32).eps))
    zero = np.clip(-128 - np.round(r_min / scale), -128, 127)
    q = np.clip(np.round(x / scale) + zero, -128, 127)
    return float(np.sum((x - (q - zero) * scale) ** 2))


def _mse_by_brute_force(x, grid):
    """alpha* = the first minimiser over alpha = k / grid, k = 1..grid, of the error of
    [alpha min x, alpha max x]."""
    lo, hi = x.min(), x.max()
    errors = [_fake_quant_error(x, k / grid * lo, k / grid * hi) for k in range(1, grid + 1)]
    alpha = (int(np.argmin(errors)) + 1) / grid
    return alpha * lo, alpha * hi


def _mse_rows():
    """Two rows of 5002 values: a bulk with one outlier on each side, so alpha* < 1."""
    rng = np.random.default_rng(5)
    return np.stack([np.append(rng.normal(0, 1, 5000), [-12.0, 9.0]),
                     np.append(rng.uniform(-1, 2, 5000), [-6.0, 0.5])])


def test_mse_default_grid_of_100_per_tensor():
    """Default grid = 100 and int8: the range is the brute-force argmin over alpha = k/100
    (0.98 here: [-11.76, 8.82] for min -12 and max 9)."""
    row = _mse_rows()[0]
    observer = MSEObserver()
    observer(row)
    lo, hi = observer.range()
    assert (float(lo), float(hi)) == pytest.approx(_mse_by_brute_force(row, 100), rel=1e-12)
    assert (float(lo), float(hi)) == pytest.approx((-11.76, 8.82), rel=1e-12)


def test_mse_per_channel_searches_each_row():
    """axis=0: each row gets its own brute-force alpha over its own min and max."""
    rows = _mse_rows()
    observer = MSEObserver(axis=0)
    observer(rows[:, :3000])
    observer(rows[:, 3000:])
    lo, hi = observer.range()
    for c in range(2):
        assert (lo[c], hi[c]) == pytest.approx(_mse_by_brute_force(rows[c], 100), rel=1e-12)


def test_mse_keeps_a_copy_of_what_it_saw():
    """grid = 1 is the min-max range; overwriting the caller's array afterwards changes
    nothing."""
    x = np.array([-1.0, 3.0])
    observer = MSEObserver(grid=1)
    observer(x)
    x[:] = 0.0
    assert observer.range() == (-1.0, 3.0)


# ---- histogram L2 error and search ------------------------------------------------------------

def test_l2_error_with_destination_width_one():
    """counts [1, 1], bin width 1, bins 0..1 onto 2 destination bins of width 1: each bin is
    int_0^1 (x - 1/2)^2 dx = 1/12, so E = 1/6."""
    assert histogram_l2_error([1.0, 1.0], 1.0, 0, 1, 2) == pytest.approx(1 / 6)


def test_l2_error_of_a_zero_width_range_is_float_zero():
    """Bin width 0 means destination width 0: the error is 0.0 (a float)."""
    error = histogram_l2_error([3.0, 4.0], 0.0, 0, 1, 256)
    assert isinstance(error, float) and error == 0.0


def test_l2_search_two_bins_default_256_levels():
    """counts [1, 1] on [-1, 3] (width 2): the first move trims the end (l - s = 0, e - r = 1)
    to bin 0; nothing moves after that, so the range is [-1, -1 + 2] = [-1, 1]."""
    assert histogram_l2_search([1.0, 1.0], -1.0, 3.0) == pytest.approx((-1.0, 1.0))


def test_l2_search_two_destination_bins():
    """dst_bins = 2 is allowed: counts [1, 1] on [0, 2] -> [0, 1], as with 256."""
    assert histogram_l2_search([1.0, 1.0], 0.0, 2.0, dst_bins=2) == pytest.approx((0.0, 1.0))
    with pytest.raises(ValueError, match="dst_bins"):
        histogram_l2_search([1.0, 1.0], 0.0, 2.0, dst_bins=1)


def test_l2_search_moves_the_start_past_empty_bins_then_stops():
    """counts [0, 0, 0, 5, 5, 5, 5, 5] on [0, 8], 4 levels. Move 1: l = 3, r = 6, l - s = 3 >
    e - r = 1, so start = 3: E = 5 * 4 * 1.25^3 / 12 = 3.255. Move 2 (end to 6) clips bin 7:
    E = 4 * 5 / 12 + 5 * (1.5^3 - 0.5^3) / 3 = 7.083 > 3.255, stop: [3, 8]."""
    counts = [0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    assert histogram_l2_search(counts, 0.0, 8.0, dst_bins=4) == pytest.approx((3.0, 8.0))
    assert histogram_l2_search(counts, -8.0, 0.0, dst_bins=4) == pytest.approx((-5.0, 0.0))


def test_l2_search_lone_count_then_drops_the_empty_end_bin():
    """counts [0, 0, 0, 1, 0] on [0, 5], 2 levels. Move 1: l - s = 3 > e - r = 4 - 2, start
    = 3: bin 3 is destination bin 0 of width 1, E = 1/12. Move 2: l - s = 0, r = 3, the end
    drops the empty bin 4: width 1/2, E = 2 * (1/2)^3 / 12 = 1/48 < 1/12, kept: [3, 4]."""
    counts = [0.0, 0.0, 0.0, 1.0, 0.0]
    assert histogram_l2_error(counts, 1.0, 3, 4, 2) == pytest.approx(1 / 12)
    assert histogram_l2_error(counts, 1.0, 3, 3, 2) == pytest.approx(1 / 48)
    assert histogram_l2_search(counts, 0.0, 5.0, dst_bins=2) == pytest.approx((3.0, 4.0))


def test_l2_search_tie_between_the_sides_moves_the_end_first():
    """counts [0, 5, 5, 5, 5, 1] on [0, 6]: l - s = 1 is not > e - r = 1, so the end moves
    first (clipping the 1), then the start drops the empty bin 0 (a smaller error), then
    clipping a bin of 5 costs more: [1, 5]."""
    counts = [0.0, 5.0, 5.0, 5.0, 5.0, 1.0]
    assert histogram_l2_search(counts, 0.0, 6.0) == pytest.approx((1.0, 5.0))


def test_l2_search_first_move_is_always_taken():
    """counts [0, 1.5, 1e5] on [0, 3]: l - s = 1 is not > e - r = 1, so the first move clips
    the 1e5 counts (its error is compared with +inf, so it is kept); then the start drops the
    empty bin 0 (smaller error) and a one-bin range cannot move: [1, 2]."""
    assert histogram_l2_search([0.0, 1.5, 1e5], 0.0, 3.0) == pytest.approx((1.0, 2.0))


def test_l2_search_skips_a_left_bin_under_one_hundred_thousandth_of_the_mass():
    """counts [1, 0, 2e5, 2e5] on [0, 4]: the target 1e-5 * 400001 = 4.00001 is first reached
    at bin 2, so l - s = 2 > e - r = 3 - 2 = 1 and the start moves to 2 (clipping the lone
    count); the next move (end to 2) would clip 2e5 counts, so the search stops: [2, 4]."""
    counts = [1.0, 0.0, 2e5, 2e5]
    assert histogram_l2_search(counts, 0.0, 4.0) == pytest.approx((2.0, 4.0))


def test_l2_search_constant_range_and_each_bad_bound_alone():
    """x_min = x_max is valid (every error 0): [1, 1]; a NaN x_min, an infinite x_max or
    x_min > x_max alone raises ValueError."""
    assert histogram_l2_search([3.0, 4.0], 1.0, 1.0) == (1.0, 1.0)
    for bounds in ((np.nan, 1.0), (0.0, np.inf), (2.0, 1.0)):
        with pytest.raises(ValueError, match="x_min"):
            histogram_l2_search([3.0, 4.0], *bounds)
    with pytest.raises(ValueError, match="counts"):
        histogram_l2_search([3.0], 0.0, 1.0)


def _torch_search(counts, lo, hi, dst_bins=None):
    torch = pytest.importorskip("torch")
    reference = torch.ao.quantization.HistogramObserver(bins=len(counts))
    reference.histogram = torch.tensor(counts, dtype=torch.float32)
    reference.min_val, reference.max_val = torch.tensor(lo), torch.tensor(hi)
    if dst_bins is not None:
        reference.dst_nbins = dst_bins
    return [float(v) for v in reference._non_linear_param_search()]


def _skewed_histogram(seed):
    """A histogram with empty or sparse bins at either end, on a float32 range."""
    rng = np.random.default_rng(seed)
    bins = int(rng.integers(6, 40))
    counts = rng.integers(0, 30, bins).astype(np.float64)
    counts[:rng.integers(0, bins // 2)] = 0.0
    counts[bins - rng.integers(0, bins // 2):] = 0.0
    counts[rng.integers(0, bins)] += 1.0
    counts[rng.integers(0, bins, 2)] += 40.0 * rng.random()
    lo = float(np.float32(rng.uniform(-3, 1)))
    return counts, lo, float(np.float32(lo + rng.uniform(0.1, 5)))


@pytest.mark.parametrize("seed", range(8))
def test_l2_search_matches_torch_with_default_and_small_level_counts(seed):
    """Optional oracle: HistogramObserver._non_linear_param_search on the same histogram, with
    its default 256 destination bins (ours by default too) and with 3."""
    counts, lo, hi = _skewed_histogram(seed)
    np.testing.assert_allclose(histogram_l2_search(counts, lo, hi), _torch_search(counts, lo, hi),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(histogram_l2_search(counts, lo, hi, dst_bins=3),
                               _torch_search(counts, lo, hi, 3), rtol=1e-5, atol=1e-5)


def test_l2_search_default_is_256_levels_on_a_near_tie():
    """Optional oracle: 16 bins of 100, then 0.0695 and 0.02 on [0, 18]. The second move
    (trim bin 16) saves inside error ~ 100 w^2 / 4 per bin, w = 16 / D: with D = 256 a little
    more than it costs in clipping, so torch keeps going to [0, 16]; with 257 levels it would
    stop at [0, 17]. Our default agrees with torch's default (2^8)."""
    counts = np.append(np.full(16, 100.0), [0.0695, 0.02])
    expected = _torch_search(counts, 0.0, 18.0)
    assert expected == pytest.approx([0.0, 16.0])
    assert _torch_search(counts, 0.0, 18.0, 257) == pytest.approx([0.0, 17.0])
    np.testing.assert_allclose(histogram_l2_search(counts, 0.0, 18.0), expected, atol=1e-6)


# ---- histogram L2 observer --------------------------------------------------------------------

def test_l2_observer_two_bins_and_two_batches():
    """bins = 2 is allowed; batches [-1] and [3] are one histogram [1, 1] on [-1, 3], whose
    search gives [-1, 1] (see the two-bin search above)."""
    observer = HistogramL2Observer(bins=2)
    observer(np.array([-1.0]))
    observer(np.array([3.0]))
    assert observer.range() == pytest.approx((-1.0, 1.0))
    with pytest.raises(ValueError, match="bins"):
        HistogramL2Observer(bins=1)


def test_l2_observer_keeps_a_copy_of_what_it_saw():
    """Overwriting the observed array afterwards does not change the range."""
    x = np.array([-1.0, 3.0])
    observer = HistogramL2Observer(bins=2)
    observer(x)
    x[:] = 0.0
    assert observer.range() == pytest.approx((-1.0, 1.0))


def test_l2_observer_defaults_match_torch_histogram_observer():
    """Optional oracle: data on the centres of 2048 unit bins over [0, 2048] (so NumPy's and
    torch's histograms agree exactly); torch's default HistogramObserver (2048 bins, 2^8
    levels) and ours with its defaults choose the same range, on whole bins."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    centres = np.floor(np.abs(rng.normal(0, 60, 4000))) + 0.5
    x = np.concatenate([[0.0, 2048.0], centres, [1500.5, 1900.5]]).astype(np.float32)
    reference = torch.ao.quantization.HistogramObserver()
    reference(torch.tensor(x))
    expected = [float(v) for v in reference._non_linear_param_search()]
    observer = HistogramL2Observer()
    observer(x)
    lo, hi = observer.range()
    np.testing.assert_allclose([lo, hi], expected, rtol=1e-6, atol=1e-4)
    assert float(lo) == round(float(lo)) and float(hi) == round(float(hi))
