"""Does minnet's training reproduce PyTorch's? A twin run step by step, then a seed comparison.

    python benchmarks/bench_reproduce.py [--seeds 0 1 ... 9] [--epochs 20]
                                         [--models lenet300 lenet5] [--no-twin] [--no-seeds]

Recipe (``bench_accuracy.py``'s): the bundled 4,000 training images, Adam 1e-3, batch 64,
20 epochs, accuracy on the 1,000 test images.

Twin run (seed 0): PyTorch starts from minnet's initial weights and takes minnet's batches in
minnet's order (``fit``'s loader); after each step the loss, the gradients and the Adam moments
of both are compared, and both end with a test accuracy. Agreement to float32 rounding at every
step means the two implement the same arithmetic (initialisation bounds aside, which
``tests/minnet/nn/test_init.py`` checks against torch).

Seeds: each framework trains with its own initialisation and shuffling, once per seed; the
means are compared by Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``), with the
difference's 95 % confidence interval. Each framework runs in a fresh process, one thread.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import minnet  # noqa: E402
from minnet import functional as F  # noqa: E402
from minnet import models, optimizers  # noqa: E402
from minnet.data import DataLoader, load_mnist  # noqa: E402
from minnet.kernels import backend  # noqa: E402
from minnet.train import evaluate  # noqa: E402
from bench_accuracy import minnet_accuracy, torch_accuracy  # noqa: E402
from torch_reference import torch_model  # noqa: E402

REPORT_STEPS = (1, 2, 3, 10, 100, 1000)


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours − theirs| / max |theirs| (0 when both are zero)."""
    scale = float(np.abs(theirs).max())
    return float(np.abs(ours - theirs).max()) / scale if scale else float(np.abs(ours).max())


def twin_run(name: str, epochs: int, seed: int = 0) -> None:
    """Train minnet and PyTorch side by side from the same weights on the same batches."""
    import torch

    torch.set_num_threads(1)
    (x, y), test = load_mnist("train"), load_mnist("test")
    minnet.manual_seed(seed)
    ours = models.lenet5() if name == "lenet5" else models.lenet_300_100()
    theirs = torch_model(name, weights_from=ours)
    opt_ours = optimizers.Adam(ours.parameters(), lr=1e-3)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    pairs = [(p, dict(theirs.named_parameters())[k]) for k, p in ours.named_parameters()]
    loader = DataLoader(x, y, batch_size=64, shuffle=True, seed=seed)  # fit's loader
    step, worst_loss = 0, 0.0
    print(f"twin run {name} (seed {seed}): | step | loss minnet | loss torch | grad rel. | "
          f"exp_avg rel. | exp_avg_sq rel. | params max abs. |")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for xb, yb in loader:
            loss_ours = F.cross_entropy(ours(minnet.Tensor(xb)), yb)
            opt_ours.zero_grad()
            loss_ours.backward()
            loss_theirs = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(xb)),
                                                            torch.from_numpy(yb))
            opt_theirs.zero_grad()
            loss_theirs.backward()
            grad = max(_relative(p.grad, q.grad.numpy()) for p, q in pairs)
            opt_ours.step()
            opt_theirs.step()
            step += 1
            worst_loss = max(worst_loss, abs(float(loss_ours.data) - loss_theirs.item()))
            if step in REPORT_STEPS:
                states = [(opt_ours.state[id(p)], opt_theirs.state[q]) for p, q in pairs]
                m = max(_relative(a["exp_avg"], b["exp_avg"].numpy()) for a, b in states)
                v = max(_relative(a["exp_avg_sq"], b["exp_avg_sq"].numpy()) for a, b in states)
                drift = max(float(np.abs(p.data - q.detach().numpy()).max()) for p, q in pairs)
                print(f"| {step} | {float(loss_ours.data):.7f} | {loss_theirs.item():.7f} | "
                      f"{grad:.1e} | {m:.1e} | {v:.1e} | {drift:.1e} |", flush=True)
    with torch.no_grad():
        acc_theirs = float((theirs(torch.from_numpy(test[0])).argmax(1).numpy() == test[1]).mean())
    acc_ours = evaluate(ours, test)["accuracy"]
    print(f"twin run {name}: {step} steps, largest |loss difference| {worst_loss:.1e}; test "
          f"accuracy minnet {100 * acc_ours:.1f} %, torch {100 * acc_theirs:.1f} %", flush=True)


def seed_accuracies(framework: str, name: str, seeds: list[int], epochs: int,
                    backend_name: str) -> list[float]:
    """Test accuracies (%) of ``framework`` over ``seeds``, in this (fresh) process."""
    data = (load_mnist("train"), load_mnist("test"))
    if framework == "torch":
        import torch
        torch.set_num_threads(1)
        run = torch_accuracy
    else:
        backend.set_backend(backend_name)
        run = minnet_accuracy
    return [100 * run(name, seed, epochs, data) for seed in seeds]


def compare(name: str, seeds: list[int], epochs: int, backend_name: str) -> None:
    from scipy import stats

    spawn = multiprocessing.get_context("spawn")
    accs, seconds = {}, {}
    for framework in ("minnet", "torch"):
        start = time.perf_counter()
        with spawn.Pool(1) as pool:
            accs[framework] = pool.apply(seed_accuracies,
                                         (framework, name, seeds, epochs, backend_name))
        seconds[framework] = time.perf_counter() - start
    ours, theirs = accs["minnet"], accs["torch"]
    test = stats.ttest_ind(ours, theirs, equal_var=False)
    low, high = test.confidence_interval(0.95)
    print(f"| {name} | {statistics.mean(ours):.2f} ± {statistics.stdev(ours):.2f} | "
          f"{statistics.mean(theirs):.2f} ± {statistics.stdev(theirs):.2f} | "
          f"{statistics.mean(ours) - statistics.mean(theirs):+.2f} [{low:+.2f}, {high:+.2f}] | "
          f"{test.statistic:.2f} | {test.df:.1f} | {test.pvalue:.2f} |", flush=True)
    for framework, values in accs.items():
        print(f"  {name} {framework} per seed: {', '.join(f'{a:.1f}' for a in values)} "
              f"({seconds[framework]:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--models", nargs="+", choices=["lenet300", "lenet5"],
                        default=["lenet300", "lenet5"])
    parser.add_argument("--backend", choices=["numba", "numpy"], default=backend.get_backend())
    parser.add_argument("--no-twin", action="store_true", help="skip the step-by-step twin run")
    parser.add_argument("--no-seeds", action="store_true", help="skip the seed comparison")
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error(f"--seeds needs at least 2 seeds for a t-test, got {args.seeds}")
    backend.set_backend(args.backend)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {importlib.metadata.version('torch')}, "
          f"scipy {importlib.metadata.version('scipy')}; minnet backend {args.backend}; "
          f"one thread; {args.epochs} epochs")
    if not args.no_twin:
        for name in args.models:
            twin_run(name, args.epochs)
    if not args.no_seeds:
        print(f"\nseeds {args.seeds}, each framework its own initialisation and shuffling\n")
        print("| model | minnet % | PyTorch % | difference (95 % CI) pp | Welch t | df | p |")
        print("|---|---|---|---|---|---|---|")
        for name in args.models:
            compare(name, args.seeds, args.epochs, args.backend)


if __name__ == "__main__":
    main()
