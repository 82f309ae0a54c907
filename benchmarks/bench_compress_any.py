"""Compress a residual CNN through the graph: dependency-group channel pruning, integer PTQ of
the whole graph (residual adds included), int8 ONNX in QDQ and QOperator form.

    python benchmarks/bench_compress_any.py [--epochs 8] [--amount 0.5] [--steps 2]
                                            [--step-epochs 10] [--fine-tune-epochs 40]
                                            [--width 32] [--fine-tune-lr 1e-3] [--distill]

``optim.graph.zoo.resnet_mnist`` (8 convolutions with BatchNorm, 3 residual adds, one with a
1x1 projection; 150k parameters at width 32) is trained on the bundled 4,000 MNIST images
(Adam 1e-3, batch 64, cosine), traced with a symbolic batch and optimized (BatchNorm folded,
ReLU fused). Then:

1. half of the channels of every dependency group are removed (``optim.prune.dependency``, L2
   group importance, Fang et al. 2023) in ``--steps`` equal geometric steps (each keeps
   (1 - amount)^(1/steps) of the channels left): after each removal the shrunk graph is checked
   against the masked graph on the test images, then fine-tuned as a ``GraphModule``
   (``--step-epochs``, the last step ``--fine-tune-epochs``; with ``--distill`` as a student
   of the trained model, Hinton et al. 2015's loss, T = 4, alpha = 0.9);
3. ``optim.quant.graph_quant.quantize_graph`` on 1,024 training images gives the integer graph;
4. the pruned float graph, the QOperator integer graph and its QDQ form are written as ONNX,
   every file with short value names (``to_onnx(compact=True)``).

One table: accuracy on the 1,000 test images of each engine on each artefact, its ONNX bytes and
its batch-1 / batch-64 latency (median of interleaved rounds).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics

import numpy as np

import minnet
from minnet import optimizers
from minnet.data import load_mnist
from minnet.train import fit
from optim.distill import Distiller
from optim.graph import GraphModule, execute, optimize, to_onnx, trace
from optim.graph.zoo import resnet_mnist
from optim.prune.dependency import (dependency_groups, mask_channels, remove_channels,
                                    select_channels)
from optim.quant.graph_quant import quantize_graph, to_qdq
from timing import step_times


def _train(module, data, epochs: int, lr: float, seed: int) -> None:
    optimizer = optimizers.Adam(module.parameters(), lr=lr)
    fit(module, optimizer, data, epochs, batch_size=64, seed=seed, progress=False,
        scheduler=optimizers.CosineAnnealingLR(optimizer, T_max=epochs))


def _fine_tune(module: GraphModule, teacher, data, epochs: int, args):
    """``module`` trained for ``epochs`` (cosine from ``--fine-tune-lr``), as a student of
    ``teacher`` with ``--distill``; returns its graph."""
    if args.distill:
        distiller = Distiller(module, teacher, T=4.0, alpha=0.9, cache_teacher=True)
        optimizer = optimizers.Adam(distiller.parameters(), lr=args.fine_tune_lr)
        distiller.fit(optimizer, data, epochs, seed=args.seed, progress=False,
                      scheduler=optimizers.CosineAnnealingLR(optimizer, T_max=epochs))
    else:
        _train(module, data, epochs, args.fine_tune_lr, args.seed)
    return module.eval().to_graph()


def _predict(run, x: np.ndarray, batch: int = 250) -> np.ndarray:
    return np.concatenate([run(x[i:i + batch]) for i in range(0, len(x), batch)]).argmax(axis=1)


def _session(model_bytes: bytes):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--fine-tune-epochs", type=int, default=40)
    parser.add_argument("--fine-tune-lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--step-epochs", type=int, default=10)
    parser.add_argument("--distill", action="store_true")
    parser.add_argument("--amount", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; python "
          f"{platform.python_version()}, numpy {np.__version__}, onnxruntime "
          f"{importlib.metadata.version('onnxruntime')}, onnx {importlib.metadata.version('onnx')}")
    x, y = load_mnist("train")
    x_test, y_test = load_mnist("test")
    minnet.manual_seed(args.seed)
    model = resnet_mnist(width=args.width)
    _train(model, (x, y), args.epochs, 1e-3, args.seed)
    model.eval()
    float_graph = optimize(trace(model, x[:2], dynamic_axes={0: "N"}))

    tuned, gap = float_graph, 0.0
    step_amount = 1 - (1 - args.amount) ** (1 / args.steps)
    for step in range(args.steps):
        groups = dependency_groups(tuned)
        removed = select_channels(tuned, groups, step_amount)
        masked = mask_channels(tuned, groups, removed)
        pruned = remove_channels(tuned, groups, removed)
        gap = max([gap] + [float(np.abs(execute(pruned, x_test[i:i + 250])
                                        - execute(masked, x_test[i:i + 250])).max())
                           for i in range(0, len(x_test), 250)])
        epochs = args.fine_tune_epochs if step == args.steps - 1 else args.step_epochs
        tuned = _fine_tune(GraphModule(pruned), model, (x, y), epochs, args)
    kept = [int(v.shape[0]) for k, v in tuned.constants.items() if v.ndim == 4]
    print(f"{args.steps} steps of {step_amount:.3f}: conv output channels {kept}; parameters "
          f"{_params(float_graph):,} -> {_params(tuned):,}; |shrunk - masked| max {gap:.2e} "
          f"before fine-tuning")
    integer = quantize_graph(tuned, x[:1024])
    artefacts = {"float (trained)": float_graph, "pruned + fine-tuned": tuned,
                 "int8 QOperator": integer, "int8 QDQ": to_qdq(integer)}
    files = {name: to_onnx(g, compact=True).SerializeToString() for name, g in artefacts.items()}
    rows = []
    for name, graph in artefacts.items():
        engines = {"minnet graph": lambda a, g=graph: execute(g, a)}
        engines["onnxruntime"] = _session(files[name])
        for engine, run in engines.items():
            accuracy = float((_predict(run, x_test) == y_test).mean())
            rows.append([name, engine, accuracy, len(files[name]), run])
    for batch in (1, 64):
        image = np.ascontiguousarray(x_test[:batch])
        medians = [[] for _ in rows]
        for _ in range(args.rounds):
            for i, row in enumerate(rows):
                medians[i].append(statistics.median(step_times(lambda: row[4](image), 20)))
        for row, m in zip(rows, medians):
            row.append(1e3 * statistics.median(m))
    base = rows[0][2]
    print("\n| artefact | engine | accuracy | drop pp | ONNX bytes | b1 ms | b64 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, engine, accuracy, size, _, b1, b64 in rows:
        print(f"| {name} | {engine} | {100 * accuracy:.2f} % | {100 * (base - accuracy):+.2f} | "
              f"{size:,} | {b1:.3f} | {b64:.3f} |")
    ratio = len(files["pruned + fine-tuned"]) / len(files["int8 QOperator"])
    ratio_qdq = len(files["pruned + fine-tuned"]) / len(files["int8 QDQ"])
    print(f"\nint8 ONNX vs float ONNX of the pruned model: {ratio:.2f}x (QOperator), "
          f"{ratio_qdq:.2f}x (QDQ)")


def _params(graph) -> int:
    return sum(int(v.size) for v in graph.constants.values())


if __name__ == "__main__":
    main()
