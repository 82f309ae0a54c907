"""Agreement with torch.ao.quantization when torch is importable."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.quant import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    fake_quantize,
    int_range,
    qparams,
    quantize,
)

from quant_helpers import float_arrays

X = float_arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=4, max_side=5), bound=50.0)
SCHEMES = st.sampled_from([(False, False), (True, False), (False, True), (True, True)])  # (symmetric, signed)


def _torch_dtype(torch, signed):
    return torch.qint8 if signed else torch.quint8


def _off_tie(x, scale):
    """Where x / s is not within float32 rounding of a .5 tie (PyTorch multiplies by 1/s)."""
    v = x.astype(np.float64) / np.asarray(scale, dtype=np.float64)
    return np.abs(np.abs(v - np.floor(v)) - 0.5) > 1e-4


@given(x=X, scheme=SCHEMES)
def test_qparams_match_torch_minmax_observer(x, scheme):
    torch = pytest.importorskip("torch")
    symmetric, signed = scheme
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    reference = torch.ao.quantization.MinMaxObserver(dtype=_torch_dtype(torch, signed), qscheme=qscheme)
    reference(torch.from_numpy(x))
    t_scale, t_zp = reference.calculate_qparams()
    observer = MinMaxObserver(8, signed=signed, symmetric=symmetric)
    observer(x)
    scale, zero_point = observer.calculate_qparams()
    assert scale == np.float32(t_scale.item()) and zero_point == t_zp.item()


@given(x=X, scheme=SCHEMES, data=st.data())
def test_qparams_match_torch_per_channel_observer(x, scheme, data):
    torch = pytest.importorskip("torch")
    symmetric, signed = scheme
    axis = data.draw(st.integers(0, x.ndim - 1))
    qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    reference = torch.ao.quantization.PerChannelMinMaxObserver(
        ch_axis=axis, dtype=_torch_dtype(torch, signed), qscheme=qscheme
    )
    reference(torch.from_numpy(x))
    t_scale, t_zp = reference.calculate_qparams()
    observer = MinMaxObserver(8, signed=signed, symmetric=symmetric, axis=axis)
    observer(x)
    scale, zero_point = observer.calculate_qparams()
    np.testing.assert_array_equal(scale, t_scale.numpy().astype(np.float32))
    np.testing.assert_array_equal(zero_point, t_zp.numpy())


@given(batches=st.lists(float_arrays(np.float32, (3, 4), bound=50.0), min_size=1, max_size=4))
def test_moving_average_matches_torch(batches):
    torch = pytest.importorskip("torch")
    reference = torch.ao.quantization.MovingAverageMinMaxObserver(dtype=torch.quint8)
    observer = MovingAverageMinMaxObserver(8, signed=False)
    for b in batches:
        reference(torch.from_numpy(b))
        observer(b)
    lo, hi = observer.range()
    np.testing.assert_allclose([lo, hi], [reference.min_val.item(), reference.max_val.item()], rtol=1e-6, atol=1e-6)


@given(x=X, bits=st.integers(2, 8), signed=st.booleans(), data=st.data())
def test_fake_quantize_matches_torch_per_tensor(x, bits, signed, data):
    torch = pytest.importorskip("torch")
    qmin, qmax = int_range(bits, signed)
    scale = np.float32(data.draw(st.floats(2.0**-6, 4.0, width=32)))
    zero_point = data.draw(st.integers(qmin, qmax))
    ours = fake_quantize(x, scale, zero_point, qmin, qmax)
    theirs = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), float(scale), zero_point, qmin, qmax).numpy()
    keep = _off_tie(x, scale)
    np.testing.assert_array_equal(ours[keep], theirs[keep])
    assert np.all(np.abs(ours - theirs) <= scale * (1 + 1e-6))


@given(x=X, bits=st.integers(2, 8), signed=st.booleans(), data=st.data())
def test_fake_quantize_matches_torch_per_channel(x, bits, signed, data):
    torch = pytest.importorskip("torch")
    qmin, qmax = int_range(bits, signed)
    axis = data.draw(st.integers(0, x.ndim - 1))
    channels = x.shape[axis]
    scale = np.array(data.draw(st.lists(st.floats(2.0**-6, 4.0, width=32), min_size=channels, max_size=channels)),
                     dtype=np.float32)
    zero_point = np.array(data.draw(st.lists(st.integers(qmin, qmax), min_size=channels, max_size=channels)),
                          dtype=np.int32)
    ours = fake_quantize(x, scale, zero_point, qmin, qmax, axis=axis)
    theirs = torch.fake_quantize_per_channel_affine(
        torch.from_numpy(x), torch.from_numpy(scale), torch.from_numpy(zero_point), axis, qmin, qmax
    ).numpy()
    shape = [1] * x.ndim
    shape[axis] = channels
    keep = _off_tie(x, scale.reshape(shape))
    np.testing.assert_array_equal(ours[keep], theirs[keep])


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@given(x=X, signed=st.booleans())
def test_quantize_matches_torch_quantize_per_tensor(x, signed):
    torch = pytest.importorskip("torch")
    qmin, qmax = int_range(8, signed)
    scale, zero_point = qparams(x.min(), x.max(), qmin, qmax)
    ours = quantize(x, scale, zero_point, qmin, qmax)
    theirs = torch.quantize_per_tensor(
        torch.from_numpy(x), float(scale), int(zero_point), _torch_dtype(torch, signed)
    ).int_repr().numpy()
    assert ours.dtype == theirs.dtype
    keep = _off_tie(x, scale)
    np.testing.assert_array_equal(ours[keep], theirs[keep])
