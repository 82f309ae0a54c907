"""Data-free quantization of LeNet-5 (Nagel et al. 2019): cross-layer equalization (CLE) and
bias correction (BC) before per-tensor post-training quantization.

    python examples/data_free_quantization.py --epochs 10

Trains LeNet-5 with BatchNorm on the bundled MNIST split, then quantizes it with one scale
per weight tensor (per-tensor), as is, after CLE, and after CLE + BC, and per channel for
comparison; reported: test accuracy and the mean squared error of the logits against the
float model. Per-tensor quantization suffers when the channels of a tensor have very
different ranges (in MobileNets, BatchNorm folding produces that); the second part gives the
trained model such ranges with a function-preserving rescaling (``equalize_pair`` with
random scales over a 1000x span: the float model is unchanged) and repeats the comparison.
"""
import argparse

import numpy as np

import minnet
from minnet import models, nn, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim.quant import calibrate, convert, prepare
from optim.quant._layers import flat_modules, fold_batchnorms
from optim.quant.equalize import bias_correct, equalize_model, equalize_pair

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit", type=int, default=None, help="train on this many images only")
parser.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4], help="weight bits")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
if args.limit:
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]

minnet.manual_seed(args.seed)
model = models.lenet5(batch_norm=True)
fit(model, optimizers.Adam(model.parameters(), lr=1e-3), (x_train, y_train), args.epochs,
    seed=args.seed, progress=False)
model.eval()
with minnet.no_grad():
    reference = model(minnet.Tensor(x_test)).data
calibration = x_train[:512]


def report(name, m):
    with minnet.no_grad():
        mse = float(np.mean((m(minnet.Tensor(x_test)).data - reference) ** 2))
    accuracy = 100 * evaluate(m, (x_test, y_test))["accuracy"]
    print(f"  {name:<28} accuracy {accuracy:6.2f}%  logit MSE {mse:.5f}")


def quantized(m, bits, per_channel):
    prepared = prepare(m, weight_bits=bits, activation_bits=8, per_channel_weights=per_channel)
    return convert(calibrate(prepared, calibration, max_batches=8))


def compare(float_model, title):
    print(title)
    report("float", float_model)
    equalized = equalize_model(float_model)
    for bits in args.bits:
        plain = quantized(float_model, bits, per_channel=False)
        cle = quantized(equalized, bits, per_channel=False)
        report(f"W{bits}A8 per-tensor", plain)
        report(f"W{bits}A8 per-tensor + CLE", cle)
        report(f"W{bits}A8 per-tensor + CLE + BC", bias_correct(cle, calibration))
        report(f"W{bits}A8 per-channel", quantized(float_model, bits, per_channel=True))


compare(model, "LeNet-5 (BatchNorm folded) as trained:")

rng = np.random.default_rng(args.seed)
modules = fold_batchnorms(flat_modules(model))
layers = [m for m in modules if isinstance(m, (nn.Linear, nn.Conv2d))]
for a, b in zip(layers, layers[1:]):
    scales = 10.0 ** rng.uniform(-1.5, 1.5, size=a.weight.shape[0])
    a.weight.data, a.bias.data, b.weight.data = equalize_pair(a.weight.data, a.bias.data,
                                                              b.weight.data, scales)
compare(nn.Sequential(*modules).eval(), "LeNet-5 with channel ranges spread over 1000x "
                                        "(same float function):")
