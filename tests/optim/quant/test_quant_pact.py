"""PACT (Choi et al. 2018): learnable activation clipping, its gradients and its use in QAT."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import optimizers
from minnet.train import fit
from optim.quant import (
    FixedFakeQuantize,
    IntegerModel,
    PACTFakeQuantize,
    QuantStage,
    convert,
    pact_clip,
    pact_fake_quantize,
    pact_gradients,
    pact_quantize,
    prepare_qat,
)

from quant_helpers import float_arrays
from test_quant_ptq import images, run, tiny_cnn

SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)
ALPHAS = st.floats(0.125, 20.0, width=32)


@given(x=float_arrays(np.float64, SHAPES, 30.0), alpha=ALPHAS)
def test_pact_clip_is_clip_to_alpha(x, alpha):
    """0.5(|x| - |x - alpha| + alpha) = clip(x, 0, alpha) (PACT eq. 1)."""
    np.testing.assert_allclose(pact_clip(x, alpha), np.clip(x, 0, alpha), atol=1e-12)


@given(x=float_arrays(np.float64, SHAPES, 30.0), alpha=ALPHAS, bits=st.integers(1, 8))
def test_pact_quantize_rounds_the_clipped_value(x, alpha, bits):
    """y_q = round(y (2^k-1)/alpha) alpha/(2^k-1) with y = clip(x, 0, alpha) (PACT eq. 2):
    the output lies on the grid, within half a step of y, with at most 2^k levels."""
    n = 2 ** bits - 1
    step = alpha / n
    out = pact_quantize(x, alpha, bits)
    y = np.clip(x, 0, alpha)
    assert np.all(np.abs(out - y) <= step / 2 * (1 + 1e-9))
    codes = out / step
    np.testing.assert_allclose(codes, np.rint(codes), atol=1e-6)
    assert np.all((codes > -1e-6) & (codes < n + 1e-6))


def test_pact_alpha_gradient_is_paper_eq_3():
    """dy_q/dalpha = 1[x >= alpha] (STE for the rounding), dy_q/dx = 1[0 <= x < alpha]; the L2
    regulariser adds lambda * alpha."""
    x = minnet.tensor(np.array([-1.0, 0.0, 0.4, 1.9, 2.0, 5.0]), requires_grad=True)
    alpha = minnet.tensor(np.array(2.0), requires_grad=True)
    upstream = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    pact_fake_quantize(x, alpha, 4, alpha_decay=0.1).backward(upstream)
    np.testing.assert_array_equal(x.grad, upstream * [0, 1, 1, 1, 0, 0])
    assert alpha.grad == pytest.approx(5.0 + 6.0 + 0.1 * 2.0)


@given(seed=st.integers(0, 2**16), decay=st.sampled_from([0.0, 0.05]))
def test_pact_matches_finite_differences_of_the_clipped_surrogate(seed, decay):
    """With the rounding replaced by the identity (the STE's surrogate), the loss
    sum(g * clip(x, 0, alpha)) + decay/2 alpha^2 has exactly pact_gradients' derivative in x and
    alpha; checked by central differences away from the kinks."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 4, size=20)
    alpha, g = 1.7, rng.normal(size=20)
    x = x[np.abs(x - alpha) > 1e-3]
    g = g[:x.size]
    grad_x, grad_alpha = pact_gradients(g, x, alpha, decay)

    def loss(x_, a_):
        return np.sum(g * np.clip(x_, 0, a_)) + decay / 2 * a_ ** 2

    h = 1e-6
    fd_alpha = (loss(x, alpha + h) - loss(x, alpha - h)) / (2 * h)
    assert grad_alpha == pytest.approx(fd_alpha, rel=1e-6, abs=1e-8)
    for i in np.flatnonzero(np.abs(x) > 1e-3):
        e = np.zeros_like(x)
        e[i] = h
        assert grad_x[i] == pytest.approx((loss(x + e, alpha) - loss(x - e, alpha)) / (2 * h),
                                          abs=1e-6)


def test_pact_matches_torch_clamp_with_learnable_alpha():
    """Optional oracle: torch's clamp(x, 0, alpha) with a rounding STE gives the same values and
    the same gradients in x and alpha (away from x = alpha and x = 0)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 3, size=50)
    g = rng.normal(size=50)
    n = 2 ** 3 - 1
    xt = torch.tensor(x, requires_grad=True)
    at = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    y = torch.minimum(torch.relu(xt), at)
    s = at / n
    yq = y + (torch.round(y / s) * s - y).detach()
    yq.backward(torch.tensor(g))
    xm = minnet.tensor(x, requires_grad=True)
    am = minnet.tensor(np.array(1.3), requires_grad=True)
    out = pact_fake_quantize(xm, am, 3)
    out.backward(g)
    np.testing.assert_allclose(out.data, yq.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(xm.grad, xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(am.grad, at.grad.numpy(), rtol=1e-10)


def test_pact_qat_converts_to_an_equal_affine_quantizer():
    """prepare_qat(activation_method="pact") puts PACT on fused-ReLU outputs only; training
    moves alpha; convert() gives FixedFakeQuantize(alpha/(2^k-1), 0) that reproduces the
    trained model's eval output exactly, and the integer engine runs it."""
    x = images(64)
    y = (x.reshape(64, -1).mean(axis=1) > 0.5).astype(np.int64)
    qat = prepare_qat(tiny_cnn(), weight_bits=4, activation_bits=4, activation_method="pact")
    stages = [m for m in qat if isinstance(m, QuantStage)]
    assert [isinstance(s.output_quant, PACTFakeQuantize) for s in stages] == [True, True, False]
    for s in stages[:2]:
        s.output_quant.alpha.data[...] = 2.0
    fit(qat, optimizers.Adam(qat.parameters(), lr=1e-2), (x, y), 2, batch_size=16,
        progress=False)
    alphas = [float(s.output_quant.alpha.data) for s in stages[:2]]
    assert all(a != 2.0 for a in alphas)
    qat.eval()
    converted = convert(qat)
    frozen = [m for m in converted if isinstance(m, QuantStage)]
    for stage, alpha in zip(frozen[:2], alphas):
        assert isinstance(stage.output_quant, FixedFakeQuantize)
        assert float(stage.output_quant.scale) == pytest.approx(alpha / 15, rel=1e-6)
        assert int(stage.output_quant.zero_point) == 0
    qat16 = prepare_qat(tiny_cnn(), weight_bits=4, activation_bits=16, activation_method="pact",
                        weight_method="ste")
    run(qat16, x)
    qat16.eval()
    np.testing.assert_array_equal(run(convert(qat16), x), run(qat16, x))
    predicted = IntegerModel(converted).predict(x)
    assert np.mean(predicted == run(converted, x).argmax(axis=1)) >= 0.9


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 0.0}, "alpha"), ({"alpha_decay": -1.0}, "alpha_decay")])
def test_pact_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PACTFakeQuantize(4, **kwargs)
    with pytest.raises(ValueError, match="signed_activations"):
        prepare_qat(tiny_cnn(), activation_method="pact", signed_activations=True)
