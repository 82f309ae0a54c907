"""matmul (1-D promotion, batch broadcasting) and linear: gradients, PyTorch agreement, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
import minnet
from minnet import functional as F

sides = st.integers(1, 3)


@st.composite
def matmul_cases(draw):
    """Operand pairs of every kind NumPy's matmul accepts: vector·vector, vector·batch,
    batch·vector and batch·batch with broadcast batch dimensions."""
    m, k, n = draw(sides), draw(sides), draw(sides)
    batch_a, batch_b = draw(helpers.broadcastable_shapes(max_dims=2, max_side=3))
    kind = draw(st.sampled_from(["vv", "vm", "mv", "mm"]))
    shape_a = (k,) if kind[0] == "v" else batch_a + (m, k)
    shape_b = (k,) if kind[1] == "v" else batch_b + (k, n)
    return draw(helpers.float_arrays(shape_a)), draw(helpers.float_arrays(shape_b))


@given(matmul_cases())
def test_matmul_gradient(case):
    helpers.check_gradients(lambda a, b: a @ b, *case)


@given(matmul_cases())
def test_matmul_equals_numpy(case):
    a, b = case
    np.testing.assert_allclose(F.matmul(a, b).data, np.matmul(a, b), rtol=1e-12)


@given(matmul_cases())
def test_matmul_matches_torch(case):
    torch = pytest.importorskip("torch")
    helpers.compare_with_torch(F.matmul, torch.matmul, *case)


@st.composite
def linear_cases(draw):
    """x (*leading, in), weight (out, in) and maybe bias (out,)."""
    leading = draw(helpers.shapes(min_dims=0, max_dims=2, max_side=3))
    n_in, n_out = draw(sides), draw(sides)
    arrays = [draw(helpers.float_arrays(leading + (n_in,))),
              draw(helpers.float_arrays((n_out, n_in)))]
    if draw(st.booleans()):
        arrays.append(draw(helpers.float_arrays((n_out,))))
    return arrays


@given(linear_cases())
def test_linear_gradient(arrays):
    helpers.check_gradients(F.linear, *arrays)


@given(linear_cases())
def test_linear_is_x_times_weight_transposed_plus_bias(arrays):
    x, w, *bias = arrays
    np.testing.assert_allclose(F.linear(*arrays).data, x @ w.T + sum(bias), rtol=1e-12, atol=1e-14)


@given(linear_cases())
def test_linear_matches_torch(arrays):
    torch = pytest.importorskip("torch")
    helpers.compare_with_torch(F.linear, torch.nn.functional.linear, *arrays)


def test_matmul_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        F.matmul(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2,\)"):
        minnet.tensor(np.ones((2, 3))) @ minnet.tensor(np.ones(2))
    with pytest.raises(ValueError, match="1-D"):
        F.matmul(np.ones(3), np.float64(2.0))


def test_linear_rejects_mismatched_shapes():
    x, w = np.ones((4, 3)), np.ones((2, 3))
    with pytest.raises(ValueError, match=r"weight must be 2-D.*\(3,\)"):
        F.linear(x, np.ones(3))
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(2, 3\)"):
        F.linear(np.ones((4, 5)), w)
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\), got \(3,\)"):
        F.linear(x, w, np.ones(3))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_linear_rejects_non_floating_inputs_as_conv2d_does(dtype):
    x = np.ones((2, 3), dtype)
    with pytest.raises(TypeError, match=f"x must be a floating tensor, got dtype {np.dtype(dtype)}"):
        F.linear(x, np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match=f"x must be a floating tensor, got dtype {np.dtype(dtype)}"):
        F.conv2d(x.reshape(1, 1, 2, 3), np.ones((1, 1, 1, 1), np.float32))

