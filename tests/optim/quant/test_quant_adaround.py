"""AdaRound (Nagel et al. 2020): rectified sigmoid, regulariser, annealing, learned rounding."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import nn
from optim.quant import calibrate, convert, fake_quantize, prepare, qparams
from optim.quant.adaround import (
    adaround_init,
    adaround_layer,
    adaround_model,
    adaround_regularizer,
    adaround_weights,
    beta_schedule,
    rectified_sigmoid,
)

from test_quant_ptq import run


@given(seed=st.integers(0, 2**16))
def test_rectified_sigmoid_and_inverse(seed):
    """h(V) = clip(1.2 sigmoid(V) - 0.1, 0, 1) (eq. 23, zeta = 1.1, gamma = -0.1); 0 and 1 are
    reached at finite V; h(adaround_init(W)) is the fractional part of W/s."""
    rng = np.random.default_rng(seed)
    v = rng.normal(scale=4, size=50)
    expected = np.clip((1.1 + 0.1) / (1 + np.exp(-v)) - 0.1, 0, 1)
    np.testing.assert_allclose(rectified_sigmoid(v), expected, atol=1e-12)
    assert rectified_sigmoid(np.array([-3.0]))[0] == 0 and rectified_sigmoid(np.array([3.0]))[0] == 1
    w = rng.normal(size=(4, 5))
    s = rng.uniform(0.05, 0.3, size=4)
    rest = w / s[:, None] - np.floor(w / s[:, None])
    np.testing.assert_allclose(rectified_sigmoid(adaround_init(w, s)), rest, atol=1e-9)
    t = minnet.tensor(v)
    np.testing.assert_allclose(rectified_sigmoid(t).data, expected, atol=1e-12)


def test_regularizer_vanishes_at_binary_h():
    """f_reg = sum 1 - |2h - 1|^beta (eq. 24): 0 when every h is 0 or 1, n when every h = 1/2;
    the Tensor form agrees and decreases under gradient descent towards binary h."""
    assert adaround_regularizer(np.array([-5.0, 5.0, 9.0]), 2.0) == 0.0
    h_half = np.log(0.6 / 0.6)  # sigmoid = 0.5 -> h = 0.5
    assert adaround_regularizer(np.full(4, h_half), 3.0) == pytest.approx(4.0)
    v = minnet.tensor(np.array([0.3, -0.2, 1.0]), requires_grad=True)
    reg = adaround_regularizer(v, 2.0)
    assert reg.item() == pytest.approx(adaround_regularizer(v.data, 2.0))
    reg.backward()
    moved = v.data - 0.1 * v.grad
    assert adaround_regularizer(moved, 2.0) < reg.item()


def test_beta_schedule():
    """beta = 20 through the 20 % warm-up, then linear to 2 at the end (section 5)."""
    betas = [beta_schedule(t, 100) for t in range(100)]
    assert betas[0] == betas[20] == 20.0 and betas[99] == pytest.approx(2 + 18 / 80)
    assert all(a >= b for a, b in zip(betas, betas[1:]))
    assert beta_schedule(60, 100) == pytest.approx(2 + 18 * 0.5)


@given(seed=st.integers(0, 2**16))
def test_hard_adaround_weights_are_a_rounding(seed):
    """Hard weights are s * clip(floor(W/s) + {0, 1}); from the initial V they are
    round-half-up to nearest."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, 8))
    s = np.full(3, 0.25)
    v = rng.normal(size=(3, 8))
    hard = adaround_weights(w, s, -4, 3, v, hard=True) / s[:, None]
    floor = np.floor(w / s[:, None])
    assert np.all((np.isclose(hard, np.clip(floor, -4, 3)))
                  | np.isclose(hard, np.clip(floor + 1, -4, 3)))
    start = adaround_weights(w, s, -4, 3, adaround_init(w, s), hard=True)
    np.testing.assert_allclose(start, np.clip(np.floor(w / s[:, None] + 0.5), -4, 3) * s[:, None],
                               atol=1e-12)


def _correlated_inputs(n, d, seed):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) + 2 * np.eye(d)
    return (rng.normal(size=(n, d)) @ mix).astype(np.float32)


def test_adaround_beats_nearest_on_reconstruction():
    """At 3 bits, the learned rounding has a smaller layer reconstruction error
    ||Wx - W~x||^2 than rounding to nearest (the paper's claim, section 5), and changes
    only a minority of the roundings."""
    minnet.manual_seed(0)
    layer = nn.Linear(16, 8, bias=False)
    x = _correlated_inputs(256, 16, 1)
    w = layer.weight.data
    s, _ = qparams(w.min(axis=1), w.max(axis=1), -4, 3, True)
    nearest = fake_quantize(w, s, 0, -4, 3, axis=0)
    learned = adaround_layer(layer, x, s, -4, 3, steps=300, lr=3e-2)

    def error(wq):
        return np.mean((x @ w.T - x @ wq.T) ** 2)

    assert error(learned) < error(nearest)
    assert 0 < np.mean(~np.isclose(learned, nearest)) < 0.5


def test_adaround_model_weights_on_grid_and_error_not_worse():
    """adaround_model keeps weights on the quantizer's grid (fake_quantize is the identity on
    them) and does not increase the output error against the float model."""
    minnet.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)).eval()
    x = np.abs(_correlated_inputs(256, 12, 2))
    quantized = convert(calibrate(prepare(model, weight_bits=3, weight_only=True), x))
    rounded = adaround_model(quantized, x, steps=200, lr=3e-2)
    for stage in rounded:
        wq = stage.weight_quant
        w = stage.float_weight()
        np.testing.assert_allclose(fake_quantize(w, wq.scale, wq.zero_point, wq.qmin, wq.qmax,
                                                 axis=0), w, rtol=0, atol=1e-7)
    reference = run(model, x)
    assert (np.mean((run(rounded, x) - reference) ** 2)
            <= np.mean((run(quantized, x) - reference) ** 2))
    with pytest.raises(TypeError, match="frozen QuantSequential"):
        adaround_model(model, x)
