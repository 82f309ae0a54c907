"""Post-training quantization on models: prepare (BN folding, hooks), calibrate, convert."""
import numpy as np
import pytest

import minnet
from minnet import nn
from optim.quant import (
    OBSERVERS,
    FixedFakeQuantize,
    QConfig,
    QuantSequential,
    QuantStage,
    calibrate,
    convert,
    fake_quantize,
    int_range,
    prepare,
    qparams,
)


def tiny_cnn(batch_norm=False, seed=0):
    """Conv-(BN)-ReLU-pool, conv-ReLU, flatten, linear on 1x8x8 inputs, with random BN state."""
    minnet.manual_seed(seed)
    layers = [nn.Conv2d(1, 3, 3, padding=1)]
    if batch_norm:
        bn = nn.BatchNorm2d(3)
        rng = np.random.default_rng(seed)
        bn.running_mean[...] = rng.normal(size=3)
        bn.running_var[...] = rng.uniform(0.5, 2.0, size=3)
        bn.weight.data[...] = rng.uniform(0.5, 1.5, size=3)
        bn.bias.data[...] = rng.normal(size=3)
        layers.append(bn)
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()),
               nn.Flatten(), nn.Linear(16, 5)]
    return nn.Sequential(*layers).eval()


def images(n=32, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, size=(n, 1, 8, 8)).astype(np.float32)


def run(model, x):
    with minnet.no_grad():
        return model(minnet.Tensor(x)).data


def test_prepare_copies_and_keeps_the_float_function():
    model = tiny_cnn()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    prepared = calibrate(prepare(model), images())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    np.testing.assert_array_equal(run(prepared, images()), run(model, images()))


def test_batchnorm_folded_before_observing():
    model = tiny_cnn(batch_norm=True)
    prepared = prepare(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    np.testing.assert_allclose(run(prepared, images()), run(model, images()), rtol=1e-5,
                               atol=1e-5)


def test_observers_see_each_fused_layer_output():
    model = tiny_cnn()
    x = images()
    prepared = calibrate(prepare(model), x, batch_size=8)
    conv1, relu1, pool, block, flatten, fc = list(model)
    with minnet.no_grad():
        a1 = relu1(conv1(minnet.Tensor(x)))
        a2 = block(pool(a1))
        a3 = fc(flatten(a2))
    expected = [x, a1.data, a2.data, a3.data]
    observers = prepared.activation_observers
    assert len(observers) == len(expected)
    for observer, value in zip(observers, expected):
        lo, hi = observer.range()
        assert lo == value.min() and hi == value.max()


def test_convert_before_calibration_raises():
    with pytest.raises(ValueError, match="calibrat"):
        convert(prepare(tiny_cnn()))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_only_equals_model_with_fake_quantized_weights(bits):
    model = tiny_cnn()
    converted = convert(prepare(model, weight_bits=bits, weight_only=True))
    qmin, qmax = int_range(bits)
    for layer in (model[0], model[3][0], model[5]):
        w = layer.weight.data
        per_channel = w.reshape(len(w), -1)
        scale, zero_point = qparams(per_channel.min(axis=1), per_channel.max(axis=1), qmin,
                                    qmax, symmetric=True)
        layer.weight.data = fake_quantize(w, scale, zero_point, qmin, qmax, axis=0)
    np.testing.assert_allclose(run(converted, images()), run(model, images()), rtol=1e-6,
                               atol=1e-6)


def _stage_outputs(model, x):
    outputs = []
    for module in model:
        if isinstance(module, QuantStage):
            module.register_forward_hook(lambda m, a, out: outputs.append((m, out.data)))
    run(model, x)
    return outputs


def test_converted_activations_and_biases_lie_on_their_grids():
    converted = convert(calibrate(prepare(tiny_cnn()), images()))
    assert isinstance(converted, QuantSequential) and converted.frozen
    stages = _stage_outputs(converted, images())
    assert len(stages) == 3
    for stage, out in stages:
        q = stage.output_quant
        codes = out / q.scale + q.zero_point
        np.testing.assert_allclose(codes, np.rint(codes), atol=1e-3)
        assert codes.min() >= q.qmin - 1e-3 and codes.max() <= q.qmax + 1e-3
        # the bias is an int32 code at scale s_in * s_w
        bias_q = stage.bias_quant(minnet.Tensor(stage.layer.bias.data)).data.astype(np.float64)
        steps = bias_q / stage.bias_quant.scale
        np.testing.assert_allclose(steps, np.rint(steps), atol=1e-3)


def test_16_bit_ptq_is_close_to_float():
    model = tiny_cnn()
    x = images()
    converted = convert(calibrate(prepare(model, weight_bits=16, activation_bits=16), x))
    reference = run(model, x)
    error = np.abs(run(converted, x) - reference).max()
    assert error <= 1e-3 * np.abs(reference).max()


@pytest.mark.parametrize("observer", sorted(OBSERVERS))
def test_every_observer_calibrates_and_converts(observer):
    model = tiny_cnn()
    x = images()
    converted = convert(calibrate(prepare(model, weight_observer=observer,
                                          activation_observer=observer), x))
    out = run(converted, x)
    assert out.shape == (len(x), 5) and np.all(np.isfinite(out))
    assert isinstance(converted[0], FixedFakeQuantize)


def test_signed_activations_use_signed_codes():
    converted = convert(calibrate(prepare(tiny_cnn(), signed_activations=True), images()))
    assert (converted[0].qmin, converted[0].qmax) == (-128, 127)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.fc(x)


@pytest.mark.parametrize("error, message, call", [
    (ValueError, "weight_bits", lambda: prepare(tiny_cnn(), weight_bits=1)),
    (ValueError, "activation_bits", lambda: prepare(tiny_cnn(), activation_bits=17)),
    (ValueError, "weight_observer", lambda: prepare(tiny_cnn(), weight_observer="max")),
    (ValueError, "activation_observer", lambda: QConfig(activation_observer="avg")),
    (ValueError, "finite", lambda: calibrate(prepare(tiny_cnn()),
                                             np.full((2, 1, 8, 8), np.nan, np.float32))),
    (ValueError, "max_batches", lambda: calibrate(prepare(tiny_cnn()), images(), max_batches=0)),
    (ValueError, "no Linear or Conv2d", lambda: prepare(nn.Sequential(nn.ReLU()))),
    (TypeError, "Sigmoid", lambda: prepare(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid()))),
    (TypeError, "BatchNorm", lambda: prepare(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(2)))),
    (TypeError, "Residual", lambda: prepare(nn.Sequential(Residual()))),
    # average pooling of codes needs a requantization: refused, never run as a max pool
    (TypeError, "AvgPool2d", lambda: prepare(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2)))),
    (TypeError, "either config", lambda: prepare(tiny_cnn(), QConfig(), weight_bits=4)),
    (TypeError, "convert expects", lambda: convert(tiny_cnn())),
])
def test_errors_name_the_argument(error, message, call):
    with pytest.raises(error, match=message):
        call()
