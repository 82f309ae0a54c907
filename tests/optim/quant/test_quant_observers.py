"""Observers: statistics, laws between them, and error handling."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.quant import (
    HistogramKLObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    fake_quantize,
    int_range,
)

from quant_helpers import FLOAT_DTYPES

OBSERVERS = [MinMaxObserver, MovingAverageMinMaxObserver, PercentileObserver, HistogramKLObserver, MSEObserver]
AXES = st.sampled_from([None, 0, 1, -1])


@st.composite
def calibration_batches(draw, max_batches=3):
    """A list of (4, 3, 5) arrays of one dtype, each scaled differently."""
    dtype = draw(FLOAT_DTYPES)
    count = draw(st.integers(1, max_batches))
    elements = st.floats(-10, 10, width=32)
    batches = [draw(hnp.arrays(dtype, (4, 3, 5), elements=elements)) for _ in range(count)]
    scales = draw(st.lists(st.sampled_from([0.5, 1.0, 4.0]), min_size=count, max_size=count))
    return [(b * dtype(s)).astype(dtype) for b, s in zip(batches, scales)]


def _reduce(batches, axis, fn):
    """fn over all batches, per tensor (axis None) or per channel along axis."""
    data = np.concatenate([b.reshape(1, *b.shape) for b in batches])
    if axis is None:
        return fn(data)
    other = tuple(a for a in range(data.ndim) if a != axis % batches[0].ndim + 1)
    return fn(data, axis=other)


def _observe(observer, batches):
    for batch in batches:
        assert observer(batch) is batch
    return observer


def _error(batches, observer):
    scale, zero_point = observer.calculate_qparams()
    total = 0.0
    for b in batches:
        fq = fake_quantize(b, scale, zero_point, observer.qmin, observer.qmax, axis=observer.axis)
        total += float(np.sum((b.astype(np.float64) - fq) ** 2))
    return total


@pytest.mark.parametrize("cls", OBSERVERS)
@given(batches=calibration_batches(), axis=AXES)
def test_observer_returns_input_unchanged(cls, batches, axis):
    copies = [b.copy() for b in batches]
    observer = _observe(cls(axis=axis), batches)
    for b, c in zip(batches, copies):
        np.testing.assert_array_equal(b, c)
    lo, hi = observer.range()
    scale, zero_point = observer.calculate_qparams()
    expected_shape = () if axis is None else (batches[0].shape[axis],)
    assert np.shape(lo) == np.shape(scale) == np.shape(zero_point) == expected_shape
    assert np.all(lo <= hi) and np.all(scale > 0)


@given(batches=calibration_batches(), axis=AXES)
def test_minmax_is_running_extremes(batches, axis):
    observer = _observe(MinMaxObserver(axis=axis), batches)
    lo, hi = observer.range()
    np.testing.assert_array_equal(lo, _reduce(batches, axis, np.min))
    np.testing.assert_array_equal(hi, _reduce(batches, axis, np.max))


@given(batches=calibration_batches(), c=st.sampled_from([0.01, 0.5, 1.0]))
def test_moving_average_recurrence(batches, c):
    observer = _observe(MovingAverageMinMaxObserver(averaging_constant=c), batches)
    lo, hi = batches[0].min(), batches[0].max()
    for b in batches[1:]:
        lo, hi = lo + c * (b.min() - lo), hi + c * (b.max() - hi)
    np.testing.assert_allclose(observer.range(), (lo, hi), rtol=1e-6, atol=1e-6)


@given(batches=calibration_batches(), axis=AXES)
def test_percentile_100_is_minmax(batches, axis):
    percentile = _observe(PercentileObserver(percentile=100.0, axis=axis), batches)
    minmax = _observe(MinMaxObserver(axis=axis), batches)
    for a, b in zip(percentile.range(), minmax.range()):
        np.testing.assert_array_equal(a, b)


@given(batches=calibration_batches(), axis=AXES, p=st.floats(50, 100))
def test_percentile_range_shrinks_with_p(batches, axis, p):
    narrow = _observe(PercentileObserver(percentile=p, axis=axis), batches).range()
    wide = _observe(PercentileObserver(percentile=min(p + 1.0, 100.0), axis=axis), batches).range()
    full = _observe(MinMaxObserver(axis=axis), batches).range()
    assert np.all(full[0] <= wide[0]) and np.all(wide[0] <= narrow[0])
    assert np.all(narrow[1] <= wide[1]) and np.all(wide[1] <= full[1])


@given(batches=calibration_batches(), axis=AXES, bits=st.integers(2, 8), symmetric=st.booleans())
def test_mse_error_at_most_minmax(batches, axis, bits, symmetric):
    kwargs = dict(axis=axis, symmetric=symmetric)
    mse = _observe(MSEObserver(bits, grid=20, **kwargs), batches)
    minmax = _observe(MinMaxObserver(bits, **kwargs), batches)
    assert _error(batches, mse) <= _error(batches, minmax) * (1 + 1e-9) + 1e-12


@given(batches=calibration_batches(), axis=AXES, bits=st.integers(2, 8), symmetric=st.booleans(),
       signed=st.booleans())
def test_kl_threshold_at_most_max_abs(batches, axis, bits, symmetric, signed):
    observer = _observe(HistogramKLObserver(bits, bins=128, axis=axis, symmetric=symmetric, signed=signed), batches)
    max_abs = _reduce(batches, axis, lambda a, **k: np.abs(a).max(**k))
    threshold = observer.threshold()
    assert np.all(threshold >= 0) and np.all(threshold <= max_abs)
    lo, hi = observer.range()
    assert np.all(lo >= _reduce(batches, axis, np.min)) and np.all(hi <= _reduce(batches, axis, np.max))
    assert np.all(lo >= -threshold) and np.all(hi <= threshold)


@given(batches=calibration_batches(), bits=st.integers(2, 16))
def test_symmetric_signed_observers_have_zero_zero_point(batches, bits):
    for cls in OBSERVERS:
        _, zero_point = _observe(cls(bits, symmetric=True, axis=1), batches).calculate_qparams()
        assert np.all(zero_point == 0)


def test_observer_ranges_follow_int_range():
    observer = MinMaxObserver(4, signed=True, restricted=True)
    assert (observer.qmin, observer.qmax) == int_range(4, signed=True, restricted=True)


@pytest.mark.parametrize("cls", OBSERVERS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_calibration_data_raises(cls, bad):
    x = np.ones((2, 3), dtype=np.float32)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="x must be finite"):
        cls()(x)


@pytest.mark.parametrize("cls", OBSERVERS)
def test_calculate_qparams_before_data_raises(cls):
    observer = cls(axis=0)
    with pytest.raises(ValueError, match="observed no data"):
        observer.calculate_qparams()
    observer(np.ones((2, 3), dtype=np.float32))
    observer.reset()
    with pytest.raises(ValueError, match="observed no data"):
        observer.calculate_qparams()


@pytest.mark.parametrize("cls", OBSERVERS)
def test_channel_count_change_and_bad_axis_raise(cls):
    observer = cls(axis=1)
    observer(np.ones((2, 3)))
    with pytest.raises(ValueError, match="channels"):
        observer(np.ones((2, 4)))
    with pytest.raises(ValueError, match="axis"):
        cls(axis=2)(np.ones((2, 3)))
    with pytest.raises(ValueError, match="bits"):
        cls(bits=17)


@pytest.mark.parametrize("cls", [MinMaxObserver, MovingAverageMinMaxObserver])
@given(batches=calibration_batches(max_batches=4), axis=AXES, split=st.integers(1, 3))
def test_loaded_state_continues_like_the_original(cls, batches, axis, split):
    # observing batches[:k], saving, loading into a new observer and observing the rest
    # gives the same statistics (and dtype) as observing everything in one observer
    split = min(split, len(batches))
    original = _observe(cls(axis=axis), batches[:split])
    restored = cls(axis=axis)
    restored.load_state_dict(original.state_dict())
    for observer in (original, restored):
        _observe(observer, batches[split:])
    for a, b in zip(original.range(), restored.range()):
        np.testing.assert_array_equal(b, a)
        assert b.dtype == a.dtype
    for key, value in original.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[key], value)


@pytest.mark.parametrize("cls", OBSERVERS)
def test_empty_state_means_no_data_and_calibration_only_observers_save_nothing(cls):
    observer = _observe(cls(axis=0), [np.ones((2, 3), dtype=np.float32)])
    assert set(observer.state_dict()) == set(cls.state_keys)
    observer.load_state_dict({})
    assert observer.state_dict() == {}
    with pytest.raises(ValueError, match="observed no data"):
        observer.calculate_qparams()


@pytest.mark.parametrize("axis, state, message", [
    (0, {"min": np.zeros(2)}, "keys"),
    (0, {"min": np.zeros(2), "max": np.zeros(3)}, "one shape"),
    (0, {"min": np.zeros((2, 1)), "max": np.zeros((2, 1))}, "one shape"),
    (0, {"min": np.zeros(2, np.int64), "max": np.zeros(2, np.int64)}, "floating"),
    (None, {"min": np.zeros(2), "max": np.ones(2)}, "per tensor"),
])
def test_bad_observer_state_raises_and_keeps_the_old_state(axis, state, message):
    observer = _observe(MinMaxObserver(axis=axis), [np.arange(4.0).reshape(2, 2)])
    before = observer.state_dict()
    with pytest.raises(ValueError, match=message):
        observer.load_state_dict(state)
    assert observer.state_dict().keys() == before.keys()
    for key, value in observer.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
