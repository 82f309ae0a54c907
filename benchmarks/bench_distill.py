"""Does distillation help? Hinton et al. 2015's MNIST experiment on the bundled split.

    python benchmarks/bench_distill.py [--seeds 0 1 2] [--epochs 20] [--temperatures 1 4 10 20]

Recipe (the distillation issue's): a LeNet-5 teacher trained on the 4,000 training images
(Adam 1e-3, batch 64, 20 epochs); students without regularisation trained the same way, alone
on the labels or distilled from the teacher with loss alpha * T^2 KL + (1 - alpha) * CE:

- Hinton's student 784-800-800-10 with alpha = 0.9, for T in {1, 4, 10, 20};
- a tiny student 784-30-10 with alpha = 0.5 (and 0.1, 0.9), and with 3x the epochs.

Each seed trains its own teacher; students of one seed share their initialisation. Printed:
markdown tables of test accuracy (mean ± std over seeds, per seed), the teacher's confidence on
its training set against the test set, and the tiny student's training accuracy.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim.distill import Distiller, soft_targets

BIG, TINY = [784, 800, 800, 10], [784, 30, 10]


def train_student(sizes, seed, train, epochs, teacher=None, T=4.0, alpha=0.9):
    """A student trained alone (``teacher`` None) or distilled; returns the model."""
    minnet.manual_seed(1000 + seed)
    student = models.mlp(sizes)
    if teacher is None:
        fit(student, optimizers.Adam(student.parameters(), lr=1e-3), train, epochs, seed=seed,
            progress=False)
    else:
        distiller = Distiller(student, teacher, T=T, alpha=alpha, cache_teacher=True)
        distiller.fit(optimizers.Adam(distiller.parameters(), lr=1e-3), train, epochs, seed=seed,
                      progress=False)
    return student


def confidence(teacher, x) -> dict[str, float]:
    """Mean top probability at T = 1 and T = 4 and mean soft-target entropy at T = 4."""
    with minnet.no_grad():
        logits = np.concatenate([teacher.eval()(minnet.Tensor(x[i:i + 500])).data
                                 for i in range(0, len(x), 500)])
    p1, p4 = soft_targets(logits, 1.0), soft_targets(logits, 4.0)
    return {"top1": p1.max(axis=1).mean(), "top4": p4.max(axis=1).mean(),
            "entropy4": -(p4 * np.log(np.maximum(p4, 1e-30))).sum(axis=1).mean(),
            "sure": (p1.max(axis=1) > 0.999).mean()}


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{np.mean(values):.2f} ± {spread:.2f} ({', '.join(f'{v:.1f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 4.0, 10.0, 20.0])
    parser.add_argument("--long-epochs", type=int, default=60, help="the tiny student's longer run")
    args = parser.parse_args()
    train, test = load_mnist("train"), load_mnist("test")
    started = time.perf_counter()

    runs = {}  # (row, column) -> list of accuracies in %, one per seed
    train_acc, conf = {}, {"train": [], "test": []}

    def record(row, column, model, data=test, store=runs):
        store.setdefault((row, column), []).append(100 * evaluate(model, data)["accuracy"])

    for seed in args.seeds:
        minnet.manual_seed(seed)
        teacher = models.lenet5()
        fit(teacher, optimizers.Adam(teacher.parameters(), lr=1e-3), train, args.epochs,
            seed=seed, progress=False)
        record("teacher", "alone", teacher)
        record("teacher", "alone", teacher, train, train_acc)
        conf["train"].append(confidence(teacher, train[0]))
        conf["test"].append(confidence(teacher, test[0]))
        students = {}  # one training per configuration, shared by the tables

        def student(sizes, epochs, distil, T=4.0, alpha=0.5):
            key = (tuple(sizes), epochs, distil and T, distil and alpha)
            if key not in students:
                students[key] = train_student(sizes, seed, train, epochs,
                                              teacher if distil else None, T, alpha)
            return students[key]

        for name, sizes, alpha in (("784-800-800-10", BIG, 0.9), ("784-30-10", TINY, 0.5)):
            record(name, "alone", student(sizes, args.epochs, False))
            for T in args.temperatures:
                record(name, f"T={T:g}", student(sizes, args.epochs, True, T, alpha))
        tiny_runs = [("alone", args.epochs, False, 0.5), ("alpha 0.1", args.epochs, True, 0.1),
                     ("alpha 0.5", args.epochs, True, 0.5), ("alpha 0.9", args.epochs, True, 0.9),
                     (f"alone, {args.long_epochs} epochs", args.long_epochs, False, 0.5),
                     (f"alpha 0.5, {args.long_epochs} epochs", args.long_epochs, True, 0.5)]
        for label, epochs, distil, alpha in tiny_runs:
            model = student(TINY, epochs, distil, 4.0, alpha)
            record("tiny", label, model)
            record("tiny", label, model, train, train_acc)
        print(f"seed {seed} done after {time.perf_counter() - started:.0f} s", flush=True)

    columns = ["alone"] + [f"T={T:g}" for T in args.temperatures]
    print(f"\nTest accuracy % on the 1,000 test images, mean ± std over seeds {args.seeds} "
          f"(per seed); Adam 1e-3, batch 64, {args.epochs} epochs\n")
    print("| model | alpha | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---|" * len(columns))
    print(f"| teacher LeNet-5 | | {summary(runs['teacher', 'alone'])} |"
          + " |" * (len(columns) - 1))
    for name, alpha in (("784-800-800-10", 0.9), ("784-30-10", 0.5)):
        print(f"| student {name} | {alpha} | "
              + " | ".join(summary(runs[name, c]) for c in columns) + " |")

    print("\nTeacher's soft targets (mean over seeds): top probability at T = 1 and T = 4, entropy "
          "at T = 4 (nats; uniform = 2.30), share of images with top probability > 0.999\n")
    print("| images | teacher accuracy % | top prob T=1 | top prob T=4 | entropy T=4 | > 0.999 |")
    print("|---|---:|---:|---:|---:|---:|")
    teacher_accuracy = {"train": train_acc["teacher", "alone"], "test": runs["teacher", "alone"]}
    for split, accs in teacher_accuracy.items():
        c = {k: np.mean([d[k] for d in conf[split]]) for k in conf[split][0]}
        print(f"| {split} | {np.mean(accs):.2f} | {c['top1']:.4f} | {c['top4']:.4f} | "
              f"{c['entropy4']:.3f} | {100 * c['sure']:.1f}% |")

    print("\nTiny student 784-30-10 (T = 4): test and training accuracy %\n")
    print("| run | test | train |\n|---|---|---|")
    for label, *_ in tiny_runs:
        print(f"| {label} | {summary(runs['tiny', label])} | {summary(train_acc['tiny', label])} |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
