"""Train-step and inference time of LeNet-300-100 and LeNet-5: minnet vs PyTorch, same run.

    python benchmarks/bench_train.py [--steps 40] [--threads 2] [--backend numba|numpy]
                                     [--only lenet5:infer:64 ...] [--rounds 2]

Each figure is the median of ``--steps`` timed repetitions, taken in ``--rounds`` rounds
(default 2) alternating with PyTorch's, each round in a fresh process after ``--warmup`` untimed steps (loading PyTorch
into the same process as NumPy slows both here, so the frameworks never share a process).
A train step is forward, cross-entropy, backward and an Adam step; "compiled" is minnet's model
run by ``optim.graph`` (the compiled training step, the compiled forward graph). PyTorch (if importable)
runs the same architecture, weights, batch and thread count, so the printed
ratios (minnet / PyTorch) come from one run on one machine state.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import multiprocessing
import os
import platform
import statistics

import numpy as np

import minnet
from minnet import functional as F
from minnet import models, optimizers
from minnet.kernels import backend
from timing import step_times
from torch_reference import torch_model


def minnet_cases(name: str, batch: int, rng, compiled: bool = False):
    """Eager minnet, or with ``compiled`` the same model run by ``optim.graph``: the compiled
    training step (``compile_training``, then the same Adam) and the compiled forward graph."""
    minnet.manual_seed(0)
    model = models.lenet5() if name == "lenet5" else models.lenet_300_100()
    opt = optimizers.Adam(model.parameters(), lr=1e-3)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)

    def train_step():
        loss = F.cross_entropy(model(minnet.Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        with minnet.no_grad():
            model(minnet.Tensor(x))

    if not compiled:
        return model, train_step, infer
    from optim.graph import compile, compile_training, optimize, trace
    step = compile_training(model, x)
    forward = compile(optimize(trace(model.eval(), x)))

    def compiled_train_step():
        step(x, y)
        opt.step()

    return model, compiled_train_step, lambda: forward(x)


def torch_cases(name: str, batch: int, rng):
    import torch

    model = torch_model(name, weights_from=minnet_cases(name, 1, np.random.default_rng(0))[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(rng.random((batch, 1, 28, 28), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, batch))

    def train_step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(x)

    return train_step, infer


def measure(framework: str, name: str, task: str, batch: int, steps: int, warmup: int,
            threads: int, backend_name: str) -> list[float]:
    """Step times of one case, run in a fresh process so neither framework's thread pools
    disturb the other's (loading PyTorch beside NumPy slows both here)."""
    rng = np.random.default_rng(0)
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
        train_step, infer = torch_cases(name, batch, rng)
    else:
        backend.set_backend(backend_name)
        _, train_step, infer = minnet_cases(name, batch, rng, framework == "compiled")
    return step_times(train_step if task == "train" else infer, steps, warmup)


CASES = [("lenet300", "train", 128), ("lenet5", "train", 64),
         ("lenet300", "infer", 1), ("lenet300", "infer", 256),
         ("lenet5", "infer", 1), ("lenet5", "infer", 64), ("lenet5", "infer", 256)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--backend", choices=["numba", "numpy"], default=backend.get_backend())
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds per case (more rounds even out a loaded machine)")
    parser.add_argument("--only", nargs="+", metavar="MODEL:TASK:BATCH",
                        help="run only these cases, e.g. lenet5:infer:64 lenet5:train:64")
    args = parser.parse_args()
    backend.set_backend(args.backend)
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    try:
        import numba
        numba_version = numba.__version__
    except ImportError:
        numba_version = "not installed"
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}, numpy {np.__version__}, numba {numba_version}, "
          f"torch {torch_version}; backend {args.backend}; threads {args.threads}; "
          f"median of {args.steps} in {args.rounds} alternating rounds, each framework in a fresh "
          f"process, {args.warmup} warm-up each")
    print("| model | task | batch | minnet ms | compiled ms | torch ms | minnet / torch "
          "| compiled / torch |")
    print("|---|---|---|---|---|---|---|---|")
    frameworks = ["minnet", "compiled"] + (["torch"] if torch_version != "not installed" else [])
    spawn = multiprocessing.get_context("spawn")
    cases = CASES if not args.only else [(m, t, int(b)) for m, t, b in
                                         (case.split(":") for case in args.only)]
    for name, task, batch in cases:
        times = {f: [] for f in frameworks}
        for _ in range(args.rounds):  # alternating, so drift of the machine hits both sides
            for framework in frameworks:
                with spawn.Pool(1) as pool:
                    times[framework] += pool.apply(measure, (framework, name, task, batch,
                                                             args.steps // args.rounds,
                                                             args.warmup,
                                                             args.threads, args.backend))
        ours, compiled = (statistics.median(times[f]) for f in ("minnet", "compiled"))
        theirs = statistics.median(times["torch"]) if "torch" in times else float("nan")
        print(f"| {name} | {task} | {batch} | {1e3 * ours:.3f} | {1e3 * compiled:.3f} | "
              f"{1e3 * theirs:.3f} | {ours / theirs:.2f} | {compiled / theirs:.2f} |",
              flush=True)

if __name__ == "__main__":
    main()
