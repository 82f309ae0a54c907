"""Knowledge transfer on the bundled MNIST-5k: learn digits 0-4, then reuse the network for 5-9.

A LeNet-5 with a 5-way head is trained on digits 0-4. For digits 5-9 (labels 5..9 -> 0..4) a
new LeNet-5 is trained from n labelled examples in three ways:

- scratch: random initialisation;
- fine-tune: every layer but the head loaded from the 0-4 network (``load_partial_state_dict``),
  then all layers trained;
- frozen convs: the same load, then the two convolutions frozen (``freeze``), so only the
  fully connected layers learn.

Every run takes the same number of optimizer steps (``--epochs`` passes over the full 5-9 set),
so the first table shows how many labelled examples transfer saves. The second follows test
accuracy epoch by epoch on the full set: how many epochs it saves. Accuracies are means over
``--seeds`` (each seed draws its own subsets, source network and initialisations).

    python examples/transfer_mnist.py --epochs 5 --seeds 0 1 2
"""
import argparse
import math

import numpy as np

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim.distill import freeze, load_partial_state_dict

parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--epochs", type=int, default=5, help="passes over the full 5-9 set")
parser.add_argument("--limit", type=int, default=None,
                    help="use at most this many training images per task")
parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="runs to average")
parser.add_argument("--sizes", type=int, nargs="+", default=[25, 100, 500, 2000],
                    help="numbers of labelled 5-9 examples")
args = parser.parse_args()

BATCH, HEAD, METHODS = 64, "11", ("scratch", "fine-tune", "frozen convs")
x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
target_test = (x_test[y_test >= 5], y_test[y_test >= 5] - 5)


def task(rng, x, y, digits, limit=None):
    """The images of ``digits`` in random order (at most ``limit``), labels renumbered 0..4."""
    index = rng.permutation(np.flatnonzero(np.isin(y, digits)))[:limit]
    return x[index], y[index] - digits[0]


def train(method, pretrained, target, n, steps, seed, val_data=None):
    """Train a 5-way LeNet-5 on the first n target examples for ``steps`` optimizer steps."""
    minnet.manual_seed(seed + 1)
    model = models.lenet5(num_classes=5)
    if method != "scratch":
        load_partial_state_dict(model, pretrained.state_dict(), exclude=HEAD)
    if method == "frozen convs":
        freeze(model, ["0", "3"])
    epochs = math.ceil(steps / math.ceil(n / BATCH))
    data = (target[0][:n], target[1][:n])
    history = fit(model, optimizers.Adam(model.parameters(), lr=1e-3), data, epochs,
                  batch_size=BATCH, seed=seed, val_data=val_data)
    return evaluate(model, target_test)["accuracy"], history["val_accuracy"]


accuracy, curves = {}, {}
for seed in args.seeds:
    rng = np.random.default_rng(seed)
    source = task(rng, x_train, y_train, [0, 1, 2, 3, 4], args.limit)
    target = task(rng, x_train, y_train, [5, 6, 7, 8, 9], args.limit)
    full, steps = len(target[0]), args.epochs * math.ceil(len(target[0]) / BATCH)
    sizes = sorted({min(n, full) for n in args.sizes})
    minnet.manual_seed(seed)
    pretrained = models.lenet5(num_classes=5)
    fit(pretrained, optimizers.Adam(pretrained.parameters(), lr=1e-3), source, args.epochs,
        batch_size=BATCH, seed=seed)
    source_test = (x_test[y_test < 5], y_test[y_test < 5])
    report = load_partial_state_dict(models.lenet5(num_classes=5), pretrained.state_dict(),
                                     exclude=HEAD)
    print(f"seed {seed}: source network (digits 0-4) test accuracy "
          f"{100 * evaluate(pretrained, source_test)['accuracy']:.2f}%; transferred "
          f"{', '.join(report.loaded)}; left out {', '.join(report.excluded)}")
    for method in METHODS:
        for n in sizes:
            acc, curve = train(method, pretrained, target, n, steps, seed,
                               target_test if n == full else None)
            accuracy.setdefault((method, n), []).append(acc)
            if n == full:
                curves.setdefault(method, []).append(curve)

mean = {key: float(np.mean(values)) for key, values in accuracy.items()}
curve = {method: np.mean(values, axis=0) for method, values in curves.items()}
print(f"\nTest accuracy on digits 5-9 after {steps} steps of batch {BATCH} "
      f"(mean over seeds {args.seeds}):\n")
print("| labelled 5-9 examples | " + " | ".join(METHODS) + " |")
print("|---:|" + "---:|" * len(METHODS))
for n in sizes:
    print(f"| {n} | " + " | ".join(f"{100 * mean[m, n]:.2f}%" for m in METHODS) + " |")

print(f"\nTest accuracy per epoch with all {full} labelled examples:\n")
print("| epoch | " + " | ".join(METHODS) + " |")
print("|---:|" + "---:|" * len(METHODS))
for epoch in range(args.epochs):
    print(f"| {epoch + 1} | " + " | ".join(f"{100 * curve[m][epoch]:.2f}%" for m in METHODS) + " |")

goal = mean["scratch", full]
for method in METHODS[1:]:
    fewest = next((n for n in sizes if mean[method, n] >= goal), None)
    first = next((e + 1 for e, a in enumerate(curve[method]) if a >= goal), None)
    print(f"{method}: reaches scratch's final accuracy ({100 * goal:.2f}%) with "
          f"{fewest if fewest else 'none of the'} labelled examples and after "
          f"{first if first else 'more than ' + str(args.epochs)} epoch(s)")
