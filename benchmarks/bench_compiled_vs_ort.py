"""Batch-1 LeNet-5 inference: the compiled graph (``optim.graph.compile``) against onnxruntime
running the same optimized graph exported to ONNX, interleaved in one process, one thread.

    OMP_NUM_THREADS=1 python benchmarks/bench_compiled_vs_ort.py [--rounds 7] [--batch 1]

Prints the median, minimum and maximum over ``--rounds`` of each engine's best-of-3 mean of
200 calls, and the per-round ratios.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import timeit

import numpy as np

from minnet import models
from optim.graph import compile, optimize, to_onnx, trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    import onnxruntime as ort

    model = models.lenet5().eval()
    x = np.random.default_rng(0).random((args.batch, 1, 28, 28), dtype=np.float32)
    graph = optimize(trace(model, x, dynamic_axes={0: "N"}))
    compiled = compile(graph)
    path = os.path.join(tempfile.mkdtemp(), "lenet5.onnx")
    to_onnx(graph, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    engines = {"compiled": lambda: compiled(x), "onnxruntime": lambda: session.run(None, feed)}
    times = {name: [] for name in engines}
    for run in engines.values():
        run()
    for _ in range(args.rounds):
        for name, run in engines.items():
            times[name].append(min(timeit.repeat(run, number=200, repeat=3)) / 200 * 1e3)
    for name, values in times.items():
        print(f"{name}: median {np.median(values):.4f} ms (min {min(values):.4f}, "
              f"max {max(values):.4f})")
    print("compiled / onnxruntime per round:",
          [round(a / b, 2) for a, b in zip(times["compiled"], times["onnxruntime"])])


if __name__ == "__main__":
    main()
