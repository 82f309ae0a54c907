"""Integer-only inference of converted models."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import functional as F
from minnet import models, nn, optimizers
from minnet.data import load_mnist
from minnet.kernels import backend
from minnet.train import fit
from optim.quant import (
    IntegerModel,
    calibrate,
    convert,
    dequantize,
    max_pool2d_codes,
    prepare,
    prepare_qat,
    quantize,
)

from test_quant_ptq import images, tiny_cnn


@given(q=hnp.arrays(st.sampled_from([np.uint8, np.int8]),
                    hnp.array_shapes(min_dims=4, max_dims=4, min_side=3, max_side=6)),
       kernel=st.integers(1, 3), stride=st.integers(1, 2), scale=st.floats(1e-3, 1.0),
       data=st.data())
def test_max_pool_codes_commutes(q, kernel, stride, scale, data):
    padding = data.draw(st.integers(0, kernel // 2))
    info = np.iinfo(q.dtype)
    zero_point = data.draw(st.integers(info.min, info.max))
    pooled = dequantize(max_pool2d_codes(q, kernel, stride, padding), scale, zero_point,
                        dtype=np.float64)
    real = F.max_pool2d(dequantize(q, scale, zero_point, dtype=np.float64), kernel, stride,
                        padding).data
    np.testing.assert_array_equal(pooled, real)


def _lenet5_int8(n=64):
    minnet.manual_seed(0)
    x = load_mnist("train")[0][:n]
    return convert(calibrate(prepare(models.lenet5()), x)), x


@pytest.mark.skipif(not backend.HAVE_NUMBA, reason="numba is not installed")
def test_integer_lenet5_numba_equals_numpy():
    converted, x = _lenet5_int8()
    model = IntegerModel(converted)
    codes = model.quantize_input(x)
    with backend.use_backend("numpy"):
        reference = model.forward_codes(codes)
    with backend.use_backend("numba"):
        fast = model.forward_codes(codes)
    assert reference.dtype == np.uint8 and reference.shape == (len(x), 10)
    np.testing.assert_array_equal(fast, reference)


def test_integer_model_agrees_with_simulation():
    (x, y), (xt, _) = load_mnist("train"), load_mnist("test")
    minnet.manual_seed(0)
    model = models.lenet_300_100()
    fit(model, optimizers.Adam(model.parameters(), lr=1e-3), (x, y), 1, progress=False)
    converted = convert(calibrate(prepare(model), x, max_batches=10))
    with minnet.no_grad():
        simulated = converted(minnet.Tensor(xt)).data
    integer = IntegerModel(converted)
    logits = integer(xt)
    assert np.mean(logits.argmax(axis=1) == simulated.argmax(axis=1)) >= 0.995
    np.testing.assert_array_equal(integer.predict(xt, batch_size=100), logits.argmax(axis=1))
    # each logit is within a few output steps of the simulation
    out = converted[-1].output_quant
    assert np.abs(logits - simulated).max() <= 4 * out.scale


def test_per_tensor_weights_run_as_integers():
    """QConfig(per_channel_weights=False): one weight scale per layer, repeated per output
    channel on the integer engine, whose codes are quantize(W) at that scale; the integer model
    agrees with the simulation."""
    x = images(64)
    converted = convert(calibrate(prepare(tiny_cnn(), per_channel_weights=False), x))
    integer = IntegerModel(converted)
    layers = [op for op in integer.ops if hasattr(op, "w_q")]
    for op, stage in zip(layers, [m for m in converted if hasattr(m, "weight_quant")]):
        wq = stage.weight_quant
        assert np.ndim(wq.scale) == 0
        np.testing.assert_array_equal(op.w_q, quantize(stage.float_weight(), wq.scale, 0,
                                                       wq.qmin, wq.qmax))
    with minnet.no_grad():
        simulated = converted(minnet.Tensor(x)).data.argmax(axis=1)
    assert np.mean(integer.predict(x) == simulated) >= 0.95


@given(x=hnp.arrays(np.float32, st.integers(1, 20),
                    elements=st.floats(-np.inf, np.inf, allow_nan=False, width=32)))
def test_input_and_output_steps_equal_quantize_and_dequantize(x):
    model = IntegerModel(convert(calibrate(prepare(nn.Sequential(nn.Linear(1, 2))),
                                           np.linspace(-3, 3, 10, dtype=np.float32)[:, None])))
    scale, zero_point, qmin, qmax = model.input_qparams
    x = x[:, None]
    codes = model.quantize_input(x)
    with np.errstate(over="ignore"):
        expected = quantize(x, np.float32(scale), zero_point, qmin, qmax)
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(model(x), dequantize(model.forward_codes(codes),
                                                       np.float32(model.output_qparams[0]),
                                                       model.output_qparams[1]))
    with pytest.raises(ValueError, match="NaN"):
        model.quantize_input(np.full((1, 1), np.nan, np.float32))


def test_standalone_relu_clamps_at_the_zero_point():
    model = nn.Sequential(nn.Linear(4, 3), nn.Identity(), nn.ReLU())
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    converted = convert(calibrate(prepare(model, signed_activations=True), x))
    integer = IntegerModel(converted)
    codes = integer.forward_codes(integer.quantize_input(x))
    assert codes.min() >= int(converted[1].output_quant.zero_point)


@pytest.mark.parametrize("error, message, build", [
    (ValueError, "weight-only", lambda: convert(prepare(tiny_cnn(), weight_only=True))),
    (ValueError, "up to 8-bit", lambda: convert(calibrate(prepare(tiny_cnn(),
                                                                  activation_bits=12), images()))),
    (TypeError, "frozen", lambda: prepare_qat(tiny_cnn())),
    (ValueError, "groups", lambda: convert(calibrate(prepare(
        nn.Sequential(nn.Conv2d(2, 2, 1, groups=2))), np.ones((1, 2, 3, 3), np.float32)))),
])
def test_integer_model_errors(error, message, build):
    with pytest.raises(error, match=message):
        IntegerModel(build())
