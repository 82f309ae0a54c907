"""Graph optimization: speed, memory plan, cost-model accuracy and algorithm choice.

    python benchmarks/bench_graph.py [--threads 1] [--repeats 200] [--profile PATH] [--quick]

1. Latency of LeNet-5 with BatchNorm at batch 1 and 64: eager minnet (no_grad), the reference
   executor on the optimized graph, the compiled optimized graph (kernels chosen by the cost
   model) and PyTorch eager (if importable; same weights and thread count). Medians of
   ``--repeats`` calls in two rounds interleaved across the contenders.
2. Memory: the planned arena of the compiled LeNet-5 at batch 64 against allocating every value
   separately, with the live-bytes lower bound, and tracemalloc's peak over compile + one call
   (arena plus kernel workspaces) for both.
3. Cost model: calibrated on this machine (or loaded from ``--profile``); Spearman's rank
   correlation between predicted and measured latency of compiled graphs over 32 graphs
   (24 random architectures, LeNet-300-100, LeNet-5, LeNet-5 with BN and a residual CNN at
   batch 1 and 64), and the share of convolutions whose chosen algorithm is the measured
   fastest or within 10 % of it.
4. A table model x pass stage -> nodes, predicted and measured latency, arena bytes.
5. Run-time specialisation: one compiled object of LeNet-300-100 (first layer 90 % sparse,
   dynamic batch) called at batch 1, 8, 64 and 256: the kernel the cost model chose for the
   sparse layer at each batch, and the latency against a graph compiled for that batch alone
   (medians, interleaved).

``--threads`` sets OpenBLAS's, Numba's and PyTorch's thread counts (before NumPy loads);
timings are fastest-of-rounds for the cost model (``time_callable``) and medians for section 1.
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
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

import minnet  # noqa: E402
from minnet.models import lenet5, lenet_300_100  # noqa: E402
from optim.graph import CostModel, calibrate, compile, execute, optimize, trace  # noqa: E402
from optim.graph.compiled import algorithm_options, default_algorithm  # noqa: E402
from optim.graph.cost import time_callable  # noqa: E402
from optim.graph.ir import specialise  # noqa: E402
from optim.graph.passes import (eliminate_common, eliminate_dead, eliminate_identities,  # noqa: E402
                                fold_batchnorms, fold_constants, fuse_activations, fuse_biases,
                                simplify_algebra)
from optim.graph.zoo import random_model, randomize_batchnorm, residual_cnn  # noqa: E402
from torch_reference import torch_model  # noqa: E402


def _median_ms(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms per call of each function, in two rounds interleaved across them."""
    times = {k: [] for k in fns}
    for _ in range(2):
        for name, fn in fns.items():
            for _ in range(5):
                fn()
            for _ in range(repeats // 2):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def speed(model, cost_model, repeats: int, torch) -> None:
    print("\n## 1. LeNet-5 with BatchNorm: latency (ms, median)\n")
    print("| batch | eager minnet | reference executor | compiled graph | PyTorch eager | "
          "compiled / eager | compiled / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    net = torch_model("lenet5", batch_norm=True, weights_from=model).eval() if torch else None
    for batch in (1, 64):
        x = np.random.default_rng(batch).random((batch, 1, 28, 28), dtype=np.float32)
        graph = optimize(trace(model, x))
        compiled = compile(graph, cost_model=cost_model)
        xt = minnet.Tensor(x)
        model.eval()

        def eager():
            with minnet.no_grad():
                return model(xt)
        fns = {"eager": eager, "reference": lambda: execute(graph, x), "compiled": lambda: compiled(x)}
        if torch:
            tx = torch.from_numpy(x)

            def torch_eager():
                with torch.no_grad():
                    return net(tx)
            fns["torch"] = torch_eager
            np.testing.assert_allclose(compiled(x), torch_eager().numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(compiled(x), eager().data, rtol=1e-5, atol=1e-5)
        ms = _median_ms(fns, repeats)
        t = ms.get("torch", float("nan"))
        print(f"| {batch} | {ms['eager']:.3f} | {ms['reference']:.3f} | {ms['compiled']:.3f} | "
              f"{t:.3f} | {ms['compiled'] / ms['eager']:.2f} | {ms['compiled'] / t:.2f} |")


def _tracemalloc_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def memory() -> None:
    print("\n## 2. Memory plan, batch 64 (bytes)\n")
    print("| model | planned arena | separate buffers | live lower bound | saving | "
          "tracemalloc peak planned | tracemalloc peak separate |")
    print("|---|---|---|---|---|---|---|")
    for name, model in (("lenet5", lenet5()), ("lenet5_bn", lenet5(batch_norm=True))):
        x = np.zeros((64, 1, 28, 28), np.float32)
        graph = optimize(trace(model, x))
        planned, separate = compile(graph), compile(graph, reuse=False)
        peaks = [_tracemalloc_peak(lambda r=r: compile(graph, reuse=r)(x)) for r in (True, False)]
        plan = planned.plan
        print(f"| {name} | {planned.arena.nbytes} | {separate.arena.nbytes} | {plan.lower_bound} | "
              f"{1 - planned.arena.nbytes / separate.arena.nbytes:.1%} | {peaks[0]} | {peaks[1]} |")


def _architectures():
    minnet.manual_seed(0)
    fixed = [("lenet_300_100", lenet_300_100(), (1, 28, 28)), ("lenet5", lenet5(), (1, 28, 28)),
             ("lenet5_bn", randomize_batchnorm(lenet5(batch_norm=True), np.random.default_rng(1)),
              (1, 28, 28)), ("residual_cnn", residual_cnn(), (1, 28, 28))]
    for name, model, shape in fixed:
        for batch in (1, 64):
            yield f"{name} b{batch}", model, (batch,) + shape
    for seed in range(24):
        model, shape = random_model(seed)
        yield f"random{seed} b{shape[0]}", model, shape


def cost_model_accuracy(cost_model: CostModel) -> None:
    print("\n## 3. Cost model: predicted vs measured latency of compiled graphs\n")
    rows, hits, default_hits, convs = [], 0, 0, 0
    for name, model, shape in _architectures():
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        graph = optimize(trace(model, x))
        compiled = compile(graph, cost_model=cost_model)
        measured = time_callable(lambda: compiled(x), 2e-3)
        rows.append((name, len(graph.nodes), cost_model.graph_cost(graph), measured))
        for node in compiled.graph.nodes:
            options = algorithm_options(node, compiled.graph)
            if not node.op.startswith("Conv") or len(options) < 2:
                continue
            seconds = {}
            for a in options:
                trial = compile(graph, {**compiled.algorithms, node.output: a})
                trial(x)
                steps = trial.node_steps[node.output]
                seconds[a] = time_callable(lambda: [s() for s in steps], 1e-3)
            fastest = min(seconds.values())
            convs += 1
            hits += seconds[cost_model.choose(node, compiled.graph)] <= 1.1 * fastest
            default_hits += seconds[default_algorithm(node, compiled.graph)] <= 1.1 * fastest
    rho = scipy.stats.spearmanr([r[2] for r in rows], [r[3] for r in rows])[0]
    print("| graph | nodes | predicted µs | measured µs |")
    print("|---|---|---|---|")
    for name, nodes, predicted, measured in rows:
        print(f"| {name} | {nodes} | {1e6 * predicted:.1f} | {1e6 * measured:.1f} |")
    print(f"\nSpearman rank correlation over {len(rows)} graphs: {rho:.3f}")
    print(f"Algorithm choice: {hits}/{convs} convolutions ({hits / convs:.0%}) get the measured "
          f"fastest kernel or one within 10 % of it; the fixed im2col/pointwise rule: "
          f"{default_hits}/{convs} ({default_hits / convs:.0%})")


STAGES = [("traced", ()),
          ("+ identities, algebra, constants", (eliminate_identities, simplify_algebra, fold_constants)),
          ("+ BatchNorm folding", (fold_batchnorms,)),
          ("+ bias and ReLU fusion", (fuse_biases, fuse_activations)),
          ("+ CSE, DCE = optimize", (eliminate_common, eliminate_dead))]


def pass_table(cost_model: CostModel) -> None:
    print("\n## 4. Model x pass stage (batch 64): nodes, latency, arena\n")
    print("| model | stage | nodes | predicted ms | measured ms | arena KiB |")
    print("|---|---|---|---|---|---|")
    minnet.manual_seed(0)
    models = [("LeNet-300-100", lenet_300_100()), ("LeNet-5", lenet5()),
              ("LeNet-5 + BN", randomize_batchnorm(lenet5(batch_norm=True), np.random.default_rng(1))),
              ("residual CNN", residual_cnn())]
    for name, model in models:
        x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
        graph = trace(model, x)
        for stage, passes in STAGES:
            for run in passes:
                graph = run(graph)
            if stage.endswith("optimize"):
                graph = optimize(graph)
            compiled = compile(graph, cost_model=cost_model)
            measured = time_callable(lambda: compiled(x), 2e-3)
            print(f"| {name} | {stage} | {len(graph.nodes)} | {1e3 * cost_model.graph_cost(graph):.3f} | "
                  f"{1e3 * measured:.3f} | {compiled.arena.nbytes / 1024:.0f} |")


def dynamic_choice(cost_model: CostModel, repeats: int) -> None:
    minnet.manual_seed(0)
    model = lenet_300_100()
    weight = model[1].weight.data
    weight[np.abs(weight) < np.quantile(np.abs(weight), 0.9)] = 0
    graph = optimize(trace(model, np.zeros((2, 1, 28, 28), np.float32), dynamic_axes={0: "N"}))
    dynamic = compile(graph, cost_model=cost_model)
    first = next(n.output for n in graph.nodes if n.op in ("Linear", "LinearReLU"))
    print("\n### Run-time specialisation (LeNet-300-100, first layer 90 % sparse)\n")
    print("| batch | kernel of the sparse layer | one object for all shapes ms | compiled for "
          "this shape alone ms | ratio |")
    print("|---|---|---|---|---|")
    for batch in (1, 8, 64, 256):
        x = np.random.default_rng(batch).random((batch, 1, 28, 28), dtype=np.float32)
        dynamic(x)
        alone = compile(specialise(graph, {"N": batch}), cost_model=cost_model)
        times = _median_ms({"dynamic": lambda: dynamic(x), "alone": lambda: alone(x)}, repeats)
        print(f"| {batch} | {dynamic.algorithms[first]} | {times['dynamic']:.4f} | "
              f"{times['alone']:.4f} | {times['dynamic'] / times['alone']:.2f} |")
    print(f"\nplans cached: {len(dynamic.plans)} (bound {dynamic.cache_size})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--profile", help="load this cost profile instead of calibrating "
                                          "(a new calibration is saved there if it is missing)")
    parser.add_argument("--quick", action="store_true", help="quick calibration, fewer repeats")
    args = parser.parse_args()
    try:
        import torch
        torch.set_num_threads(args.threads)
        torch_version = torch.__version__
    except ImportError:
        torch, torch_version = None, "not installed"
    import numba
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"torch {torch_version}; {args.threads} thread(s) for BLAS, Numba and PyTorch")
    if args.profile and os.path.exists(args.profile):
        cost_model = CostModel.load(args.profile)
        print(f"cost profile: {args.profile}")
    else:
        start = time.perf_counter()
        cost_model = calibrate(quick=args.quick)
        print(f"calibrated in {time.perf_counter() - start:.1f} s: peak {cost_model.peak_flops / 1e9:.1f} "
              f"GFLOP/s, bandwidth {cost_model.bandwidth / 1e9:.1f} GB/s")
        if args.profile:
            cost_model.save(args.profile)
    model = randomize_batchnorm(lenet5(batch_norm=True), np.random.default_rng(1))
    speed(model, cost_model, 40 if args.quick else args.repeats, torch)
    memory()
    cost_model_accuracy(cost_model)
    pass_table(cost_model)
    dynamic_choice(cost_model, 40 if args.quick else args.repeats)


if __name__ == "__main__":
    main()
