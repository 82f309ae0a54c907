"""Trace a trained LeNet-5 with BatchNorm, optimize its graph, and run it compiled.

    python examples/graph_optimize.py --epochs 5 [--calibrate] [--onnx lenet5.onnx]

The graph is traced at a fixed batch of 100 (graphs have static shapes), BatchNorm is folded
into the convolutions and ReLUs are fused; the compiled graph must classify the test set
exactly as the eager model does.
"""
import argparse
import time

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim.graph import calibrate, compile, optimize, to_onnx, trace

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--limit", type=int, default=None, help="train on this many images only")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--calibrate", action="store_true", help="choose kernels with a quickly "
                    "calibrated cost model instead of the fixed rule")
parser.add_argument("--onnx", help="also export the optimized graph to this ONNX file")
args = parser.parse_args()

x_train, y_train = load_mnist("train")
x_test, y_test = load_mnist("test")
if args.limit:
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]

minnet.manual_seed(args.seed)
model = models.lenet5(batch_norm=True)
fit(model, optimizers.Adam(model.parameters(), lr=1e-3), (x_train, y_train), args.epochs,
    seed=args.seed)
eager_accuracy = evaluate(model, (x_test, y_test))["accuracy"]

batch = 100
graph = trace(model, x_test[:batch])
optimized = optimize(graph)
print(f"traced: {len(graph.nodes)} nodes; optimized: {len(optimized.nodes)} nodes")
print(optimized.dump())
compiled = compile(optimized, cost_model=calibrate(quick=True) if args.calibrate else None)
print("kernels:", {k: v for k, v in compiled.algorithms.items() if v != "default"})
plan = compiled.plan
print(f"activation arena {plan.arena_bytes / 1024:.0f} KiB instead of {plan.naive_bytes / 1024:.0f} "
      f"KiB ({1 - plan.arena_bytes / plan.naive_bytes:.0%} saved)")

model.eval()
agree, correct = 0, 0
eager_time = graph_time = 0.0
for start in range(0, len(x_test) - batch + 1, batch):
    x, y = x_test[start:start + batch], y_test[start:start + batch]
    t0 = time.perf_counter()
    with minnet.no_grad():
        eager_pred = model(minnet.Tensor(x)).data.argmax(axis=1)
    t1 = time.perf_counter()
    graph_pred = compiled(x).argmax(axis=1)
    graph_time += time.perf_counter() - t1
    eager_time += t1 - t0
    agree += int((eager_pred == graph_pred).sum())
    correct += int((graph_pred == y).sum())
n = len(x_test) // batch * batch
print(f"optimized graph agrees with eager on {agree}/{n} test images; "
      f"{1e3 * graph_time:.1f} ms vs eager {1e3 * eager_time:.1f} ms")
print(f"test accuracy eager {100 * eager_accuracy:.2f}%, optimized graph {100 * correct / n:.2f}%")
if args.onnx:
    to_onnx(optimized, args.onnx)
    print(f"wrote {args.onnx}")
if agree != n:
    raise SystemExit("the optimized graph disagrees with the eager model")
