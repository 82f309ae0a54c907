"""Architecture search on the bundled MNIST: NSGA-II over the CNN space against LeNet-5.

    python benchmarks/bench_nas.py [--population 16] [--generations 8] [--epochs 3]
                                   [--full-epochs 20] [--workers 2] [--out nas-results]

NSGA-II searches ``cnn_space`` under a hard MACs budget (default: LeNet-5's MACs, so every
trial is cheaper than LeNet-5) for two objectives, validation error and MACs per image.
Each trial trains its architecture from scratch for ``--epochs`` epochs on 80 % of the 4,000
training images and measures the error on the other 20 % (a stratified split). Random search
with the same budget runs beside it for the best-so-far comparison (``--no-random`` skips it).

Then the test split, touched only here: every architecture on NSGA-II's front and LeNet-5
are trained with (a) the per-trial budget (same recipe, images and epochs as the search)
and (b) the full recipe (``--full-epochs`` epochs on all 4,000 training images, Adam 1e-3
with cosine annealing), and the report says whether an architecture dominates LeNet-5
(test error <= LeNet-5's with fewer MACs) or gives the measured gap. Writes the histories
(JSON, CSV), ``front.png``, ``best_so_far.png`` and ``report.md`` to ``--out``.
"""
from __future__ import annotations

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--population", type=int, default=16)
parser.add_argument("--generations", type=int, default=8)
parser.add_argument("--epochs", type=int, default=3, help="training epochs per trial")
parser.add_argument("--full-epochs", type=int, default=20, help="epochs of the full recipe")
parser.add_argument("--max-macs", type=int, default=None, help="MACs budget (default: LeNet-5's)")
parser.add_argument("--workers", type=int, default=2, help="worker processes (1: serial)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--no-random", action="store_true", help="skip the random-search baseline")
parser.add_argument("--resume", action="store_true", help="continue the searches saved in --out")
parser.add_argument("--out", default="nas-results")
args = parser.parse_args()
if args.workers > 1:  # one BLAS / Numba thread per worker process: no oversubscription
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(name, "1")

import platform  # noqa: E402  (after the thread settings)
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from minnet.data import load_mnist  # noqa: E402
from minnet.models import lenet5  # noqa: E402
from optim import metrics  # noqa: E402
from optim.nas import (NSGA2, MnistObjectives, RandomSearch, Trial, build_cnn, cnn_space,  # noqa: E402
                       describe, hypervolume_2d, macs_at_most, measure, plot_best_so_far, plot_front,
                       search)

LENET = "LeNet-5"


def build(arch: dict):
    """``build_cnn``, or LeNet-5 for the architecture named ``LENET``."""
    return lenet5() if arch.get("name") == LENET else build_cnn(arch)


def test_error(objectives: MnistObjectives, arch: dict, epochs: int | None, full: bool) -> float:
    """Test error of ``arch`` trained for ``epochs`` on the search's training part, or on all
    the training images when ``full``."""
    model = objectives.trained(arch, epochs, load_mnist("train") if full else None)
    return measure(model, load_mnist("test"), ("error",))["error"]


def unique_front(history) -> list:
    """The Pareto front by MACs, one record per model (genes that build nothing are ignored)."""
    front, seen = [], set()
    for record in sorted(history.pareto(), key=lambda r: (r.objectives[1], r.id)):
        if repr(build_cnn(record.arch)) not in seen:
            seen.add(repr(build_cnn(record.arch)))
            front.append(record)
    return front


def verdict(rows: list[tuple], errors: list[float]) -> str:
    """Which front architectures dominate LeNet-5 (row 0) on the test split, or the smallest gap."""
    lenet_macs, lenet_error = rows[0][1], errors[0]
    cheaper = [(label, macs, error) for (label, macs, *_), error in zip(rows[1:], errors[1:])
               if macs < lenet_macs]
    winners = [f"{label} ({error:.4f} at {macs:,} MACs)" for label, macs, error in cheaper
               if error <= lenet_error]
    if winners:
        return (f"{len(winners)} of the {len(rows) - 1} front architectures dominate LeNet-5 "
                f"(test error {lenet_error:.4f}, {lenet_macs:,} MACs): " + "; ".join(winners))
    if not cheaper:
        return "no front architecture has fewer MACs than LeNet-5"
    label, macs, error = min(cheaper, key=lambda c: c[2])
    return (f"none dominates LeNet-5 (test error {lenet_error:.4f}); the closest, {label} at "
            f"{macs:,} MACs, has test error {error:.4f} (gap {error - lenet_error:+.4f})")


def main() -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lenet_macs = metrics.macs(lenet5(), (1, 1, 28, 28))
    budget = args.max_macs or lenet_macs
    space = cnn_space().with_constraints(macs_at_most(budget))
    objectives = MnistObjectives(build, ("error", "macs"), epochs=args.epochs, seed=args.seed)
    trials = args.population * args.generations
    strategies = {"NSGA-II": NSGA2(space, population_size=args.population, seed=args.seed)}
    if not args.no_random:
        strategies["random"] = RandomSearch(space, n_objectives=2, seed=args.seed)
    lines = ["# NSGA-II over the CNN space vs LeNet-5\n",
             f"`python benchmarks/bench_nas.py {' '.join(sys.argv[1:])}` — "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.workers} "
             f"worker process(es), Python {platform.python_version()}, NumPy {np.__version__}, "
             f"load average {os.getloadavg()[0]:.1f} at the start\n",
             f"{trials} trials per strategy, {args.epochs} epochs per trial on 3,200 training images, "
             f"validation on 800; MACs budget {budget:,} (LeNet-5: {lenet_macs:,}).\n"]
    executor = ProcessPoolExecutor(args.workers) if args.workers > 1 else None
    run = map if executor is None else executor.map
    histories, started = {}, time.perf_counter()
    try:
        for name, strategy in strategies.items():
            start, stem = time.perf_counter(), out / name.lower().replace("-", "")
            histories[name] = history = search(space, strategy, objectives, trials, executor=executor,
                                               history_path=f"{stem}.json", resume=args.resume)
            history.to_csv(f"{stem}.csv")
            failed = sum(r.status != "ok" for r in history.records)
            scaled = np.array([r.objectives for r in history.ok()]) / [1.0, budget]
            lines.append(f"- {name}: {time.perf_counter() - start:.0f} s for {len(history)} trials "
                         f"({failed} failed or invalid), best validation error "
                         f"{history.best().objectives[0]:.4f}, hypervolume of (error, MACs / budget) "
                         f"below (1, 1): {hypervolume_2d(scaled, [1.0, 1.0]):.4f}")
        front = unique_front(histories["NSGA-II"])
        candidates = [{"name": LENET}] + [r.arch for r in front]
        start, n = time.perf_counter(), len(candidates)
        lenet_val = objectives(Trial(0, candidates[0]))[0]
        budget_errors = list(run(test_error, [objectives] * n, candidates, [None] * n, [False] * n))
        full_errors = list(run(test_error, [objectives] * n, candidates, [args.full_epochs] * n, [True] * n))
        lines.append(f"- training the front and LeNet-5 for the test split: "
                     f"{time.perf_counter() - start:.0f} s")
    finally:
        if executor is not None:
            executor.shutdown()
    lines.append(f"- total wall time: {time.perf_counter() - started:.0f} s\n")

    lines += ["| architecture | MACs | params | val. error | test error (budget) | test error (full) |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    rows = [(LENET, lenet_macs, metrics.count_params(lenet5()), lenet_val)] + [
        (describe(r.arch), int(r.objectives[1]), metrics.count_params(build_cnn(r.arch)), r.objectives[0])
        for r in front]
    for (label, macs, params, val), b, f in zip(rows, budget_errors, full_errors):
        lines.append(f"| {label} | {macs:,} | {params:,} | {val:.4f} | {b:.4f} | {f:.4f} |")
    lines.append("")
    for regime, errors in (("per-trial budget", budget_errors), ("full recipe", full_errors)):
        lines.append(f"- {regime}: {verdict(rows, errors)}")

    plot_front(histories, out / "front.png",
               references={f"{LENET} ({args.epochs} epochs)": (lenet_macs, lenet_val)})
    plot_best_so_far(histories, out / "best_so_far.png")
    report = "\n".join(lines) + "\n"
    (out / "report.md").write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
