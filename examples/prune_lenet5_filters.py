"""Filter pruning of LeNet-5 (Li et al. 2017) on the bundled MNIST-5k, then physical shrinking.

Train, remove a fraction of the filters of both conv layers (smallest L1 norm, or Taylor
saliency from a batch of training data), turn the masked model into a smaller dense one,
check that both compute the same outputs, fine-tune it, and print parameters, MACs, the
per-layer report and the test accuracy at each stage.

    python examples/prune_lenet5_filters.py --epochs 20 --criterion taylor
"""
import argparse

import numpy as np

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist, random_subset
from minnet.train import evaluate, fit
from optim.metrics import count_params, macs
from optim.prune import format_report, layer_report, prune_channels, shrink

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=20, help="training epochs before pruning")
parser.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning epochs")
parser.add_argument("--amount", type=float, default=0.5, help="fraction of filters removed")
parser.add_argument("--criterion", choices=["l1", "taylor"], default="l1")
parser.add_argument("--limit", type=int, default=None, help="train on this many images only")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

INPUT = (1, 1, 28, 28)
CONVS = ["0", "3"]  # the two Conv2d layers of models.lenet5()
x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
x_train, y_train = random_subset(x_train, y_train, n=args.limit, seed=args.seed)


def accuracy(model) -> float:
    return evaluate(model, (x_test, y_test))["accuracy"]


def cost(model) -> str:
    return f"{count_params(model):,} params, {macs(model, INPUT):,} MACs"


minnet.manual_seed(args.seed)
model = models.lenet5()
fit(model, optimizers.Adam(model.parameters(), lr=1e-3), (x_train, y_train), args.epochs,
    seed=args.seed)
dense_accuracy = accuracy(model)
print(f"dense: {cost(model)}, test accuracy {100 * dense_accuracy:.2f}%")

scoring = random_subset(x_train, y_train, n=512, seed=args.seed + 1)  # Taylor's gradients
prune_channels(model, args.amount, args.criterion, layers=CONVS, data=scoring, rng=args.seed)
print(f"masked ({args.criterion}, {100 * args.amount:.0f}% of filters): "
      f"test accuracy {100 * accuracy(model):.2f}%")
print(format_report(layer_report(model, INPUT)))

shrunk = shrink(model)
model.eval()
shrunk.eval()
with minnet.no_grad():
    x = minnet.Tensor(x_test)
    gap = float(np.abs(model(x).data - shrunk(x).data).max())
print(f"shrunk: {cost(shrunk)}, filters left {shrunk[0].out_channels} + "
      f"{shrunk[3].out_channels}, max |masked - shrunk| output {gap:.2e}, "
      f"test accuracy {100 * accuracy(shrunk):.2f}%")
print(format_report(layer_report(shrunk, INPUT)))

fit(shrunk, optimizers.Adam(shrunk.parameters(), lr=3e-4), (x_train, y_train),
    args.finetune_epochs, seed=args.seed + 700)
tuned_accuracy = accuracy(shrunk)
print(f"shrunk after {args.finetune_epochs} fine-tuning epochs: test accuracy "
      f"{100 * tuned_accuracy:.2f}% ({100 * (tuned_accuracy - dense_accuracy):+.2f} pp)")
