"""Two latency models against measured times: the additive calibrated cost model
(``optim.graph.cost.CostModel``, θ₀ + θ₁F/P + θ₂Q/B + θ₃L per kernel, Paleo-style) and the
roofline bound (``optim.graph.roofline.RooflineModel``, max(F/P, Q/B), same P and B).

    python benchmarks/bench_cost_models.py [--threads 1] [--profile PATH] [--quick]

The cost model is calibrated on this machine (or loaded from ``--profile``) on single nodes and
on random architectures drawn with seeds >= 1000; the evaluation uses graphs it never saw:
LeNet-300-100, LeNet-5, LeNet-5 with BatchNorm and a residual CNN at batch 1 and 64, and 24
random architectures (``zoo.random_model(s)``, s < 24). Each graph is optimized and compiled
with the cost model's kernel choices; then

1. node level: every node's own time (its compiled steps, ``time_callable``) against each
   model's prediction for that node and kernel;
2. graph level: the compiled graph's call time against each model's graph prediction.

Spearman's rank correlation ρ and the median |log(predicted / measured)| summarise each.
"""
from __future__ import annotations

import os
import sys


def _threads_from_argv(default: str = "1") -> str:
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return default


for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads_from_argv()

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

import minnet  # noqa: E402
from minnet.models import lenet5, lenet_300_100  # noqa: E402
from optim.graph import CostModel, calibrate, compile, optimize, trace  # noqa: E402
from optim.graph.cost import time_callable  # noqa: E402
from optim.graph.roofline import RooflineModel  # noqa: E402
from optim.graph.zoo import random_model, randomize_batchnorm, residual_cnn  # noqa: E402


def held_out_graphs():
    """(name, model, input shape) of the 32 evaluation graphs."""
    minnet.manual_seed(0)
    fixed = [("lenet_300_100", lenet_300_100()), ("lenet5", lenet5()),
             ("lenet5_bn", randomize_batchnorm(lenet5(batch_norm=True), np.random.default_rng(1))),
             ("residual_cnn", residual_cnn())]
    for name, model in fixed:
        for batch in (1, 64):
            yield f"{name} b{batch}", model, (batch, 1, 28, 28)
    for seed in range(24):
        model, shape = random_model(seed)
        yield f"random{seed} b{shape[0]}", model, shape


def summary(predicted, measured) -> tuple[float, float]:
    """(Spearman's ρ, median |log(predicted / measured)|); zero predictions are left out of
    the log ratio."""
    predicted, measured = np.asarray(predicted), np.asarray(measured)
    rho = float(scipy.stats.spearmanr(predicted, measured)[0])
    positive = predicted > 0
    return rho, float(np.median(np.abs(np.log(predicted[positive] / measured[positive]))))


def measure(cost_model: CostModel, roofline: RooflineModel):
    nodes, graphs = [], []
    for name, model, shape in held_out_graphs():
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        graph = optimize(trace(model, x))
        compiled = compile(graph, cost_model=cost_model)
        compiled(x)
        g = compiled.graph
        graphs.append((name, cost_model.graph_cost(g, compiled.algorithms), roofline.graph_cost(g),
                       time_callable(lambda: compiled(x), 2e-3)))
        for node in g.nodes:
            steps = compiled.node_steps.get(node.output)
            if not steps:  # views and constants: no work at run time
                continue
            algorithm = compiled.algorithms.get(node.output, "default")
            nodes.append((node.op, cost_model.node_cost(node, g, algorithm), roofline.node_cost(node, g),
                          time_callable(lambda s=steps: [f() for f in s], 1e-3)))
    return nodes, graphs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", help="load this cost profile instead of calibrating "
                                          "(a new calibration is saved there if it is missing)")
    parser.add_argument("--quick", action="store_true", help="quick calibration")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}, numpy {np.__version__}; {args.threads} thread(s)")
    if args.profile and os.path.exists(args.profile):
        cost_model = CostModel.load(args.profile)
        print(f"cost profile: {args.profile}")
    else:
        start = time.perf_counter()
        cost_model = calibrate(quick=args.quick)
        print(f"calibrated in {time.perf_counter() - start:.1f} s")
        if args.profile:
            cost_model.save(args.profile)
    roofline = RooflineModel(cost_model.peak_flops, cost_model.bandwidth)
    print(f"P = {cost_model.peak_flops / 1e9:.1f} GFLOP/s, B = {cost_model.bandwidth / 1e9:.1f} GB/s")
    nodes, graphs = measure(cost_model, roofline)
    print("\n| level | items | additive ρ | roofline ρ | additive median \\|log ratio\\| | "
          "roofline median \\|log ratio\\| |")
    print("|---|---|---|---|---|---|")
    for level, rows in (("node", nodes), ("graph", graphs)):
        measured = [r[3] for r in rows]
        (rho_a, err_a), (rho_r, err_r) = summary([r[1] for r in rows], measured), summary([r[2] for r in rows], measured)
        print(f"| {level} | {len(rows)} | {rho_a:.3f} | {rho_r:.3f} | {err_a:.2f} | {err_r:.2f} |")
    print("\n| op | nodes | measured µs (median) | additive / measured (median) | roofline / measured (median) |")
    print("|---|---|---|---|---|")
    for op in sorted({r[0] for r in nodes}):
        rows = [r for r in nodes if r[0] == op]
        t = np.array([r[3] for r in rows])
        print(f"| {op} | {len(rows)} | {1e6 * np.median(t):.1f} | "
              f"{np.median(np.array([r[1] for r in rows]) / t):.2f} | "
              f"{np.median(np.array([r[2] for r in rows]) / t):.3f} |")


if __name__ == "__main__":
    main()
