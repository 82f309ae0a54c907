"""AdaRound (Nagel et al. 2020) against rounding to nearest for low-bit weights of LeNet-5.

    python examples/adaround_lenet5.py --epochs 10 --bits 4 3

Trains LeNet-5 on the bundled MNIST split, quantizes the weights per channel (symmetric,
min-max ranges; activations stay in float) by rounding to nearest, then learns the rounding
of each layer in turn with AdaRound on 1,024 training images. Prints each layer's
reconstruction error ||Wx - W~x||^2 (mean per sample, on held-out test inputs) and the test
accuracy of both models.
"""
import argparse

import numpy as np

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim.quant import QuantStage, calibrate, convert, prepare
from optim.quant._layers import layer_forward
from optim.quant.adaround import _stage_inputs, adaround_model

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit", type=int, default=None,
                    help="train on this many images only (AdaRound then runs limit/8 steps)")
parser.add_argument("--bits", type=int, nargs="+", default=[4, 3])
parser.add_argument("--steps", type=int, default=1000, help="AdaRound steps per layer")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
if args.limit:
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]
steps = min(args.steps, max(args.limit // 8, 1)) if args.limit else args.steps

minnet.manual_seed(args.seed)
model = models.lenet5()
fit(model, optimizers.Adam(model.parameters(), lr=1e-3), (x_train, y_train), args.epochs,
    seed=args.seed, progress=False)
model.eval()
print(f"float test accuracy {100 * evaluate(model, (x_test, y_test))['accuracy']:.2f}%")
calibration = x_train[:1024]
held_out = x_test[:256]


def reconstruction_errors(reference, quantized):
    """Per layer: mean over samples of ||W x - W~ x||^2, W the float weights (``reference``'s
    layers hold them), W~ the quantized model's, x the inputs the quantized layer sees."""
    errors = []
    pairs = zip((m for m in reference if isinstance(m, QuantStage)),
                (m for m in quantized if isinstance(m, QuantStage)))
    for float_stage, stage in pairs:
        x = minnet.Tensor(_stage_inputs(quantized, stage, held_out))
        with minnet.no_grad():
            w_q = stage.weight_quant(stage.layer.weight)
            exact = layer_forward(stage.layer, x, float_stage.layer.weight, None).data
            rounded = layer_forward(stage.layer, x, w_q, None).data
        errors.append(float(np.sum((exact - rounded) ** 2) / len(held_out)))
    return errors


for bits in args.bits:
    nearest = convert(calibrate(prepare(model, weight_bits=bits, weight_only=True), calibration,
                                max_batches=4))
    learned = adaround_model(nearest, calibration, steps=steps, lr=1e-2, seed=args.seed)
    for name, m in (("nearest", nearest), ("AdaRound", learned)):
        errors = " ".join(f"{e:.4g}" for e in reconstruction_errors(nearest, m))
        accuracy = 100 * evaluate(m, (x_test, y_test))["accuracy"]
        print(f"W{bits} {name:<8} test accuracy {accuracy:6.2f}%  layer errors {errors}")
