"""QAT with BatchNorm folded using batch statistics and the sigma/sigma_B correction."""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import functional as F
from minnet import nn, optimizers
from minnet.train import fit
from optim.graph.fold import fold_batchnorm
from optim.quant import (
    FakeQuantize,
    IntegerModel,
    MinMaxObserver,
    QuantStage,
    convert,
    fake_quantize,
    prepare_qat,
    qparams,
)
from optim.quant.bn_fold_qat import BnFoldQuantStage

from test_quant_ptq import images, run, tiny_cnn


def _conv_bn(seed, linear=False):
    rng = np.random.default_rng(seed)
    minnet.manual_seed(seed)
    layer = nn.Linear(5, 4) if linear else nn.Conv2d(2, 4, 3, padding=1)
    bn = nn.BatchNorm1d(4) if linear else nn.BatchNorm2d(4)
    bn.running_mean[...] = rng.normal(size=4)
    bn.running_var[...] = rng.uniform(0.2, 3.0, size=4)
    bn.weight.data[...] = rng.uniform(0.5, 2.0, size=4)
    bn.bias.data[...] = rng.normal(size=4)
    x = rng.normal(size=(6, 5) if linear else (6, 2, 5, 5)).astype(np.float32)
    return layer, bn, x


def _weight_quant():
    return FakeQuantize(MinMaxObserver(4, symmetric=True, axis=0), track_current=True)


@pytest.mark.parametrize("linear", [False, True])
@given(seed=st.integers(0, 2**16))
def test_training_forward_is_conv_then_batch_norm(linear, seed):
    """With quantization off, the training forward equals the layer followed by BatchNorm with
    batch statistics, and the running statistics move the same way."""
    layer, bn, x = _conv_bn(seed, linear)
    stage = BnFoldQuantStage(copy.deepcopy(layer), copy.deepcopy(bn)).train()
    bn.train()
    with minnet.no_grad():
        expected = bn(layer(minnet.Tensor(x))).data
        got = stage(minnet.Tensor(x)).data
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stage.bn.running_mean, bn.running_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stage.bn.running_var, bn.running_var, rtol=1e-5, atol=1e-6)


@given(seed=st.integers(0, 2**16))
def test_sigma_correction_form(seed):
    """Training output = (sigma/sigma_B) y + beta + gamma (b - mu_B)/sigma_B with
    y = conv(x, q(W gamma/sigma)) and mu_B, sigma_B the batch statistics of y sigma/gamma + b
    (Krishnamoorthi 2018, figure 8), computed here in NumPy."""
    layer, bn, x = _conv_bn(seed)
    stage = BnFoldQuantStage(layer, bn, weight_quant=_weight_quant()).train()
    sigma = np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    gamma, beta = bn.weight.data.astype(np.float64), bn.bias.data.astype(np.float64)
    # the folded weight exactly as the stage forms it (fold_batchnorm's rounding): the most
    # negative weight of a channel sits on a rounding tie, so one ulp would change its code
    w_fold, _ = fold_batchnorm(layer.weight.data, layer.bias.data, bn.running_mean,
                               bn.running_var, bn.weight.data, bn.bias.data, bn.eps)
    s, z = qparams(w_fold.min(axis=(1, 2, 3)), w_fold.max(axis=(1, 2, 3)), -8, 7, True)
    w_q = fake_quantize(w_fold, s, z, -8, 7, axis=0).astype(np.float64)
    y = F.conv2d(x.astype(np.float64), w_q, padding=1).data
    zb = y * (sigma / gamma)[None, :, None, None] + layer.bias.data[None, :, None, None]
    mu_b, var_b = zb.mean(axis=(0, 2, 3)), zb.var(axis=(0, 2, 3))
    sigma_b = np.sqrt(var_b + bn.eps)
    c = lambda v: v[None, :, None, None]  # noqa: E731
    expected = c(sigma / sigma_b) * y + c(beta) + c(gamma * (layer.bias.data - mu_b) / sigma_b)
    with minnet.no_grad():
        got = stage(minnet.Tensor(x)).data
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@given(seed=st.integers(0, 2**16))
def test_eval_forward_is_the_folded_layer(seed):
    """In eval mode the stage is conv(x, q(W_fold)) + b_fold with W_fold, b_fold from
    fold_batchnorm (running statistics), and folded_stage() computes the same."""
    layer, bn, x = _conv_bn(seed)
    stage = BnFoldQuantStage(copy.deepcopy(layer), copy.deepcopy(bn),
                             weight_quant=_weight_quant()).eval()
    w_fold, b_fold = fold_batchnorm(layer.weight.data, layer.bias.data, bn.running_mean,
                                    bn.running_var, bn.weight.data, bn.bias.data, bn.eps)
    s, z = qparams(w_fold.min(axis=(1, 2, 3)), w_fold.max(axis=(1, 2, 3)), -8, 7, True)
    expected = F.conv2d(x, fake_quantize(w_fold, s, z, -8, 7, axis=0), b_fold, padding=1).data
    np.testing.assert_allclose(run(stage, x), expected, rtol=1e-4, atol=1e-4)
    folded = stage.folded_stage().eval()
    assert isinstance(folded, QuantStage) and not isinstance(folded, BnFoldQuantStage)
    np.testing.assert_allclose(run(folded, x), expected, rtol=1e-4, atol=1e-4)
    float_stage = BnFoldQuantStage(copy.deepcopy(layer), copy.deepcopy(bn)).eval()
    np.testing.assert_allclose(run(float_stage, x),
                               F.conv2d(x, w_fold, b_fold, padding=1).data, rtol=1e-4, atol=1e-5)


def test_prepare_qat_with_batch_stats_trains_and_converts():
    """prepare_qat(batchnorm="batch_stats") trains through BnFoldQuantStage (running statistics
    move), convert folds the BatchNorm for good with the same eval function, and the integer
    engine runs the result."""
    model = tiny_cnn(batch_norm=True)
    x = images(64)
    y = (x.reshape(64, -1).mean(axis=1) > 0.5).astype(np.int64)
    qat = prepare_qat(model, weight_bits=4, batchnorm="batch_stats")
    stage = qat[1]
    assert isinstance(stage, BnFoldQuantStage) and stage.relu
    before = stage.bn.running_mean.copy()
    fit(qat, optimizers.Adam(qat.parameters(), lr=1e-2), (x, y), 1, batch_size=16,
        progress=False)
    assert not np.allclose(stage.bn.running_mean, before)
    qat16 = prepare_qat(model, weight_bits=4, activation_bits=16, batchnorm="batch_stats")
    run(qat16, x)
    qat16.eval()
    frozen16 = convert(qat16)
    assert not any(isinstance(m, BnFoldQuantStage) for m in frozen16)
    np.testing.assert_allclose(run(frozen16, x), run(qat16, x), rtol=1e-4, atol=1e-4)
    converted = convert(qat)
    simulated = run(converted, x).argmax(axis=1)
    assert np.mean(IntegerModel(converted).predict(x) == simulated) >= 0.9
    with pytest.raises(ValueError, match="batchnorm"):
        prepare_qat(model, batchnorm="running")


def test_matches_torch_conv_bn_qat_module():
    """Optional oracle: torch.ao.nn.intrinsic.qat.ConvBn2d with a per-channel symmetric 4-bit
    weight fake-quantizer gives the same training output and running statistics."""
    torch = pytest.importorskip("torch")
    from torch.ao.nn.intrinsic.qat import ConvBn2d
    from torch.ao.quantization import FakeQuantize as TorchFakeQuantize
    from torch.ao.quantization import NoopObserver, PerChannelMinMaxObserver, QConfig

    layer, bn, x = _conv_bn(5)
    weight_fq = TorchFakeQuantize.with_args(
        observer=PerChannelMinMaxObserver, quant_min=-8, quant_max=7, dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric, ch_axis=0)
    reference = ConvBn2d(2, 4, 3, padding=1, bias=True,
                         qconfig=QConfig(activation=NoopObserver, weight=weight_fq))
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(layer.weight.data))
        reference.bias.copy_(torch.tensor(layer.bias.data))
        reference.bn.weight.copy_(torch.tensor(bn.weight.data))
        reference.bn.bias.copy_(torch.tensor(bn.bias.data))
        reference.bn.running_mean.copy_(torch.tensor(bn.running_mean))
        reference.bn.running_var.copy_(torch.tensor(bn.running_var))
    reference.train()
    stage = BnFoldQuantStage(layer, bn, weight_quant=_weight_quant()).train()
    with minnet.no_grad():
        got = stage(minnet.Tensor(x)).data
    expected = reference(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.running_mean, reference.bn.running_mean.numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(bn.running_var, reference.bn.running_var.numpy(), rtol=1e-5,
                               atol=1e-6)
