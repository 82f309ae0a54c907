"""DoReFa-Net (Zhou et al. 2016): k-bit weights by tanh normalisation, k-bit activations on
[0, 1], their straight-through gradients and their use in QAT."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import optimizers
from minnet.train import fit
from optim.quant import (
    DoReFaActivationQuantize,
    DoReFaWeightQuantize,
    IntegerModel,
    QuantStage,
    convert,
    dorefa_activation,
    dorefa_activation_ste,
    dorefa_weight,
    dorefa_weight_codes,
    dorefa_weight_ste,
    prepare_qat,
    quantize_k,
)

from quant_helpers import float_arrays
from test_quant_ptq import images, run, tiny_cnn

SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)


@given(x=hnp.arrays(np.float64, SHAPES, elements=st.floats(0, 1)), bits=st.integers(2, 8))
def test_quantize_k_is_nearest_level(x, bits):
    """quantize_k(x) is the nearest of the 2^k levels i/(2^k - 1) (DoReFa eq. 5)."""
    levels = np.arange(2 ** bits) / (2 ** bits - 1)
    out = quantize_k(x, bits)
    nearest = np.abs(x[..., None] - levels).min(axis=-1)
    np.testing.assert_allclose(np.abs(out - x), nearest, atol=1e-12)
    assert np.all(np.isin(np.round(out * (2 ** bits - 1)), np.arange(2 ** bits)))


@given(w=float_arrays(np.float64, SHAPES, 5.0), bits=st.integers(2, 6))
def test_dorefa_weight_is_nearest_normalised_level(w, bits):
    """w_q (DoReFa eq. 9) is the nearest of 2^k evenly spaced levels in [-1, 1] to
    tanh(w)/max|tanh w|, and the codes are the odd integers c = (2^k - 1) w_q."""
    n = 2 ** bits - 1
    levels = np.linspace(-1, 1, 2 ** bits)
    target = np.tanh(w) / np.abs(np.tanh(w)).max() if np.any(w != 0) else np.zeros_like(w)
    out = dorefa_weight(w, bits)
    gap = np.abs(target[..., None] - levels).min(axis=-1)
    np.testing.assert_allclose(np.abs(out - target), gap, atol=1e-9)
    codes, scale = dorefa_weight_codes(w, bits)
    assert scale == pytest.approx(1 / n)
    assert np.all(np.abs(codes) % 2 == 1) and np.all(np.abs(codes) <= n)
    np.testing.assert_allclose(codes * scale, out, atol=1e-12)
    if np.any(w != 0):
        assert np.abs(out).max() == pytest.approx(1.0)


@given(seed=st.integers(0, 2**16), bits=st.integers(2, 5))
def test_dorefa_weight_gradient_is_the_normalisation_gradient(seed, bits):
    """The STE makes the gradient of w_q that of tanh(w)/max|tanh(w)| (the function with
    quantize_k replaced by the identity), computed here by central differences."""
    w0 = np.random.default_rng(seed).normal(size=(3, 4))
    g = np.random.default_rng(seed + 1).normal(size=(3, 4))
    w = minnet.tensor(w0, requires_grad=True)
    dorefa_weight_ste(w, bits).backward(g)

    def surrogate(v):
        return np.sum(g * np.tanh(v) / np.abs(np.tanh(v)).max())

    h = 1e-6
    numeric = np.zeros_like(w0)
    for idx in np.ndindex(w0.shape):
        e = np.zeros_like(w0)
        e[idx] = h
        numeric[idx] = (surrogate(w0 + e) - surrogate(w0 - e)) / (2 * h)
    np.testing.assert_allclose(w.grad, numeric, rtol=1e-5, atol=1e-7)


def test_dorefa_weight_matches_torch():
    """Optional oracle: the same formula written in torch with a rounding STE."""
    torch = pytest.importorskip("torch")
    w0 = np.random.default_rng(7).normal(size=(5, 6))
    g = np.random.default_rng(8).normal(size=(5, 6))
    wt = torch.tensor(w0, requires_grad=True)
    t = torch.tanh(wt)
    u = t / (2 * t.abs().max()) + 0.5
    q = u + (torch.round(u * 7) / 7 - u).detach()
    (2 * q - 1).backward(torch.tensor(g))
    w = minnet.tensor(w0, requires_grad=True)
    out = dorefa_weight_ste(w, 3)
    out.backward(g)
    np.testing.assert_allclose(out.data, (2 * q - 1).detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(w.grad, wt.grad.numpy(), rtol=1e-9, atol=1e-12)


@given(x=float_arrays(np.float64, SHAPES, 3.0), bits=st.integers(2, 8))
def test_dorefa_activation_grid_and_gradient(x, bits):
    """x_q = quantize_k(clip(x, 0, 1)); the STE gradient is 1[0 <= x <= 1]."""
    n = 2 ** bits - 1
    out = dorefa_activation(x, bits)
    assert np.all(np.abs(out - np.clip(x, 0, 1)) <= 0.5 / n + 1e-12)
    np.testing.assert_allclose(out * n, np.rint(out * n), atol=1e-9)
    t = minnet.tensor(x, requires_grad=True)
    dorefa_activation_ste(t, bits).backward(np.ones_like(x))
    np.testing.assert_array_equal(t.grad, ((x >= 0) & (x <= 1)).astype(np.float64))


def test_dorefa_qat_trains_converts_and_runs_as_integers():
    """weight_method/activation_method "dorefa": quantizers on every stage (activations on
    fused-ReLU outputs), training works, convert keeps the eval function, the integer engine
    agrees and stores the odd DoReFa codes."""
    x = images(64)
    y = (x.reshape(64, -1).mean(axis=1) > 0.5).astype(np.int64)
    qat = prepare_qat(tiny_cnn(), weight_bits=3, activation_bits=4, weight_method="dorefa",
                      activation_method="dorefa")
    stages = [m for m in qat if isinstance(m, QuantStage)]
    assert all(isinstance(s.weight_quant, DoReFaWeightQuantize) for s in stages)
    assert [isinstance(s.output_quant, DoReFaActivationQuantize) for s in stages] == [
        True, True, False]
    history = fit(qat, optimizers.Adam(qat.parameters(), lr=1e-2), (x, y), 2, batch_size=16,
                  progress=False)
    assert np.all(np.isfinite(history["train_loss"]))
    qat.eval()
    converted = convert(qat)
    integer = IntegerModel(converted)
    w_q = [op.w_q for op in integer.ops if hasattr(op, "w_q")]
    assert all(np.all(np.abs(q) % 2 == 1) and np.abs(q).max() <= 7 for q in w_q)
    simulated = run(converted, x).argmax(axis=1)
    assert np.mean(integer.predict(x) == simulated) >= 0.9
    # with a float-exact bias (16-bit activations), convert changes nothing
    qat16 = prepare_qat(tiny_cnn(), weight_bits=3, activation_bits=16, weight_method="dorefa",
                        activation_method="dorefa")
    run(qat16, x)
    qat16.eval()
    np.testing.assert_array_equal(run(convert(qat16), x), run(qat16, x))


def test_dorefa_errors():
    with pytest.raises(ValueError, match="bits"):
        dorefa_weight(np.ones(3), 1)
    with pytest.raises(ValueError, match="int8"):
        qat = prepare_qat(tiny_cnn(), weight_bits=8, weight_method="dorefa")
        run(qat, images(4))
        IntegerModel(convert(qat))
