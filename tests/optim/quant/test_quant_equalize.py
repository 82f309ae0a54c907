"""Data-free quantization (Nagel et al. 2019): cross-layer equalization and bias correction."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import functional as F
from minnet import models, nn
from optim.quant import calibrate, convert, prepare
from optim.quant.equalize import (
    bias_correct,
    bias_correction,
    bn_input_means,
    equalization_scales,
    equalize_model,
    equalize_pair,
    relu_gaussian_mean,
)

from test_quant_ptq import run


def _imbalanced(shape, rng):
    """Weights whose output channels have ranges spread over three decades."""
    w = rng.normal(size=shape)
    return w * 10.0 ** rng.uniform(-1.5, 1.5, size=(shape[0],) + (1,) * (len(shape) - 1))


@given(seed=st.integers(0, 2**16))
def test_equalized_ranges_are_the_geometric_mean(seed):
    """After equalize_pair, r1_i = r2_i = sqrt(r1_i r2_i) (Nagel et al. 2019, eq. 11)."""
    rng = np.random.default_rng(seed)
    w1, w2 = _imbalanced((5, 3, 3, 3), rng), rng.normal(size=(4, 5, 3, 3))
    r1 = np.abs(w1).max(axis=(1, 2, 3))
    r2 = np.abs(w2).max(axis=(0, 2, 3))
    s = equalization_scales(w1, w2)
    np.testing.assert_allclose(s, np.sqrt(r1 * r2) / r2)
    new_w1, _, new_w2 = equalize_pair(w1, None, w2)
    np.testing.assert_allclose(np.abs(new_w1).max(axis=(1, 2, 3)), np.sqrt(r1 * r2))
    np.testing.assert_allclose(np.abs(new_w2).max(axis=(0, 2, 3)), np.sqrt(r1 * r2))


@pytest.mark.parametrize("kind", ["linear", "conv", "conv_flatten_linear"])
@given(seed=st.integers(0, 2**16))
def test_equalize_pair_keeps_the_function(kind, seed):
    """layer2(ReLU(layer1(x))) is unchanged: ReLU(x/s) = ReLU(x)/s for s > 0 (section 4.1),
    also through max pooling and flattening into a Linear layer."""
    rng = np.random.default_rng(seed)
    if kind == "linear":
        w1, b1, w2 = _imbalanced((6, 4), rng), rng.normal(size=6), rng.normal(size=(3, 6))
        x = rng.normal(size=(5, 4))

        def net(a, b, c):
            return F.linear(F.relu(F.linear(x, a, b)), c).data
    else:
        w1, b1 = _imbalanced((4, 2, 3, 3), rng), rng.normal(size=4)
        x = rng.normal(size=(2, 2, 8, 8))
        if kind == "conv":
            w2 = rng.normal(size=(3, 4, 3, 3))

            def net(a, b, c):
                return F.conv2d(F.relu(F.conv2d(x, a, b, padding=1)), c).data
        else:
            w2 = rng.normal(size=(3, 4 * 4 * 4))

            def net(a, b, c):
                h = F.max_pool2d(F.relu(F.conv2d(x, a, b, padding=1)), 2)
                return F.linear(h.reshape(2, -1), c).data
    np.testing.assert_allclose(net(*equalize_pair(w1, b1, w2)), net(w1, b1, w2), rtol=1e-9,
                               atol=1e-9)


def test_equalize_model_keeps_lenet5_outputs():
    """equalize_model on LeNet-5 with BatchNorm (folded first) computes the same logits, and
    every equalized pair ends with equal per-channel ranges."""
    minnet.manual_seed(0)
    model = models.lenet5(batch_norm=True).eval()
    rng = np.random.default_rng(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var[...] = 10.0 ** rng.uniform(-3, 1, size=m.running_var.shape)
    x = rng.uniform(0, 1, size=(8, 1, 28, 28)).astype(np.float32)
    equalized = equalize_model(model, iterations=50, tol=1e-5)
    np.testing.assert_allclose(run(equalized, x), run(model, x), rtol=1e-4, atol=1e-4)
    layers = [m for m in equalized if isinstance(m, (nn.Linear, nn.Conv2d))]
    for a, b in zip(layers, layers[1:]):
        np.testing.assert_allclose(equalization_scales(a.weight.data, b.weight.data), 1.0,
                                   atol=1e-3)


@given(beta=st.floats(-3, 3), gamma=st.floats(0.1, 3))
def test_relu_gaussian_mean_matches_monte_carlo(beta, gamma):
    """E[ReLU(z)], z ~ N(beta, gamma^2) (section 4.2, eq. 17), against numerical integration
    with scipy and against the gamma -> 0 limit max(beta, 0)."""
    from scipy import integrate, stats
    numeric = integrate.quad(lambda z: max(z, 0) * stats.norm.pdf(z, beta, gamma),
                             beta - 12 * gamma, beta + 12 * gamma, points=[0.0])[0]
    assert float(relu_gaussian_mean(beta, gamma)) == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    assert float(relu_gaussian_mean(beta, 0.0)) == max(beta, 0.0)


@given(seed=st.integers(0, 2**16))
def test_bias_correction_removes_the_mean_error(seed):
    """With b' = b - eps E[x], the mean output of the quantized layer equals the float
    layer's (eq. 13-14), for a Linear layer and for a conv without padding."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(4, 6))
    w_q = np.round(w * 2) / 2
    x = rng.uniform(0, 2, size=(500, 6))
    shift = bias_correction(w, w_q, x.mean(axis=0))
    np.testing.assert_allclose((x @ w_q.T - shift).mean(axis=0), (x @ w.T).mean(axis=0),
                               atol=1e-9)
    # conv: inputs constant over space, so every window's mean is the channel mean
    wc = rng.normal(size=(3, 2, 3, 3))
    wc_q = np.round(wc * 2) / 2
    xc = np.broadcast_to(rng.uniform(0, 2, size=(50, 2, 1, 1)), (50, 2, 6, 6))
    shift = bias_correction(wc, wc_q, xc.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(F.conv2d(xc, wc_q).data.mean(axis=(0, 2, 3)) - shift,
                               F.conv2d(xc, wc).data.mean(axis=(0, 2, 3)), atol=1e-9)


def test_bias_correct_recovers_the_mean_output():
    """On a Linear-ReLU-Linear model quantized to 3-bit per-tensor weights, bias_correct makes
    each layer's mean output over the data equal the float layer's on the same inputs."""
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4)).eval()
    x = rng.uniform(0, 1, size=(256, 8)).astype(np.float32)
    quantized = convert(calibrate(prepare(model, weight_bits=3, per_channel_weights=False,
                                          weight_only=True), x))
    corrected = bias_correct(quantized, x)
    first, second = corrected[0], corrected[1]
    w_q = first.layer.weight.data  # the fake-quantized weight
    float_mean = (x @ model[0].weight.data.T + model[0].bias.data).mean(axis=0)
    np.testing.assert_allclose((x @ w_q.T + first.layer.bias.data).mean(axis=0), float_mean,
                               atol=1e-5)
    hidden = np.maximum(x @ w_q.T + first.layer.bias.data, 0)
    w2_q = second.layer.weight.data
    np.testing.assert_allclose((hidden @ w2_q.T + second.layer.bias.data).mean(axis=0),
                               (hidden @ model[2].weight.data.T + model[2].bias.data).mean(axis=0),
                               atol=1e-5)
    with pytest.raises(TypeError, match="frozen QuantSequential"):
        bias_correct(model, x)


def test_equalize_errors():
    with pytest.raises(ValueError, match="input channels"):
        equalization_scales(np.ones((3, 2, 1, 1)), np.ones((2, 4, 1, 1)))
    with pytest.raises(ValueError, match="scales"):
        equalize_pair(np.ones((2, 2)), None, np.ones((2, 2)), scales=[1.0, -1.0])
    with pytest.raises(ValueError, match="input_mean"):
        bias_correction(np.ones((2, 3)), np.ones((2, 3)), np.ones(2))


def test_bn_input_means_match_the_data():
    """When the BatchNorm output really is Gaussian N(beta, gamma^2) (a linear map of Gaussian
    inputs, BN running statistics set to the true ones), bn_input_means predicts the mean of
    the next layer's input, and the analytic bias correction is close to the empirical one."""
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).eval()
    bn = model[1]
    bn.weight.data[...] = rng.uniform(0.5, 2.0, size=5)
    bn.bias.data[...] = rng.normal(size=5)
    x = rng.normal(size=(200_000, 6)).astype(np.float32)
    w, b = model[0].weight.data.astype(np.float64), model[0].bias.data.astype(np.float64)
    bn.running_mean[...] = b
    bn.running_var[...] = (w ** 2).sum(axis=1)  # Var(Wx + b) for x ~ N(0, I)
    means = bn_input_means(model)
    assert means[0] is None
    with minnet.no_grad():
        hidden = model[2](model[1](model[0](minnet.Tensor(x[:50_000])))).data
    np.testing.assert_allclose(means[1], hidden.mean(axis=0), atol=0.02)
    quantized = convert(calibrate(prepare(model, weight_bits=3, weight_only=True), x[:2048]))
    analytic = bias_correct(quantized, input_means=means)
    empirical = bias_correct(quantized, x[:50_000])
    np.testing.assert_allclose(analytic[1].layer.bias.data, empirical[1].layer.bias.data,
                               atol=0.01)
    with pytest.raises(ValueError, match="exactly one"):
        bias_correct(quantized)
