"""Batch-1 latency of two finished runs' auto-stage models, timed side by side.

Loads the model of each run's ``*-auto`` stage and times one image through it with the same
engines the report uses (``optim.pipeline.engines.runner``: the integer-only kernels and
onnxruntime on the exported graph), interleaving the two runs round by round so that both see
the same machine load; prints the median and range of the per-round medians and their ratio.

    python benchmarks/auto_latency.py RUN_BYTES RUN_LATENCY [--rounds 15] [--repeats 50]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from optim.pipeline import load_data
from optim.pipeline.engines import runner
from optim.pipeline.store import load_model
from timing import step_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    config = json.loads((args.runs[0] / "pipeline.json").read_text())["config"]
    _, (x_test, _) = load_data(config["run"])
    image = np.ascontiguousarray(x_test[:1])
    models = [load_model(next(run.glob("*-auto")) / "model.npz")[0] for run in args.runs]
    for engine in ("integer", "onnxruntime"):
        runs = [runner(model, engine) for model in models]
        medians = [[], []]
        for _ in range(args.rounds):
            for i, run in enumerate(runs):
                medians[i].append(statistics.median(step_times(lambda: run(image), args.repeats)))
        (a, b) = (statistics.median(m) for m in medians)
        print(f"{engine:12s} " + "  ".join(
            f"{run.parent.name}/{run.name}: {1e3 * statistics.median(m):.4f} ms "
            f"[{1e3 * min(m):.4f}, {1e3 * max(m):.4f}]" for run, m in zip(args.runs, medians))
            + f"  ratio {b / a:.3f}")


if __name__ == "__main__":
    main()
