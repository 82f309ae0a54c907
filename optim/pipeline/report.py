r"""Measuring a stage's model and reporting the pipeline: accuracy, size, MACs, latency.

Each stage's model is measured by an *engine*, what actually runs it
(``optim.pipeline.engines``).

Sizes: ``packed_bytes`` is the payload of the stage's packed model file (the model as
deployed, ``optim.pipeline.store``) and ``file_bytes`` that file's size on disk; the
compression ratios are the baseline's divided by the stage's,

.. math:: r = B_{\text{baseline}} / B_{\text{stage}}

(Han et al. 2016 report the same ratio of storage). MACs follow ``optim.metrics.macs`` on the
float view (dense count: a pruned weight still counts); latency is the median wall time of a
forward pass on 1 and on 64 test images.
Tests: ``tests/optim/pipeline/test_pipeline_report.py``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from typing import Callable, Sequence

import numpy as np

from minnet import nn
from minnet.io import atomic_write
from optim import metrics
from optim.auto import energy_per_inference, layer_macs
from optim.quant import QuantSequential, quantizable_layers

from .engines import float_view, onnx_session, runner

__all__ = ["measure", "compression_rows", "COLUMNS", "format_table", "report_csv",
           "write_report", "plot_accuracy_vs_size"]

LATENCY_BATCHES = (1, 64)
EVAL_BATCH = 250


def _accuracy(run: Callable, x: np.ndarray, y: np.ndarray) -> float:
    correct = 0
    for start in range(0, len(x), EVAL_BATCH):
        logits = run(x[start:start + EVAL_BATCH])
        correct += int((np.asarray(logits).argmax(axis=1) == y[start:start + EVAL_BATCH]).sum())
    return correct / len(x)


def _median_time(run: Callable, x: np.ndarray, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``run(x)`` over ``repeats`` calls after ``warmup`` (as
    ``optim.metrics.latency``, for any callable)."""
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        run(x)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def _nonzero_macs(plain: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the Linear/Conv2d layers with a non-zero weight (a sparse
    kernel's work), from ``optim.auto.layer_macs`` scaled by each layer's weight density."""
    layers = quantizable_layers(plain)
    return int(round(sum(count * np.count_nonzero(layers[name].weight.data)
                         / layers[name].weight.data.size
                         for name, count in layer_macs(plain, input_shape).items())))


def measure(model: nn.Module, engine: str, test: tuple[np.ndarray, np.ndarray],
            repeats: int = 20, onnx: bytes | None = None) -> dict:
    """Test accuracy, parameters (all, and non-zero), MACs per image and latency at batch 1
    and 64 (seconds) of ``model`` run by ``engine``; with ``onnx`` (a file's bytes) the
    ``onnxruntime`` engine runs that file."""
    x, y = test
    plain = float_view(model)
    run = onnx_session(onnx) if onnx is not None and engine == "onnxruntime" \
        else runner(model, engine)
    result = {"engine": engine, "accuracy": _accuracy(run, x, y),
              "params": metrics.count_params(plain),
              "nonzero": int(sum(np.count_nonzero(p.data) for p in plain.parameters())),
              "macs": metrics.macs(plain, (1,) + x.shape[1:]),
              "nonzero_macs": _nonzero_macs(plain, (1,) + x.shape[1:]),
              "arithmetic": "int8" if isinstance(model, QuantSequential) else "fp32"}
    for batch in LATENCY_BATCHES:
        sample = np.ascontiguousarray(np.resize(x, (batch,) + x.shape[1:]))
        result[f"latency_b{batch}"] = _median_time(run, sample, repeats)
    return result


# ---- report -----------------------------------------------------------------------------

TIMING_KEYS = ("latency_b1", "latency_b64", "seconds")

COLUMNS = (  # (key, header, format)
    ("stage", "stage", "{}"), ("engine", "engine", "{}"),
    ("accuracy", "acc %", "{:.2%}"), ("accuracy_drop_pp", "drop pp", "{:+.2f}"),
    ("params", "params", "{:,}"), ("nonzero", "nonzero", "{:,}"), ("macs", "MACs", "{:,}"),
    ("packed_bytes", "packed B", "{:,}"), ("file_bytes", "file B", "{:,}"),
    ("energy_uj", "energy uJ", "{:.2f}"),
    ("ratio", "ratio", "{:.1f}x"), ("file_ratio", "file ratio", "{:.1f}x"),
    ("latency_b1", "b1 ms", "{:.3f}"), ("latency_b64", "b64 ms", "{:.2f}"),
    ("seconds", "stage s", "{:.1f}"),
)
_MILLISECONDS = ("latency_b1", "latency_b64")


def compression_rows(stages: Sequence[dict]) -> list[dict]:
    """Report rows: each stage's measurements with the accuracy drop (percentage points), the
    compression ratios relative to the first stage (the baseline) and the energy per inference
    in microjoules (``optim.auto.energy_per_inference``: Horowitz 2014's 45 nm figures, the
    non-zero MACs at the model's arithmetic and the packed bytes read once from DRAM)."""
    base = stages[0]
    rows = []
    for stage in stages:
        row = dict(stage)
        row["accuracy_drop_pp"] = 100.0 * (base["accuracy"] - stage["accuracy"])
        row["ratio"] = base["packed_bytes"] / stage["packed_bytes"]
        row["file_ratio"] = base["file_bytes"] / stage["file_bytes"]
        if stage.get("nonzero_macs") is not None:
            row["energy_uj"] = energy_per_inference(
                stage["nonzero_macs"], 8 * stage["packed_bytes"], stage["arithmetic"]) / 1e6
        rows.append(row)
    return rows


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value * 1e3 if key in _MILLISECONDS else value)


def format_table(rows: Sequence[dict]) -> str:
    """The rows as an aligned text table (one line per stage)."""
    cells = [[header for _, header, _ in COLUMNS]]
    cells += [[_cell(row, key, fmt) for key, _, fmt in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report_csv(rows: Sequence[dict]) -> str:
    """The rows as CSV, one column per ``COLUMNS`` key (latencies in seconds)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, [key for key, _, _ in COLUMNS], extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_report(report: dict, directory) -> None:
    """``report.json`` (everything), ``report.csv`` (the rows) and ``report.txt`` (the table)
    in ``directory``, each written atomically."""
    for name, text in (("report.json", json.dumps(report, indent=2) + "\n"),
                       ("report.csv", report_csv(report["rows"])),
                       ("report.txt", format_table(report["rows"]) + "\n")):
        with atomic_write(directory / name) as f:
            f.write(text.encode())


def plot_accuracy_vs_size(rows: Sequence[dict], path) -> bool:
    """A PNG of test accuracy against packed size (log scale), one point per stage joined in
    pipeline order, labelled with the stage names and compression ratios; an ``auto`` stage's
    measured candidates are crosses at their validation accuracy, the chosen one circled. Returns False (and writes nothing) when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = [r["packed_bytes"] / 1024 for r in rows]
    accuracy = [100 * r["accuracy"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(sizes, accuracy, "-", color="0.75", zorder=1)
    ax.scatter(sizes, accuracy, zorder=2)
    points: dict[tuple[float, float], list[str]] = {}  # stages at the same point share a label
    for row, s, a in zip(rows, sizes, accuracy):
        points.setdefault((s, a), []).append(f"{row['stage']} ({row['ratio']:.1f}x)")
    for i, ((s, a), labels) in enumerate(points.items()):  # alternate above/below neighbours
        ax.annotate(", ".join(labels), (s, a), textcoords="offset points",
                    xytext=(6, 6 if i % 2 == 0 else -13), fontsize=8)
    ax.axhline(accuracy[0] - 1.0, color="tab:red", linestyle=":", linewidth=1,
               label="baseline - 1 pp")
    for row in rows:  # an auto stage's candidates, at their validation accuracy
        candidates = [c for c in row.get("details", {}).get("candidates", [])
                      if c.get("size") is not None]
        if candidates:
            ax.scatter([c["size"] / 1024 for c in candidates],
                       [100 * c["val_accuracy"] for c in candidates], marker="x",
                       color="tab:orange", label=f"{row['stage']}: candidates (validation acc.)")
            chosen = candidates[-1]
            ax.scatter([chosen["size"] / 1024], [100 * chosen["val_accuracy"]], s=120,
                       facecolors="none", edgecolors="tab:green",
                       label=f"{row['stage']}: chosen (validation acc.)")
    ax.set_xscale("log")
    ax.set_xlabel("packed model size (KiB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs size across the pipeline's stages")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())
    return True
