"""Resizing: interpolate against PyTorch and finite differences, resize against onnxruntime, the
ONNX coordinate formulas in exact arithmetic, rounding modes at ties, argument errors."""
import functools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
import minnet
from minnet import functional as F
from minnet.ops import resize as R

seeds = st.integers(0, 2**16)


@st.composite
def interpolate_cases(draw):
    """(x shape, keyword arguments) for F.interpolate: any torch mode with its input rank, a size
    or a scale factor, align_corners for the linear modes; spatial sizes up to 12."""
    mode = draw(st.sampled_from(["nearest", "nearest", "bilinear", "linear"]))
    spatial = {"linear": 1, "bilinear": 2}.get(mode) or draw(st.integers(1, 2))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) + tuple(
        draw(st.integers(1, 6)) for _ in range(spatial))
    kwargs = dict(mode=mode)
    if draw(st.booleans()):
        kwargs["size"] = tuple(draw(st.integers(1, 12)) for _ in range(spatial))
    else:
        factors = [draw(st.sampled_from([0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0])) for _ in range(spatial)]
        factors = [max(f, 1.0 / n) for f, n in zip(factors, shape[2:])]  # non-empty output
        kwargs["scale_factor"] = tuple(factors)
    if mode != "nearest":
        kwargs["align_corners"] = draw(st.sampled_from([None, False, True]))
    return shape, kwargs


@given(case=interpolate_cases(), seed=seeds)
def test_interpolate_gradients_match_finite_differences(case, seed):
    shape, kwargs = case
    x = np.random.default_rng(seed).standard_normal(shape)
    helpers.check_gradients(lambda t: F.interpolate(t, **kwargs), x)


@given(case=interpolate_cases(), seed=seeds)
def test_interpolate_matches_torch(case, seed):
    torch = pytest.importorskip("torch")
    shape, kwargs = case
    x = np.random.default_rng(seed).standard_normal(shape)
    helpers.compare_with_torch(lambda t: F.interpolate(t, **kwargs),
                               lambda t: torch.nn.functional.interpolate(t, **kwargs), x)


def test_interpolate_nearest_is_the_exact_floor():
    """i = floor(o in / out) in exact arithmetic, in every dtype. On float32 input PyTorch's
    legacy nearest multiplies by a float32 in / out and, at 2 -> 82, rounds o = 41 down to row 0
    (on float64 input it agrees with the exact floor)."""
    x = np.arange(2.0, dtype=np.float32).reshape(1, 1, 2)
    y = F.interpolate(x, size=82).data.ravel()
    assert y.tolist() == [float(Fraction(o * 2, 82).__floor__()) for o in range(82)]
    torch = pytest.importorskip("torch")
    theirs = torch.nn.functional.interpolate(torch.tensor(x), size=82).numpy().ravel()
    assert (theirs != y).sum() == 1 and y[41] == 1.0 and theirs[41] == 0.0


def test_upsample_module_matches_interpolate_and_keeps_float32():
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4)).astype(np.float32)
    up = minnet.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    y = up(x)
    assert y.dtype == np.float32 and y.shape == (1, 2, 6, 8)
    np.testing.assert_array_equal(y.data, F.interpolate(x, scale_factor=2, mode="bilinear",
                                                        align_corners=True).data)
    t = minnet.tensor(x, requires_grad=True)
    minnet.nn.Upsample(size=(5, 5))(t).sum().backward()
    assert t.grad.dtype == np.float32


# ---- ONNX Resize -------------------------------------------------------------------------


def _exact_coordinate(o, n_in, n_out, mode, scale):
    s = Fraction(n_out, n_in) if scale is None else Fraction(scale)
    if mode == "align_corners":
        return Fraction(0) if n_out == 1 else Fraction(o * (n_in - 1), n_out - 1)
    if mode == "asymmetric":
        return o / s
    if mode == "pytorch_half_pixel" and n_out == 1:
        return Fraction(0)
    return (o + Fraction(1, 2)) / s - Fraction(1, 2)


@pytest.mark.parametrize("mode", R.COORDINATE_MODES)
@given(n_in=st.integers(1, 20), n_out=st.integers(1, 40),
       scale=st.none() | st.sampled_from([0.25, 0.5, 1.5, 2.0, 3.0]))
def test_resize_coordinates_follow_the_onnx_formulas(mode, n_in, n_out, scale):
    ours = R.resize_coordinates(n_out, n_in, mode, scale)
    exact = [_exact_coordinate(o, n_in, n_out, mode, scale) for o in range(n_out)]
    np.testing.assert_allclose(ours, [float(c) for c in exact], rtol=1e-14, atol=1e-14)
    if scale is None:  # one exact ratio: an integer coordinate is never rounded below itself
        np.testing.assert_array_equal(np.floor(ours), [c.__floor__() for c in exact])


@pytest.mark.parametrize("nearest_mode, expected", [
    ("round_prefer_floor", [0, 1, 1, 1, 2, 3]), ("round_prefer_ceil", [0, 1, 2, 1, 2, 3]),
    ("floor", [0, 1, 1, 1, 2, 3]), ("ceil", [0, 1, 2, 2, 3, 3]),
])
def test_nearest_modes_at_and_beside_ties(nearest_mode, expected):
    """Coordinates below 0 and above in - 1 clamp; 1.5 is a tie."""
    coordinates = np.array([-0.7, 1.0, 1.5, 1.4, 2.5 - 1e-9, 9.0])
    assert R.nearest_index(coordinates, 4, nearest_mode).tolist() == expected


@functools.lru_cache(maxsize=None)
def _onnxruntime_session(by_scales: bool, **attrs):
    """An onnxruntime session of one Resize node whose ``sizes`` (or ``scales``) is an input, so
    one session serves every drawn shape."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    target = helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4]) if by_scales else \
        helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])
    inputs = ["x", "", "scales"] if by_scales else ["x", "", "", "sizes"]
    node = helper.make_node("Resize", inputs, ["y"], **attrs)
    graph = helper.make_graph([node], "resize",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "h", "w"]), target],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "p", "q"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _onnxruntime_resize(x, sizes=None, scales=None, **attrs):
    pytest.importorskip("onnxruntime")
    session = _onnxruntime_session(scales is not None, **attrs)
    target = {"scales": np.asarray(scales, np.float32)} if scales is not None else \
        {"sizes": np.asarray(sizes, np.int64)}
    return session.run(None, {"x": x, **target})[0]


@pytest.mark.parametrize("coordinate_mode", R.COORDINATE_MODES)
@pytest.mark.parametrize("mode, nearest_mode", [("linear", "round_prefer_floor")] + [
    ("nearest", m) for m in R.NEAREST_MODES])
@given(hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
       out=st.tuples(st.integers(1, 11), st.integers(1, 11)), seed=seeds)
def test_resize_matches_onnxruntime(coordinate_mode, mode, nearest_mode, hw, out, seed):
    x = np.random.default_rng(seed).standard_normal((1, 2) + hw).astype(np.float32)
    expected = _onnxruntime_resize(x, sizes=(1, 2) + out, mode=mode, nearest_mode=nearest_mode,
                                   coordinate_transformation_mode=coordinate_mode)
    ours = F.resize(x, out, mode=mode, nearest_mode=nearest_mode,
                    coordinate_transformation_mode=coordinate_mode).data
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@given(hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
       scales=st.tuples(st.sampled_from([0.5, 1.5, 2.0, 3.0]), st.sampled_from([0.5, 1.5, 2.0, 3.0])),
       seed=seeds)
def test_resize_with_scales_matches_onnxruntime(mode, hw, scales, seed):
    out = tuple(int(np.floor(n * s)) for n, s in zip(hw, scales))
    if min(out) < 1:
        return
    x = np.random.default_rng(seed).standard_normal((1, 1) + hw).astype(np.float32)
    expected = _onnxruntime_resize(x, scales=(1.0, 1.0) + scales, mode=mode)
    np.testing.assert_allclose(F.resize(x, out, mode=mode, scales=scales).data, expected,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
       out=st.tuples(st.integers(1, 7), st.integers(1, 7)), seed=seeds,
       coordinate_mode=st.sampled_from(R.COORDINATE_MODES))
def test_resize_gradients_match_finite_differences(mode, shape, out, seed, coordinate_mode):
    x = np.random.default_rng(seed).standard_normal(shape)
    helpers.check_gradients(lambda t: F.resize(t, out, mode=mode,
                                               coordinate_transformation_mode=coordinate_mode), x)


def test_resize_to_the_same_size_is_the_identity_even_for_infinities():
    x = np.array([[1.0, np.inf], [-np.inf, 2.0]])
    y = F.resize(x, (2, 2), mode="linear").data
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(y, x)


# ---- errors ------------------------------------------------------------------------------

X4 = np.zeros((1, 1, 3, 3))

ERRORS = [
    (lambda: F.interpolate(X4), ValueError, r"exactly one of size and scale_factor"),
    (lambda: F.interpolate(X4, size=4, scale_factor=2), ValueError, r"exactly one of size and scale_factor"),
    (lambda: F.interpolate(X4, size=0), ValueError, r"size must be positive, got 0"),
    (lambda: F.interpolate(X4, size=(2, 2, 2)), TypeError, r"size must be an int or a sequence of 2 ints"),
    (lambda: F.interpolate(X4, scale_factor=-1.0), ValueError, r"scale_factor must be positive and finite"),
    (lambda: F.interpolate(X4, scale_factor=0.1), ValueError, r"gives the empty output size \(0, 0\)"),
    (lambda: F.interpolate(X4, size=4, mode="bicubic"), ValueError, r"mode must be one of"),
    (lambda: F.interpolate(X4, size=4, mode="linear"), ValueError, r"mode 'linear' expects 3-D input"),
    (lambda: F.interpolate(X4, size=4, align_corners=True), ValueError,
     r"align_corners can only be set with mode 'linear' or 'bilinear'"),
    (lambda: F.interpolate(np.zeros((1, 1, 0, 3)), size=4), ValueError, r"non-empty spatial axes"),
    (lambda: F.interpolate(X4.astype(np.int64), size=4), TypeError, r"x must be a floating tensor"),
    (lambda: F.resize(X4, (2, 2), coordinate_transformation_mode="tf_crop_and_resize"), ValueError,
     r"coordinate_transformation_mode must be one of"),
    (lambda: F.resize(X4, (2, 2), nearest_mode="round"), ValueError, r"nearest_mode must be one of"),
    (lambda: F.resize(X4, (1, 1, 1, 2, 2)), ValueError, r"must give 1 to 4 sizes for x of shape"),
    (lambda: F.resize(X4, (2, 2), scales=(2.0,)), TypeError, r"scales must be a number or a sequence of 2"),
    (lambda: F.resize(X4, None), ValueError, r"size None must give 1 to 4 sizes"),
    (lambda: F.resize(X4, ()), ValueError, r"size \(\) must give 1 to 4 sizes"),
    (lambda: F.resize(X4, (2.5, 2)), TypeError, r"size must be an int or a sequence of 2 ints"),
    (lambda: F.resize(X4, (True, 2)), TypeError, r"size must be an int or a sequence of 2 ints"),
    (lambda: F.resize(X4, (2, 2), scales=(True, 2.0)), TypeError,
     r"scales must be a number or a sequence of 2"),
    (lambda: F.resize(X4, (2, 2), scales=(0.0, 2.0)), ValueError,
     r"scales must be positive and finite"),
    (lambda: F.resize(np.zeros((2, 0)), 3), ValueError, r"cannot resize empty axes"),
]


@pytest.mark.parametrize("call, error, message", ERRORS)
def test_resize_errors_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_nearest_interpolation_of_volumes():
    """mode "nearest" takes 3-, 4- and 5-D inputs (1 to 3 spatial axes), as PyTorch: a 2x
    upsampling of a 2x2x2 volume repeats each voxel in a 2x2x2 block."""
    x = np.arange(8.0).reshape(1, 1, 2, 2, 2)
    out = F.interpolate(x, scale_factor=2, mode="nearest").data
    np.testing.assert_array_equal(out, x.repeat(2, axis=2).repeat(2, axis=3).repeat(2, axis=4))
