"""Laws of the fake-quantization ops: the clipped STE and LSQ's gradients."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from optim.quant import (
    fake_quantize,
    fake_quantize_ste,
    int_range,
    lsq_fake_quantize,
    lsq_grad_scale,
    lsq_gradients,
    lsq_initial_step,
    lsq_quantize,
    ste_mask,
)

from quant_helpers import affine_cases, float_arrays, per_channel_cases

SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)


def _backward(fn, x, upstream):
    """Gradient of sum(fn(x) * upstream) with respect to the array x."""
    t = minnet.tensor(x, requires_grad=True)
    fn(t).backward(upstream)
    return t.grad


@given(case=affine_cases(), data=st.data())
def test_ste_gradient_is_in_range_indicator(case, data):
    x, scale, zero_point, qmin, qmax = case
    upstream = data.draw(float_arrays(x.dtype, x.shape))
    grad = _backward(lambda t: fake_quantize_ste(t, scale, zero_point, qmin, qmax), x, upstream)
    # the clamp is inactive exactly where the unclamped code round(x / s) + z is in range
    with np.errstate(over="ignore"):
        unclamped = np.rint(x / x.dtype.type(scale)).astype(np.float64) + zero_point
    indicator = (unclamped >= qmin) & (unclamped <= qmax)
    np.testing.assert_array_equal(grad, upstream * indicator)
    np.testing.assert_array_equal(ste_mask(x, scale, zero_point, qmin, qmax), indicator)


@given(case=per_channel_cases())
def test_ste_per_channel_equals_per_tensor_on_each_slice(case):
    x, scale, zero_point, qmin, qmax, axis = case
    upstream = np.ones_like(x)
    y = fake_quantize_ste(x, scale, zero_point, qmin, qmax, axis)
    grad = _backward(lambda t: fake_quantize_ste(t, scale, zero_point, qmin, qmax, axis), x,
                     upstream)
    np.testing.assert_array_equal(y.data, fake_quantize(x, scale, zero_point, qmin, qmax, axis))
    for c in range(x.shape[axis]):
        piece = np.take(x, c, axis=axis)
        expected = ste_mask(piece, scale[c], zero_point[c], qmin, qmax)
        np.testing.assert_array_equal(np.take(grad, c, axis=axis), expected.astype(x.dtype))


@given(x=float_arrays(np.float32, SHAPES, bound=20.0),
       scale=st.floats(0.0625, 2.0, width=32), signed=st.booleans())
def test_fake_quantize_ste_matches_torch(x, scale, signed):
    torch = pytest.importorskip("torch")
    qmin, qmax = int_range(8, signed)
    zero_point = 0 if signed else 7
    v = x.astype(np.float64) / np.float32(scale)
    off_tie = np.abs(np.abs(v - np.floor(v)) - 0.5) > 1e-3  # torch multiplies by 1/s
    t = torch.tensor(x, requires_grad=True)
    y = torch.fake_quantize_per_tensor_affine(t, float(scale), zero_point, qmin, qmax)
    y.backward(torch.ones_like(y))
    ours = fake_quantize_ste(minnet.tensor(x, requires_grad=True), np.float32(scale), zero_point,
                             qmin, qmax)
    grad = _backward(lambda u: fake_quantize_ste(u, np.float32(scale), zero_point, qmin, qmax),
                     x, np.ones_like(x))
    np.testing.assert_allclose(ours.data[off_tie], y.detach().numpy()[off_tie], rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_array_equal(grad[off_tie], t.grad.numpy()[off_tie])


# ---- LSQ ---------------------------------------------------------------------------------

LSQ_RANGES = st.sampled_from([int_range(b, s) for b in (2, 3, 4, 8) for s in (True, False)])


@given(v=float_arrays(np.float64, SHAPES, bound=10.0), step=st.floats(0.01, 3.0),
       qrange=LSQ_RANGES)
def test_lsq_equals_symmetric_fake_quantize(v, step, qrange):
    qmin, qmax = qrange
    np.testing.assert_array_equal(lsq_quantize(v, step, qmin, qmax),
                                  fake_quantize(v, np.float64(step), 0, qmin, qmax))


def _away_from_jumps(u, qmin, qmax, margin):
    """Where v/s is neither near a rounding jump (k + 1/2) nor near a clip bound."""
    near_tie = np.abs(np.abs(u - np.floor(u)) - 0.5) < margin
    near_bound = (np.abs(u - qmin) < margin) | (np.abs(u - qmax) < margin)
    return ~near_tie & ~near_bound


@given(v=float_arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=6),
                      bound=8.0),
       step=st.floats(0.05, 2.0), qrange=LSQ_RANGES, data=st.data())
def test_lsq_step_gradient_matches_finite_differences(v, step, qrange, data):
    qmin, qmax = qrange
    u = v / step
    assume(np.all(_away_from_jumps(u, qmin, qmax, 1e-3)))
    upstream = data.draw(float_arrays(np.float64, v.shape, bound=2.0))
    s = minnet.tensor(np.array(step), requires_grad=True)
    vt = minnet.tensor(v, requires_grad=True)
    lsq_fake_quantize(vt, s, qmin, qmax).backward(upstream)
    # exact derivative of L(s) = sum g * v_hat(s) between rounding jumps
    h = 1e-7 * step
    loss = lambda t: np.sum(upstream * lsq_quantize(v, t, qmin, qmax))  # noqa: E731
    finite_difference = (loss(step + h) - loss(step - h)) / (2 * h)
    inside = (u > qmin) & (u < qmax)
    ste_term = -np.sum(upstream * u * inside)  # s * d(v/s)/ds where round is passed through
    np.testing.assert_allclose(s.grad, finite_difference + ste_term, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(vt.grad, upstream * inside)


@given(v=float_arrays(np.float64, SHAPES, bound=8.0), step=st.floats(0.05, 2.0),
       qrange=LSQ_RANGES, g=st.floats(1e-3, 1.0))
def test_lsq_grad_scale_scales_step_gradient(v, step, qrange, g):
    upstream = np.ones_like(v)
    gv1, gs1 = lsq_gradients(upstream, v, step, *qrange, grad_scale=1.0)
    gvg, gsg = lsq_gradients(upstream, v, step, *qrange, grad_scale=g)
    np.testing.assert_array_equal(gv1, gvg)
    np.testing.assert_allclose(gsg, g * gs1, rtol=1e-12, atol=1e-300)
    assert lsq_grad_scale(v.size, qrange[1]) == pytest.approx(1 / np.sqrt(v.size * qrange[1]))


@given(v=float_arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, max_side=4),
                      bound=8.0), qrange=LSQ_RANGES, data=st.data())
def test_lsq_per_channel_equals_per_tensor_on_each_slice(v, qrange, data):
    steps = np.array(data.draw(st.lists(st.floats(0.05, 2.0), min_size=v.shape[0],
                                        max_size=v.shape[0])))
    upstream = np.ones_like(v)
    out = lsq_quantize(v, steps, *qrange, axis=0)
    gv, gs = lsq_gradients(upstream, v, steps, *qrange, axis=0)
    for c in range(v.shape[0]):
        np.testing.assert_array_equal(out[c], lsq_quantize(v[c], steps[c], *qrange))
        gvc, gsc = lsq_gradients(upstream[c], v[c], steps[c], *qrange)
        np.testing.assert_array_equal(gv[c], gvc)
        np.testing.assert_allclose(gs[c], gsc, rtol=1e-12)


@given(v=float_arrays(np.float32, SHAPES, bound=20.0), step=st.floats(0.125, 2.0, width=32),
       bits=st.sampled_from([2, 4, 8]), grad_factor=st.floats(0.01, 1.0))
def test_lsq_matches_torch_learnable_fake_quantize(v, step, bits, grad_factor):
    torch = pytest.importorskip("torch")
    qmin, qmax = int_range(bits)
    u = v.astype(np.float64) / np.float32(step)
    # PyTorch tests the range on the rounded code, LSQ on v/s: they differ in the half step
    # beyond each clip bound; ties differ by PyTorch's multiplication with 1/s
    between = (((u > qmin - 0.5 - 1e-3) & (u < qmin + 1e-3))
               | ((u > qmax - 1e-3) & (u < qmax + 0.5 + 1e-3)))
    assume(not np.any(between) and np.all(_away_from_jumps(u, qmin, qmax, 1e-3)))
    t = torch.tensor(v, requires_grad=True)
    ts = torch.tensor([step], requires_grad=True)
    tz = torch.tensor([0.0], requires_grad=True)
    y = torch._fake_quantize_learnable_per_tensor_affine(t, ts, tz, qmin, qmax, grad_factor)
    y.backward(torch.ones_like(y))
    vt = minnet.tensor(v, requires_grad=True)
    s = minnet.tensor(np.array(step, dtype=np.float32), requires_grad=True)
    ours = lsq_fake_quantize(vt, s, qmin, qmax, grad_scale=grad_factor)
    ours.backward(np.ones_like(v))
    np.testing.assert_allclose(ours.data, y.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(vt.grad, t.grad.numpy())
    np.testing.assert_allclose(s.grad, ts.grad.numpy()[0], rtol=1e-4, atol=1e-4)


@given(v=float_arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, max_side=4),
                      bound=8.0), qmax=st.sampled_from([1, 3, 7, 127, 255]))
def test_lsq_initial_step(v, qmax):
    assume(np.any(v != 0))
    np.testing.assert_allclose(lsq_initial_step(v, qmax),
                               2 * np.abs(v).mean() / np.sqrt(qmax), rtol=1e-12)
    per_channel = lsq_initial_step(v, qmax, axis=0)
    for c in range(v.shape[0]):
        expected = max(2 * np.abs(v[c]).mean() / np.sqrt(qmax), np.finfo(np.float32).tiny)
        assert per_channel[c] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("message, call", [
    ("step", lambda: lsq_quantize(np.ones(3), 0.0, -2, 1)),
    ("step", lambda: lsq_quantize(np.ones((2, 3)), np.ones(3), -2, 1, axis=0)),
    ("qmin", lambda: lsq_quantize(np.ones(3), 1.0, 1, 3)),
    ("grad", lambda: lsq_gradients(np.ones(2), np.ones(3), 1.0, -2, 1)),
    ("qmax", lambda: lsq_initial_step(np.ones(3), 0)),
    ("n and qmax", lambda: lsq_grad_scale(0, 1)),
    ("scale", lambda: ste_mask(np.ones(3), -1.0, 0, 0, 255)),
    ("zero_point", lambda: ste_mask(np.ones(3), 1.0, 300, 0, 255)),
])
def test_value_error_names_the_argument(message, call):
    with pytest.raises(ValueError, match=message):
        call()
