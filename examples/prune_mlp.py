"""Iterative magnitude pruning of LeNet-300-100 (Han et al. 2015) on the bundled MNIST-5k.

Train, then prune to 50, 75, 87.5, 92 and 95 % of the weights (one global magnitude
threshold), fine-tuning after each step; print the accuracy at each step, the per-layer
report, and check that the CSR sparse model computes the same outputs.

    python examples/prune_mlp.py --epochs 20
"""
import argparse

import numpy as np

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim.prune import format_report, layer_report, prune_rounds, sparsify

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=20, help="training epochs before pruning")
parser.add_argument("--finetune-epochs", type=int, default=3, help="fine-tuning epochs per step")
parser.add_argument("--limit", type=int, default=None, help="train on this many images only")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
if args.limit:  # a random subset: the bundled split is sorted by digit
    subset = np.random.default_rng(args.seed).permutation(len(x_train))[:args.limit]
    x_train, y_train = x_train[subset], y_train[subset]


def accuracy(model) -> float:
    return evaluate(model, (x_test, y_test))["accuracy"]


def fine_tune(model, step):
    fit(model, optimizers.Adam(model.parameters(), lr=3e-4), (x_train, y_train),
        args.finetune_epochs, seed=1000 + step)


minnet.manual_seed(args.seed)
model = models.lenet_300_100()
fit(model, optimizers.Adam(model.parameters(), lr=1e-3), (x_train, y_train), args.epochs,
    seed=args.seed)
dense_accuracy = accuracy(model)
print(f"dense test accuracy {100 * dense_accuracy:.2f}%")

history = prune_rounds(model, [0.5, 0.75, 0.875, 0.92, 0.95], fine_tune, evaluate=accuracy)
for sparsity, acc in zip(history["sparsity"], history["metric"]):
    print(f"{100 * sparsity:5.1f}% pruned: test accuracy {100 * acc:.2f}% "
          f"({100 * (acc - dense_accuracy):+.2f} pp)")

print(format_report(layer_report(model, (1, 1, 28, 28))))
sparse = sparsify(model)  # CSR where a layer is >= 95 % zeros
with minnet.no_grad():
    model.eval()
    gap = np.abs(sparse(minnet.Tensor(x_test[:64])).data - model(minnet.Tensor(x_test[:64])).data)
print(f"CSR model: largest output difference {gap.max():.2e}, "
      f"test accuracy {100 * accuracy(sparse):.2f}%")
