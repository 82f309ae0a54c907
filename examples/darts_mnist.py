"""First-order DARTS on MNIST: search a small cell, derive it, train it like an NSGA-II trial.

    python examples/darts_mnist.py [--epochs 10] [--train-epochs 3]
                                   [--front nas-results/nsgaii.json]

The 4,000 training images are split as in the NAS search (``mnist_splits``: 3,200 to train,
800 to validate). DARTS searches on the 3,200 alone, halved (weights on one half, the
architecture parameters alpha on the other, Liu et al. 2019, Sec. 3.1), for ``--epochs``
epochs; the derived cell is then trained from scratch with the per-trial recipe of
``benchmarks/bench_nas.py`` (Adam 1e-3, cosine, ``--train-epochs`` epochs on the 3,200) and
measured on the 800 held-out images: validation error and MACs, the two objectives of the
NSGA-II search. LeNet-5 trained with the same recipe is the reference; ``--front`` places the
cell against the Pareto front of a ``bench_nas.py`` history.

``--alpha-lr`` defaults to 3e-3, ten times the paper's 3e-4: the paper takes ~20,000
architecture steps on CIFAR-10, this search a few hundred.
"""
import argparse
import time

import numpy as np

import minnet
from minnet.data import load_mnist
from minnet.models import lenet5
from optim.nas import (DartsSearchNetwork, History, build_darts, darts_search, dominates, measure,
                       mnist_splits, stratified_split, train_model)

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--epochs", type=int, default=10, help="search epochs")
parser.add_argument("--train-epochs", type=int, default=None,
                    help="epochs to train the derived cell (default 3, or 1 with --limit)")
parser.add_argument("--limit", type=int, default=None, help="use this many training images only")
parser.add_argument("--channels", type=int, default=8)
parser.add_argument("--nodes", type=int, default=3, help="intermediate nodes of the cell")
parser.add_argument("--alpha-lr", type=float, default=3e-3)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--front", default=None, help="a bench_nas.py history (JSON) to compare with")
args = parser.parse_args()
train_epochs = args.train_epochs or (1 if args.limit else 3)

splits = mnist_splits(0.2, args.limit, args.seed)
x, y = splits["train"]
half_w, half_alpha = stratified_split(y, 0.5, args.seed)
minnet.manual_seed(args.seed)
supernet = DartsSearchNetwork(args.channels, args.nodes, seed=args.seed)
start = time.perf_counter()
history = darts_search(supernet, (x[half_w], y[half_w]), (x[half_alpha], y[half_alpha]),
                       args.epochs, alpha_lr=args.alpha_lr, seed=args.seed)
print(f"search: {args.epochs} epoch(s) on {len(half_w)} + {len(half_alpha)} images in "
      f"{time.perf_counter() - start:.0f} s; alpha-split loss "
      + " -> ".join(f"{v:.3f}" for v in history["val_loss"]))
genotype = history["genotype"][-1]
for j, node in enumerate(genotype, start=1):
    print(f"  node {j} = " + " + ".join(f"{op}(node {i})" for i, op in node))


def trained_objectives(build) -> dict[str, float]:
    minnet.manual_seed(args.seed)
    model = train_model(build(), splits["train"], train_epochs, seed=args.seed)
    values = measure(model, splits["val"], ("error", "macs"))
    values["test_error"] = measure(model, load_mnist("test"), ("error",))["error"]
    return values


cell = trained_objectives(lambda: build_darts(genotype, args.channels))
lenet = trained_objectives(lenet5)
print(f"{'':>12}  {'val. error':>10}  {'test error':>10}  {'MACs':>9}   ({train_epochs} epoch(s), "
      f"{len(splits['train'][1])} images)")
for name, v in (("DARTS cell", cell), ("LeNet-5", lenet)):
    print(f"{name:>12}  {v['error']:10.4f}  {v['test_error']:10.4f}  {v['macs']:9,.0f}")
point = np.array([cell["error"], cell["macs"]])
if args.front:
    front = History.load(args.front).pareto()
    beaten_by = [r for r in front if dominates(np.array(r.objectives), point)]
    beats = [r for r in front if dominates(point, np.array(r.objectives))]
    print(f"against the {len(front)}-point front of {args.front}: dominated by {len(beaten_by)}, "
          f"dominates {len(beats)}"
          + ("" if not beaten_by else "; nearest dominating point "
             + "{:.4f} at {:,.0f} MACs".format(*min((r.objectives for r in beaten_by),
                                                   key=lambda o: o[1]))))
print(f"DARTS cell test accuracy {100 * (1 - cell['test_error']):.2f}% "
      f"(LeNet-5 {100 * (1 - lenet['test_error']):.2f}%)")
