"""minnet.gradcheck accepts correct derivatives and rejects wrong ones."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import helpers
import minnet
from minnet.gradcheck import GradcheckError
from minnet.tensor import Function


class Cube(Function):
    """z = x^3; the derivative is 3 x^2, or 2 x^2 when ``wrong`` (a deliberate bug)."""
    @staticmethod
    def forward(ctx, x, *, wrong=False):
        ctx.x, ctx.wrong = x, wrong
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        return g * (2 if ctx.wrong else 3) * ctx.x ** 2


class ShiftedSum(Function):
    """z_i = sum_j x_j + x_i; the correct backward is sum(g) + g. With ``wrong`` it drops the
    off-diagonal terms (returns 2 g): right on the diagonal of the Jacobian only."""
    @staticmethod
    def forward(ctx, x, *, wrong=False):
        ctx.wrong = wrong
        return x.sum() + x

    @staticmethod
    def backward(ctx, g):
        return 2 * g if ctx.wrong else g.sum() + g


@given(st.data())
def test_gradcheck_accepts_a_correct_derivative(data):
    x = data.draw(helpers.float_arrays(data.draw(helpers.shapes())))
    assert minnet.gradcheck(lambda t: Cube.apply(t), [x])


@given(st.data())
def test_gradcheck_rejects_a_wrong_derivative(data):
    x = data.draw(helpers.float_arrays(data.draw(helpers.shapes()), 0.5, 2.0))
    with pytest.raises(GradcheckError):
        minnet.gradcheck(lambda t: Cube.apply(t, wrong=True), [x])
    assert not minnet.gradcheck(lambda t: Cube.apply(t, wrong=True), [x], raise_exception=False)


def test_a_derivative_right_only_on_the_jacobian_diagonal_is_rejected():
    x = np.linspace(-1.0, 1.0, 5)
    assert minnet.gradcheck(lambda t: ShiftedSum.apply(t), [x])
    with pytest.raises(GradcheckError, match="Jacobian|projection"):
        minnet.gradcheck(lambda t: ShiftedSum.apply(t, wrong=True), [x])


def test_the_projection_test_alone_catches_a_wrong_derivative_of_a_large_input():
    x = np.random.default_rng(1).uniform(0.5, 2.0, 1000)  # above max_full: projection only
    assert minnet.gradcheck(lambda t: Cube.apply(t), [x])
    with pytest.raises(GradcheckError, match="projection"):
        minnet.gradcheck(lambda t: Cube.apply(t, wrong=True), [x])


def test_gradcheck_checks_every_input_and_holds_fixed_ones():
    a, b = np.array([1.0, 2.0]), np.array([0.5, -1.5])
    good = lambda s, t: s * t  # noqa: E731
    wrong_in_b = lambda s, t: s * t + Cube.apply(t, wrong=True)  # noqa: E731
    assert minnet.gradcheck(good, [a, b])
    with pytest.raises(GradcheckError):
        minnet.gradcheck(wrong_in_b, [a, b])
    assert minnet.gradcheck(wrong_in_b, [a, minnet.Tensor(b)])  # b held fixed: not checked


def test_gradcheck_needs_float64_inputs():
    with pytest.raises(TypeError, match="float64.*float32"):
        minnet.gradcheck(lambda t: t * t, [np.ones(3, np.float32)])


def test_gradcheck_leaves_its_inputs_unchanged():
    x = np.array([0.5, 1.5, -2.0])
    before = x.copy()
    minnet.gradcheck(lambda t: Cube.apply(t), [x])
    np.testing.assert_array_equal(x, before)
