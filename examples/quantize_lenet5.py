"""Quantize a trained LeNet-5 to int8 after training and run it with integer arithmetic only.

    python examples/quantize_lenet5.py --epochs 20

Trains LeNet-5 on the bundled MNIST split, then: post-training int8 quantization (weights per
channel symmetric, activations per tensor affine, min-max ranges from 20 calibration
batches), the same model on integer kernels, and 4-bit weights with MSE-chosen ranges.
"""
import argparse

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim.quant import IntegerModel, calibrate, convert, prepare, quantized_model_bytes

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--limit", type=int, default=None, help="train on this many images only")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
if args.limit:
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]

minnet.manual_seed(args.seed)
model = models.lenet5()
fit(model, optimizers.Adam(model.parameters(), lr=1e-3), (x_train, y_train), args.epochs,
    seed=args.seed)
test = (x_test, y_test)
print(f"float32 test accuracy {100 * evaluate(model, test)['accuracy']:.2f}%")

int8 = convert(calibrate(prepare(model), x_train, max_batches=20))
sizes = quantized_model_bytes(int8)
print(f"int8 (simulated) test accuracy {100 * evaluate(int8, test)['accuracy']:.2f}%, "
      f"{sizes['total']} bytes = {sizes['ratio']:.3f} x float32's {sizes['fp32']}")

integer_accuracy = (IntegerModel(int8).predict(x_test) == y_test).mean()
print(f"int8 (integer kernels) test accuracy {100 * integer_accuracy:.2f}%")

four_bit = convert(prepare(model, weight_bits=4, weight_observer="mse", weight_only=True))
print(f"4-bit weights (MSE ranges) test accuracy {100 * evaluate(four_bit, test)['accuracy']:.2f}%")
