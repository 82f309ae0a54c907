"""Movement ops: reshape, transpose/permute, flatten, getitem (slices and integer arrays with
repeated indices), concatenate, stack, pad — gradients, PyTorch agreement, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
import minnet
from minnet import functional as F


@st.composite
def reshape_cases(draw):
    """An array and a target shape of the same size (a permutation of its dims, one maybe -1)."""
    shape = draw(helpers.shapes(min_dims=1))
    target = list(draw(st.permutations(shape)))
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return draw(helpers.float_arrays(shape)), tuple(target)


@given(reshape_cases())
def test_reshape_gradient(case):
    x, target = case
    helpers.check_gradients(lambda t: t.reshape(target), x)


@given(reshape_cases())
def test_reshape_matches_torch(case):
    pytest.importorskip("torch")
    x, target = case
    helpers.compare_with_torch(lambda t: F.reshape(t, *target), lambda t: t.reshape(target), x)


@st.composite
def permute_cases(draw):
    shape = draw(helpers.shapes(min_dims=1))
    return draw(helpers.float_arrays(shape)), tuple(draw(st.permutations(range(len(shape)))))


@given(permute_cases())
def test_permute_gradient(case):
    x, axes = case
    helpers.check_gradients(lambda t: t.permute(*axes), x)


@given(permute_cases())
def test_permute_and_transpose_match_torch(case):
    pytest.importorskip("torch")
    x, axes = case
    helpers.compare_with_torch(lambda t: t.transpose(axes), lambda t: t.permute(axes), x)
    reverse = tuple(reversed(range(x.ndim)))
    helpers.compare_with_torch(lambda t: t.T, lambda t: t.permute(reverse), x)


@st.composite
def flatten_cases(draw):
    shape = draw(helpers.shapes(min_dims=1))
    start = draw(st.integers(0, len(shape) - 1))
    end = draw(st.integers(start, len(shape) - 1))
    negative = draw(st.booleans())  # the same axes counted from the end
    if negative:
        start, end = start - len(shape), end - len(shape)
    return draw(helpers.float_arrays(shape)), start, end


@given(flatten_cases())
def test_flatten_gradient(case):
    x, start, end = case
    helpers.check_gradients(lambda t: t.flatten(start, end), x)


@given(flatten_cases())
def test_flatten_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, start, end = case
    helpers.compare_with_torch(lambda t: F.flatten(t, start, end),
                               lambda t: torch.flatten(t, start, end), x)


# ---- indexing --------------------------------------------------------------------------


@st.composite
def basic_indices(draw, shape, allow_negative_step=True):
    """A tuple with, per leading axis, an int or a slice (any start/stop, step ±1, ±2)."""
    steps = [1, 2, -1, -2] if allow_negative_step else [1, 2]
    index = []
    for n in shape[:draw(st.integers(1, len(shape)))]:
        if draw(st.booleans()):
            index.append(draw(st.integers(-n, n - 1)))
        else:
            bound = st.none() | st.integers(-n - 1, n + 1)
            index.append(slice(draw(bound), draw(bound), draw(st.sampled_from(steps))))
    return tuple(index)


@st.composite
def slice_cases(draw, allow_negative_step=True):
    shape = draw(helpers.shapes(min_dims=1))
    index = draw(basic_indices(shape, allow_negative_step))
    return draw(helpers.float_arrays(shape)), index


@given(slice_cases())
def test_getitem_with_basic_slices_gradient(case):
    x, index = case
    helpers.check_gradients(lambda t: t[index], x)


@given(slice_cases(allow_negative_step=False))
def test_getitem_with_basic_slices_matches_torch(case):
    pytest.importorskip("torch")
    x, index = case
    helpers.compare_with_torch(lambda t: t[index], lambda t: t[index], x)


@st.composite
def integer_array_cases(draw):
    """Integer arrays indexing one or two leading axes, repeats likely (values from few)."""
    shape = draw(helpers.shapes(min_dims=1))
    n_indexed = draw(st.integers(1, min(2, len(shape))))
    length = draw(st.integers(1, 6))
    index = tuple(np.array(draw(st.lists(st.integers(-n, n - 1), min_size=length, max_size=length)))
                  for n in shape[:n_indexed])
    if n_indexed == 1 and len(shape) > 1 and draw(st.booleans()):
        index = (slice(None), np.array(draw(st.lists(st.integers(0, shape[1] - 1), min_size=1,
                                                      max_size=6))))
    return draw(helpers.float_arrays(shape)), index


@given(integer_array_cases())
def test_getitem_with_integer_arrays_gradient(case):
    x, index = case
    helpers.check_gradients(lambda t: t[index], x)


@given(integer_array_cases())
def test_getitem_with_integer_arrays_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, index = case
    torch_index = tuple(torch.from_numpy(i) if isinstance(i, np.ndarray) else i for i in index)
    helpers.compare_with_torch(lambda t: t[index], lambda t: t[torch_index], x)


def test_repeated_indices_accumulate_their_gradients():
    """d/dx_k sum_j x[idx_j] = number of times k occurs in idx."""
    index = np.array([0, 0, 3, 0, 3, 1])
    x = minnet.tensor(np.arange(5.0), requires_grad=True)
    x[index].sum().backward()
    np.testing.assert_array_equal(x.grad, np.bincount(index, minlength=5))


OTHER_INDICES = {
    "newaxis": (None, slice(None), 1),
    "ellipsis": (Ellipsis, 0),
    "mask": np.array([[True, False, True], [False, True, True]]),
    "mask_rows": (np.array([True, False]), slice(1, None)),
}


@pytest.mark.parametrize("name", sorted(OTHER_INDICES))
def test_getitem_with_newaxis_ellipsis_and_boolean_masks(name):
    x = np.random.default_rng(0).standard_normal((2, 3))
    index = OTHER_INDICES[name]
    np.testing.assert_array_equal(minnet.tensor(x)[index].data, x[index])
    helpers.check_gradients(lambda t: t[index], x)


def test_getitem_accepts_tensor_indices():
    x = minnet.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    rows = minnet.tensor(np.array([1, 1]))
    out = x[rows, minnet.tensor(np.array([0, 2]))]
    np.testing.assert_array_equal(out.data, [3.0, 5.0])


# ---- concatenate, stack, pad -----------------------------------------------------------


@st.composite
def concatenate_cases(draw):
    """1-3 arrays equal in every dim but ``axis``."""
    shape = draw(helpers.shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    arrays = []
    for _ in range(draw(st.integers(1, 3))):
        piece = list(shape)
        piece[axis] = draw(st.integers(1, 3))
        arrays.append(draw(helpers.float_arrays(tuple(piece))))
    return arrays, axis


@given(concatenate_cases())
def test_concatenate_gradient(case):
    arrays, axis = case
    helpers.check_gradients(lambda *ts: F.concatenate(ts, axis=axis), *arrays)


@given(concatenate_cases())
def test_concatenate_matches_torch(case):
    torch = pytest.importorskip("torch")
    arrays, axis = case
    helpers.compare_with_torch(lambda *ts: F.concatenate(ts, axis=axis),
                               lambda *ts: torch.cat(ts, dim=axis), *arrays)


@st.composite
def stack_cases(draw):
    shape = draw(helpers.shapes())
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    arrays = [draw(helpers.float_arrays(shape)) for _ in range(draw(st.integers(1, 3)))]
    return arrays, axis


@given(stack_cases())
def test_stack_gradient(case):
    arrays, axis = case
    helpers.check_gradients(lambda *ts: F.stack(ts, axis=axis), *arrays)


@given(stack_cases())
def test_stack_matches_torch(case):
    torch = pytest.importorskip("torch")
    arrays, axis = case
    helpers.compare_with_torch(lambda *ts: F.stack(ts, axis=axis),
                               lambda *ts: torch.stack(ts, dim=axis), *arrays)


@st.composite
def pad_cases(draw):
    shape = draw(helpers.shapes(min_dims=1))
    widths = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in shape)
    value = draw(st.floats(-2, 2))
    return draw(helpers.float_arrays(shape)), widths, value


@given(pad_cases())
def test_pad_gradient(case):
    x, widths, value = case
    helpers.check_gradients(lambda t: F.pad(t, widths, value=value), x)


@given(pad_cases())
def test_pad_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, widths, value = case
    torch_pad = tuple(w for pair in reversed(widths) for w in pair)  # last axis first
    helpers.compare_with_torch(lambda t: F.pad(t, widths, value=value),
                               lambda t: torch.nn.functional.pad(t, torch_pad, value=value), x)


def test_pad_with_one_int_pads_every_side():
    out = F.pad(np.ones((2, 3)), 1, value=7.0)
    expected = np.full((4, 5), 7.0)
    expected[1:3, 1:4] = 1.0
    np.testing.assert_array_equal(out.data, expected)


# ---- errors ----------------------------------------------------------------------------


def test_shape_errors_name_the_offending_values():
    x = minnet.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 2\)"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match=r"\(0, 0\)"):
        x.transpose(0, 0)
    with pytest.raises(ValueError, match="pad_width.*-1"):
        F.pad(x, ((0, -1), (0, 0)))
    with pytest.raises(ValueError, match="at least one"):
        F.concatenate([])
    with pytest.raises(ValueError, match="at least one"):
        F.stack([])


def test_reshape_rejects_sizes_below_minus_one():
    x = minnet.tensor(np.ones(6))
    with pytest.raises(ValueError, match=r"reshape sizes must be >= -1.*got -2 in shape \(-2, 3\)"):
        x.reshape(-2, 3)
    with pytest.raises(TypeError, match=r"reshape sizes must be ints, got 2.0"):
        x.reshape(2.0, 3)


def test_flatten_of_a_0d_tensor_is_1d_as_torch():
    x = minnet.tensor(np.float64(3.0))
    assert F.flatten(x).shape == (1,)
    torch = pytest.importorskip("torch")
    assert tuple(torch.flatten(torch.tensor(3.0)).shape) == F.flatten(x).shape


@pytest.mark.parametrize("shape, start, end, message", [
    ((), 1, -1, r"start_axis 1 is out of range for a tensor of shape \(\) \(valid: -1 to 0\)"),
    ((2, 3), 0, 2, r"end_axis 2 is out of range for a tensor of shape \(2, 3\)"),
    ((2, 3, 4), 2, 1, r"start_axis 2 comes after end_axis 1"),
])
def test_flatten_axes_out_of_range_are_named(shape, start, end, message):
    with pytest.raises(ValueError, match=message):
        F.flatten(np.zeros(shape), start, end)

