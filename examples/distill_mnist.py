"""Distil a LeNet-5 teacher into Hinton's 784-800-800-10 student on the bundled MNIST-5k.

The student is trained twice from the same initialisation: alone on the labels, and with the
teacher's soft targets at temperature T (loss alpha * T^2 KL + (1 - alpha) * CE, Hinton et al.
2015). ``--hint-weight`` adds a FitNets hint from the student's last hidden layer to the
teacher's 84-unit layer through a learned linear regressor.

    python examples/distill_mnist.py --epochs 20 --temperature 4 --alpha 0.9
"""
import argparse

import numpy as np

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim.distill import Distiller
from optim.metrics import count_params

parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--limit", type=int, default=None, help="train on this many images only")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--temperature", type=float, default=4.0)
parser.add_argument("--alpha", type=float, default=0.9, help="weight of the soft-target loss")
parser.add_argument("--hidden", type=int, nargs="+", default=[800, 800],
                    help="student hidden layer sizes")
parser.add_argument("--hint-weight", type=float, default=0.0)
args = parser.parse_args()

x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
if args.limit:  # the bundled split is sorted by digit: take a random subset
    keep = np.random.default_rng(args.seed).permutation(len(x_train))[:args.limit]
    x_train, y_train = x_train[keep], y_train[keep]
train, test = (x_train, y_train), (x_test, y_test)


def student() -> minnet.nn.Module:
    minnet.manual_seed(args.seed + 1)
    return models.mlp([784, *args.hidden, 10])


minnet.manual_seed(args.seed)
teacher = models.lenet5()
fit(teacher, optimizers.Adam(teacher.parameters(), lr=1e-3), train, args.epochs, seed=args.seed)

alone = student()
fit(alone, optimizers.Adam(alone.parameters(), lr=1e-3), train, args.epochs, seed=args.seed)

distilled = student()
hint = {str(2 * len(args.hidden)): "10"} if args.hint_weight > 0 else None  # last hidden ReLU
distiller = Distiller(distilled, teacher, T=args.temperature, alpha=args.alpha, hints=hint,
                      hint_weight=args.hint_weight, cache_teacher=True, input_shape=(1, 28, 28))
distiller.fit(optimizers.Adam(distiller.parameters(), lr=1e-3), train, args.epochs, seed=args.seed)

print(f"| model | parameters | test accuracy |\n|---|---:|---:|")
distilled_name = f"student distilled (T={args.temperature:g}, alpha={args.alpha:g})"
for name, model in (("teacher LeNet-5", teacher), ("student alone", alone),
                    (distilled_name, distilled)):
    accuracy = evaluate(model, test)["accuracy"]
    print(f"| {name} | {count_params(model):,} | {100 * accuracy:.2f}% |")
