"""PyTorch HistogramObserver's L2 range search as a named convention."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim.quant import HistogramL2Observer, histogram_l2_error, histogram_l2_search

DISTRIBUTIONS = {
    "normal": lambda rng, n: rng.normal(size=n),
    "laplace": lambda rng, n: rng.laplace(size=n),
    "student_t3": lambda rng, n: rng.standard_t(3, size=n),
    "relu_t2": lambda rng, n: np.maximum(rng.standard_t(2, size=n), 0),
}


@given(seed=st.integers(0, 2**16), start=st.integers(0, 10), width=st.integers(5, 30),
       dst_bins=st.integers(2, 9))
def test_l2_error_is_the_integral_inside_the_range(seed, start, width, dst_bins):
    """For mass only inside [start, end], the error is sum_k n_k/D * int over bin k of
    (x - centre of x's destination bin)^2 dx, computed here by fine midpoint sampling."""
    rng = np.random.default_rng(seed)
    bins, delta = 48, 0.25
    end = min(start + width, bins - 1)
    counts = np.zeros(bins)
    counts[start:end + 1] = rng.integers(0, 5, size=end - start + 1)
    dst_width = delta * (end - start + 1) / dst_bins
    total = 0.0
    samples = 4000
    for k in range(start, end + 1):
        x = (k - start) * delta + (np.arange(samples) + 0.5) / samples * delta
        centre = (np.minimum(np.floor(x / dst_width), dst_bins - 1) + 0.5) * dst_width
        total += counts[k] / delta * np.mean((x - centre) ** 2) * delta
    assert histogram_l2_error(counts, delta, start, end, dst_bins) == pytest.approx(
        total, rel=1e-4, abs=1e-12)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("bins", [256, 2048])
def test_l2_search_matches_torch_histogram_observer(name, bins):
    """Optional oracle: on torch's own histogram the search returns torch's range exactly; the
    observer end to end (NumPy's histogram) is within two source bins of it."""
    torch = pytest.importorskip("torch")
    x = DISTRIBUTIONS[name](np.random.default_rng(0), 50_000).astype(np.float32)
    reference = torch.ao.quantization.HistogramObserver(bins=bins)
    reference(torch.tensor(x))
    t_min, t_max = (float(v) for v in reference._non_linear_param_search())
    lo, hi = histogram_l2_search(reference.histogram.numpy(), float(reference.min_val),
                                 float(reference.max_val), 256)
    np.testing.assert_allclose([lo, hi], [t_min, t_max], rtol=1e-6, atol=1e-6)
    observer = HistogramL2Observer(8, signed=name.startswith("relu") is False, bins=bins)
    observer(x)
    width = (x.max() - x.min()) / bins
    o_min, o_max = observer.range()
    assert abs(o_min - t_min) <= 2 * width and abs(o_max - t_max) <= 2 * width
    assert (x.min() < t_min or x.max() > t_max) or name == "normal"  # outliers are clipped


@given(seed=st.integers(0, 2**16))
def test_l2_search_keeps_uniform_data(seed):
    """Uniform data has no outliers: shrinking only adds clipping error, so the search stops
    after its first move (which is always taken: the error starts at +inf, not at the full
    range's) within one source bin of [min, max]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 3, size=20_000)
    counts, _ = np.histogram(x, 512, (x.min(), x.max()))
    lo, hi = histogram_l2_search(counts, x.min(), x.max(), 256)
    width = (x.max() - x.min()) / 512
    assert x.min() <= lo <= x.min() + width + 1e-12 and x.max() - width - 1e-12 <= hi <= x.max()


def test_l2_observer_per_channel_and_constant_input():
    x = np.stack([np.random.default_rng(1).normal(size=3000), np.full(3000, 2.0)])
    observer = HistogramL2Observer(8, axis=0)
    observer(x)
    lo, hi = observer.range()
    single = HistogramL2Observer(8)
    single(x[0])
    assert (lo[0], hi[0]) == pytest.approx(single.range())
    assert lo[1] == hi[1] == 2.0
    with pytest.raises(ValueError, match="counts"):
        histogram_l2_search(np.array([1.0]), 0.0, 1.0)
