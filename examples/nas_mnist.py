"""Search small CNNs for MNIST with NSGA-II: validation error against MACs, under LeNet-5's MACs.

    python examples/nas_mnist.py --budget 48 --epochs 2 [--history nas.json --resume]

Each trial trains an architecture of ``cnn_space`` for ``--epochs`` epochs on 80 % of the
training images and measures its error on the other 20 %; architectures with more MACs
than LeNet-5 are rejected before training. The script prints the Pareto front, then trains
the front's most accurate architecture on all the training images and reports its test
accuracy. ``benchmarks/bench_nas.py`` is the full comparison with LeNet-5.
"""
import argparse

import numpy as np

from minnet.data import load_mnist
from minnet.models import lenet5
from optim import metrics
from optim.nas import (NSGA2, MnistObjectives, build_cnn, cnn_space, describe, macs_at_most, measure,
                       search)

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--budget", type=int, default=None, help="trials (default 24, or 3 with --limit)")
parser.add_argument("--population", type=int, default=8)
parser.add_argument("--epochs", type=int, default=2, help="training epochs per trial")
parser.add_argument("--limit", type=int, default=None, help="use this many training images only")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--history", default=None, help="save the search here (JSON) after every trial")
parser.add_argument("--resume", action="store_true", help="continue the search saved in --history")
args = parser.parse_args()
budget = args.budget or (3 if args.limit else 24)

space = cnn_space().with_constraints(macs_at_most(metrics.macs(lenet5(), (1, 1, 28, 28))))
objectives = MnistObjectives(build_cnn, ("error", "macs"), epochs=args.epochs, limit=args.limit,
                             seed=args.seed)
strategy = NSGA2(space, population_size=max(2, min(args.population, budget)), seed=args.seed)
history = search(space, strategy, objectives, budget, history_path=args.history, resume=args.resume)

front = sorted(history.pareto(), key=lambda r: r.objectives[1])
if not front:
    raise SystemExit(f"no trial succeeded: {[r.error for r in history.records]}")
print(f"{len(history)} trials, {len(history.ok())} trained; Pareto front:")
print(f"{'val. error':>10}  {'MACs':>9}  architecture")
for record in front:
    error, macs = record.objectives
    print(f"{error:10.4f}  {macs:9,.0f}  {describe(record.arch)}")

best = min(front, key=lambda r: r.objectives[0])
train = objectives.data()
x = np.concatenate([train["train"][0], train["val"][0]])
y = np.concatenate([train["train"][1], train["val"][1]])
model = objectives.trained(best.arch, data=(x, y))
error = measure(model, load_mnist("test"), ("error",))["error"]
print(f"most accurate on the front: {describe(best.arch)}")
print(f"test accuracy {100 * (1 - error):.2f}% after {args.epochs} epoch(s) on {len(y)} images")
