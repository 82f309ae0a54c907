"""Elementwise ops: finite-difference gradients with broadcasting, PyTorch agreement, kinks."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import helpers
import minnet
from minnet import functional as F

# name: (minnet op, torch op given the torch module, range of a, range of b, kinks of b)
BINARY = {
    "add": (F.add, lambda torch: torch.add, (-3, 3), (-3, 3), ()),
    "sub": (F.sub, lambda torch: torch.sub, (-3, 3), (-3, 3), ()),
    "mul": (F.mul, lambda torch: torch.mul, (-3, 3), (-3, 3), ()),
    "div": (F.div, lambda torch: torch.div, (-3, 3), (-3, 3), (0.0,)),
    "pow": (F.pow, lambda torch: torch.pow, (0.5, 2), (-2, 2), ()),
    "operator_pow": (lambda a, b: a ** b, lambda torch: lambda a, b: a ** b, (0.5, 2), (-2, 2), ()),
}

# name: (minnet op, torch op given the torch module, low, high, kinks)
UNARY = {
    "neg": (F.neg, lambda torch: torch.neg, -3, 3, ()),
    "exp": (F.exp, lambda torch: torch.exp, -3, 3, ()),
    "log": (F.log, lambda torch: torch.log, 0.1, 3, ()),
    "sqrt": (F.sqrt, lambda torch: torch.sqrt, 0.1, 3, ()),
    "abs": (F.abs, lambda torch: torch.abs, -3, 3, (0.0,)),
    "clip": (lambda x: F.clip(x, -1.0, 1.5), lambda torch: lambda x: torch.clamp(x, -1.0, 1.5),
             -3, 3, (-1.0, 1.5)),
    "clip_min": (lambda x: F.clip(x, min=0.5), lambda torch: lambda x: torch.clamp(x, min=0.5),
                 -3, 3, (0.5,)),
    "clip_max": (lambda x: F.clip(x, max=0.5), lambda torch: lambda x: torch.clamp(x, max=0.5),
                 -3, 3, (0.5,)),
    "relu": (F.relu, lambda torch: torch.relu, -3, 3, (0.0,)),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1),
                   lambda torch: lambda x: torch.nn.functional.leaky_relu(x, 0.1), -3, 3, (0.0,)),
    "sigmoid": (F.sigmoid, lambda torch: torch.sigmoid, -5, 5, ()),
    "tanh": (F.tanh, lambda torch: torch.tanh, -3, 3, ()),
    "gelu": (F.gelu, lambda torch: torch.nn.functional.gelu, -4, 4, ()),
    "erf": (F.erf, lambda torch: torch.erf, -3, 3, ()),
    "tensor_erf": (lambda x: x.erf(), lambda torch: lambda x: x.erf(), -3, 3, ()),
    "hardsigmoid": (F.hardsigmoid, lambda torch: torch.nn.functional.hardsigmoid, -5, 5, (-3.0, 3.0)),
    "hardsigmoid_onnx": (lambda x: F.hardsigmoid(x, alpha=0.2, beta=0.5),
                         lambda torch: lambda x: torch.clamp(0.2 * x + 0.5, 0, 1), -4, 4, (-2.5, 2.5)),
    "hardswish": (F.hardswish, lambda torch: torch.nn.functional.hardswish, -5, 5, (-3.0, 3.0)),
}


def _draw_binary_inputs(data, name):
    _, _, (a_low, a_high), (b_low, b_high), b_kinks = BINARY[name]
    shape_a, shape_b = data.draw(helpers.broadcastable_shapes())
    a = data.draw(helpers.float_arrays(shape_a, a_low, a_high))
    b = data.draw(helpers.float_arrays(shape_b, b_low, b_high, avoid=b_kinks, margin=0.3))
    return a, b


def _draw_unary_input(data, name):
    _, _, low, high, kinks = UNARY[name]
    return data.draw(helpers.float_arrays(data.draw(helpers.shapes()), low, high, avoid=kinks))


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_op_gradients_with_broadcasting(name, data):
    helpers.check_gradients(BINARY[name][0], *_draw_binary_inputs(data, name))


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_op_matches_torch(name, data):
    torch = pytest.importorskip("torch")
    helpers.compare_with_torch(BINARY[name][0], BINARY[name][1](torch),
                               *_draw_binary_inputs(data, name))


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_op_gradients(name, data):
    helpers.check_gradients(UNARY[name][0], _draw_unary_input(data, name))


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_op_matches_torch(name, data):
    torch = pytest.importorskip("torch")
    helpers.compare_with_torch(UNARY[name][0], UNARY[name][1](torch), _draw_unary_input(data, name))


@given(data=st.data(), exponent=st.sampled_from([2, 3, -1, 0.5]))
def test_power_by_a_constant_gradient(data, exponent):
    """d/dx x^p = p x^(p-1); negative bases are fine for integer p."""
    low = 0.2 if exponent == 0.5 else -3
    x = data.draw(helpers.float_arrays(data.draw(helpers.shapes()), low, 3, avoid=(0.0,), margin=0.2))
    helpers.check_gradients(lambda t: t ** exponent, x)


REFLECTED = {
    "add": lambda c, t: c + t, "sub": lambda c, t: c - t, "mul": lambda c, t: c * t,
    "truediv": lambda c, t: c / t, "pow": lambda c, t: c ** t, "matmul": lambda c, t: c @ t,
}


@pytest.mark.parametrize("name", sorted(REFLECTED))
def test_reflected_operators_with_an_ndarray_on_the_left(name):
    """ndarray (op) Tensor defers to the Tensor: a Tensor with NumPy's value and gradients."""
    rng = np.random.default_rng(0)
    c, x = rng.uniform(0.5, 2.0, (3, 3)), rng.uniform(0.5, 2.0, (3, 3))
    op = REFLECTED[name]
    out = op(c, minnet.tensor(x))
    assert isinstance(out, minnet.Tensor)
    np.testing.assert_allclose(out.data, op(c, x), rtol=1e-14)
    helpers.check_gradients(lambda t: op(c, t), x)


def _draw_without_ties(data):
    shape_a, shape_b = data.draw(helpers.broadcastable_shapes())
    a = data.draw(helpers.float_arrays(shape_a))
    b = data.draw(helpers.float_arrays(shape_b, avoid=a, margin=1e-3))
    return a, b


@pytest.mark.parametrize("op", [F.maximum, F.minimum])
@given(data=st.data())
def test_maximum_and_minimum_gradients_away_from_ties(op, data):
    helpers.check_gradients(op, *_draw_without_ties(data))


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@given(data=st.data())
def test_maximum_and_minimum_match_torch(name, data):
    torch = pytest.importorskip("torch")
    helpers.compare_with_torch(getattr(F, name), getattr(torch, name), *_draw_without_ties(data))


def _draw_where_inputs(data):
    shape_c, shape_a, shape_b = data.draw(helpers.broadcastable_shapes(num_shapes=3))
    condition = data.draw(hnp.arrays(np.bool_, shape_c))
    return condition, data.draw(helpers.float_arrays(shape_a)), data.draw(helpers.float_arrays(shape_b))


@given(data=st.data())
def test_where_gradients_with_broadcasting(data):
    condition, a, b = _draw_where_inputs(data)
    helpers.check_gradients(lambda s, t: F.where(condition, s, t), a, b)


@given(data=st.data())
def test_where_matches_torch(data):
    torch = pytest.importorskip("torch")
    condition, a, b = _draw_where_inputs(data)
    helpers.compare_with_torch(lambda s, t: F.where(condition, s, t),
                               lambda s, t: torch.where(torch.from_numpy(condition), s, t), a, b)


# ---- kinks and ties: the conventions of PyTorch ------------------------------------------


def _grad(fn, x):
    t = minnet.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    fn(t).sum().backward()
    return t.grad


def test_relu_derivative_at_zero_is_zero():
    np.testing.assert_array_equal(_grad(F.relu, [-1.0, 0.0, 2.0]), [0.0, 0.0, 1.0])


def test_leaky_relu_derivative_at_zero_is_the_slope():
    np.testing.assert_array_equal(_grad(lambda t: F.leaky_relu(t, 0.2), [-1.0, 0.0, 2.0]),
                                  [0.2, 0.2, 1.0])


def test_abs_derivative_at_zero_is_zero():
    np.testing.assert_array_equal(_grad(F.abs, [-2.0, 0.0, 3.0]), [-1.0, 0.0, 1.0])


def test_clip_passes_the_gradient_at_its_bounds():
    np.testing.assert_array_equal(_grad(lambda t: F.clip(t, -1.0, 1.0), [-2.0, -1.0, 0.0, 1.0, 2.0]),
                                  [0.0, 1.0, 1.0, 1.0, 0.0])


@pytest.mark.parametrize("op", [F.maximum, F.minimum])
def test_maximum_and_minimum_split_ties_evenly(op):
    a = minnet.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = minnet.tensor(np.array([1.0, 0.0, 3.0]), requires_grad=True)
    op(a, b).sum().backward()
    winner_a = 1.0 if op is F.maximum else 0.0
    np.testing.assert_array_equal(a.grad, [0.5, winner_a, 0.5])
    np.testing.assert_array_equal(b.grad, [0.5, 1 - winner_a, 0.5])


@pytest.mark.parametrize("op", [F.maximum, F.minimum])
def test_maximum_of_a_tensor_with_itself_is_the_identity(op):
    np.testing.assert_array_equal(_grad(lambda t: op(t, t), [1.0, -2.0]), [1.0, 1.0])


@pytest.mark.parametrize("name", ["relu", "abs", "clip", "leaky_relu", "hardsigmoid", "hardswish"])
def test_kink_conventions_match_torch(name):
    torch = pytest.importorskip("torch")
    ours, theirs, *_, kinks = UNARY[name]
    x = np.array([*kinks, -2.5, 2.5])
    helpers.compare_with_torch(ours, theirs(torch), x)


def test_maximum_ties_match_torch():
    torch = pytest.importorskip("torch")
    a, b = np.array([1.0, 2.0, -1.0]), np.array([1.0, 0.0, -1.0])
    helpers.compare_with_torch(F.maximum, torch.maximum, a, b)
    helpers.compare_with_torch(F.minimum, torch.minimum, a, b)


# ---- stability and errors ----------------------------------------------------------------


def test_sigmoid_saturates_without_overflow():
    x = minnet.tensor(np.array([-1000.0, 0.0, 1000.0]), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.sigmoid(x)
        y.sum().backward()
    np.testing.assert_array_equal(y.data, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(x.grad, [0.0, 0.25, 0.0])


def test_gelu_is_x_times_the_normal_cdf():
    from scipy.stats import norm
    x = np.linspace(-4, 4, 17)
    np.testing.assert_allclose(F.gelu(x).data, x * norm.cdf(x), rtol=1e-12, atol=1e-15)


def test_hard_activation_derivatives_at_their_corners():
    """hardsigmoid'(+-3) = 0 (open interval); hardswish' = x/3 + 1/2 only on the open (-3, 3),
    so 0 at -3 and 1 at 3, as PyTorch's backward."""
    corners = [-3.0, 3.0]
    np.testing.assert_array_equal(_grad(F.hardsigmoid, corners), [0.0, 0.0])
    np.testing.assert_array_equal(_grad(F.hardswish, corners), [0.0, 1.0])


@given(data=st.data())
def test_hardswish_is_x_times_hardsigmoid(data):
    x = data.draw(helpers.float_arrays(data.draw(helpers.shapes()), -5, 5))
    np.testing.assert_allclose(F.hardswish(x).data, x * F.hardsigmoid(x).data, rtol=1e-14, atol=1e-300)


def test_erf_is_the_integral_of_the_gaussian_density():
    from scipy.integrate import quad
    x = np.linspace(-3, 3, 13)
    integral = [2 / np.sqrt(np.pi) * quad(lambda t: np.exp(-t * t), 0, v)[0] for v in x]
    np.testing.assert_allclose(F.erf(x).data, integral, rtol=1e-10, atol=1e-12)


def test_new_activations_keep_float32():
    x = minnet.tensor(np.linspace(-4, 4, 9, dtype=np.float32), requires_grad=True)
    for op in (F.erf, F.hardsigmoid, F.hardswish):
        y = op(x)
        y.sum().backward()
        assert y.dtype == x.grad.dtype == np.float32


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.hardsigmoid(np.ones(2), alpha=float("nan")), ValueError, r"alpha must be a finite number, got nan"),
    (lambda: F.hardsigmoid(np.ones(2), beta="1"), ValueError, r"beta must be a finite number, got '1'"),
    (lambda: F.erf(np.ones(2, np.int64)), TypeError, r"x must be a floating tensor, got dtype int64"),
    (lambda: F.hardswish(np.ones(2, bool)), TypeError, r"x must be a floating tensor, got dtype bool"),
])
def test_new_activation_errors_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_clip_rejects_missing_or_crossed_bounds():
    x = minnet.tensor(np.ones(2))
    with pytest.raises(ValueError, match="at least one"):
        F.clip(x)
    with pytest.raises(ValueError, match=r"min \(2.0\).*max \(1.0\)"):
        F.clip(x, 2.0, 1.0)


@pytest.mark.parametrize("op, grad_a, grad_b", [
    (F.mul, lambda a, b: b, lambda a, b: a),
    (F.div, lambda a, b: 1 / b, lambda a, b: -a / b ** 2)])
@pytest.mark.parametrize("which", [0, 1])
def test_binary_gradient_reaches_the_one_operand_that_needs_it(op, grad_a, grad_b, which):
    """Only a (or only b) requires a gradient: it gets d(a op b)/d itself, the other none."""
    a, b = np.array([1.5, -2.0]), np.array([0.5, 4.0])
    ta = minnet.tensor(a, requires_grad=which == 0)
    tb = minnet.tensor(b, requires_grad=which == 1)
    op(ta, tb).sum().backward()
    wanted, other = (ta, tb) if which == 0 else (tb, ta)
    np.testing.assert_allclose(wanted.grad, (grad_a if which == 0 else grad_b)(a, b))
    assert other.grad is None


def test_power_gradient_in_the_exponent_is_zero_where_the_base_is_not_positive():
    """d(a^b)/db = a^b ln a for a > 0, taken as 0 where a <= 0: at a = 0 for b >= 0 as
    PyTorch (which masks a = 0 only there), also at a = 0 with b < 0 (a^b = inf) and for a
    negative base with an integer exponent."""
    a = minnet.tensor(np.array([0.0, 0.0, -2.0, 2.0]))
    b = minnet.tensor(np.array([2.0, -1.0, 3.0, 3.0]), requires_grad=True)
    with np.errstate(divide="ignore"):
        F.pow(a, b).backward(np.ones(4))
    np.testing.assert_allclose(b.grad, [0.0, 0.0, 0.0, 8.0 * np.log(2.0)])
