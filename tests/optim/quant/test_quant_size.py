"""Model bytes of quantized models, and the docstring examples of the model-level modules."""
import doctest
import importlib

import numpy as np
import pytest

from minnet import models
from minnet.data import load_mnist
from optim.metrics import count_params
from optim.quant import calibrate, convert, packed_bytes, prepare, quantized_model_bytes


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_packed_bytes(bits):
    for n in (0, 1, 7, 8, 61470):
        packed = packed_bytes(n, bits)
        assert 8 * packed >= n * bits > 8 * (packed - 1)


def test_quantized_model_bytes_int8():
    model = models.lenet5()
    converted = convert(calibrate(prepare(model), load_mnist("train")[0][:32]))
    sizes = quantized_model_bytes(converted)
    layers = [m for m in model.modules() if hasattr(m, "weight") and m.weight is not None]
    weights = sum(m.weight.size for m in layers)
    channels = sum(m.weight.shape[0] for m in layers)
    assert sizes["fp32"] == 4 * count_params(model)
    # int8 weights, a float32 scale and an int32 bias per channel, (scale, zero point) for
    # the input and each of the 5 layer outputs
    assert sizes["total"] == weights + 4 * channels + 4 * channels + 6 * 8
    assert sizes["ratio"] <= 0.26


def test_low_bit_weights_pack():
    model = models.lenet5()
    eight = quantized_model_bytes(convert(prepare(model, weight_only=True)))
    four = quantized_model_bytes(convert(prepare(model, weight_bits=4, weight_only=True)))
    assert eight["weights"] - four["weights"] == eight["weights"] // 2
    assert four["activation_qparams"] == 0


def test_errors():
    with pytest.raises(ValueError, match="bits"):
        packed_bytes(3, 0)
    with pytest.raises(TypeError, match="frozen QuantSequential"):
        quantized_model_bytes(models.lenet5())


@pytest.mark.parametrize("name", ["ste", "size"])
def test_docstring_examples(name):
    module = importlib.import_module(f"optim.quant.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE,
                             extraglobs={"np": np})
    assert result.attempted > 0 and result.failed == 0
