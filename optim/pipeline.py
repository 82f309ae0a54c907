"""The end-to-end compression pipeline: stages, artifacts, resume and the report.

``run_pipeline(config, out)`` runs the enabled stages of a validated configuration
(``optim.pipeline_config``) in order, each on the model the previous one produced
(``optim.pipeline_stages``), and writes to the output directory ``out``::

    pipeline.json          the configuration and its hash (which run owns the directory)
    config.toml            the configuration text used
    NN-<name>/model.npz    the stage's model, a packed model file (optim.pipeline_store)
    NN-<name>/stage.json   its key, measurements and details, written last: the stage is done
    NN-<name>/work/        resumable checkpoints while the stage runs (removed when done)
    report.json/.csv/.txt  the table of every stage; accuracy_vs_size.png with matplotlib

A stage's key is the SHA-256 of its options, the run options that shape models and the
SHA-256 of the previous stage's model file (or of the baseline's checkpoint). Re-running
skips every stage whose ``stage.json`` holds the same key, and a stage interrupted mid-way
(even by SIGKILL) resumes from its work directory; every stage continues from the model as
loaded from the previous stage's file, so an interrupted and an uninterrupted run end with
the same report, timings aside (``tests/optim/test_pipeline_run.py``). A directory holding
another configuration's run is refused unless ``force``; then stages whose keys still
match are reused and the others replaced.
"""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

import minnet
from minnet.data import load_mnist
from minnet.io import atomic_write

from .pipeline_config import MNIST_SUBSETS, ConfigError, config_hash
from .pipeline_report import (TIMING_KEYS, compression_rows, format_table, measure,
                              plot_accuracy_vs_size, write_report)
from .pipeline_stages import STAGE_FUNCTIONS, Context, Outcome
from .pipeline_store import load_model, save_model

__all__ = ["PipelineError", "run_pipeline", "load_data", "stage_dirname", "summarize",
           "MEASUREMENT_OPTIONS", "FORMAT"]

FORMAT = "optim.pipeline.run/1"
# Run options that change measurements or file locations but no model: left out of stage keys
# (a finished stage measured with other values is measured again, not recomputed).
MEASUREMENT_OPTIONS = ("latency_repeats", "data_root", "test_limit")


class PipelineError(ValueError):
    """The output directory cannot be used (another run's artifacts, foreign files)."""


def stage_dirname(index: int, name: str) -> str:
    return f"{index:02d}-{name}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_data(run: dict) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` for the run: the bundled MNIST-5k or the full set, cut to seeded
    random subsets of ``limit`` training and ``test_limit`` test images (in file order)."""
    subset = MNIST_SUBSETS[run["dataset"]]
    x, y = load_mnist("train", subset, run.get("data_root"))
    x_test, y_test = load_mnist("test", subset, run.get("data_root"))
    return _subset(x, y, run.get("limit"), run["seed"]), \
        _subset(x_test, y_test, run.get("test_limit"), run["seed"])


def _subset(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int):
    if limit is None or limit >= len(y):
        return x, y
    keep = np.sort(np.random.default_rng(seed).permutation(len(y))[:limit])
    return x[keep], y[keep]


def _prepare_directory(out: Path, config: dict, text: str, force: bool) -> None:
    """Claim ``out`` for ``config``: refuse another configuration's run or foreign files
    unless ``force``, then write ``pipeline.json`` and ``config.toml``."""
    digest = config_hash(config)
    manifest = out / "pipeline.json"
    if manifest.exists():
        try:
            owner = json.loads(manifest.read_text()).get("config_hash")
        except (ValueError, AttributeError):
            owner = None
        if owner != digest and not force:
            raise PipelineError(
                f"--out: {out} holds the artifacts of another configuration (config hash "
                f"{str(owner)[:12]}, this one {digest[:12]}); pass --force to replace them "
                f"(stages that did not change are kept) or choose another directory")
    elif out.exists() and any(out.iterdir()) and not force:
        raise PipelineError(f"--out: {out} is not empty and holds no pipeline run "
                            f"(no pipeline.json); pass --force to write into it anyway or "
                            f"choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "pipeline.json") as f:
        f.write(json.dumps({"format": FORMAT, "config_hash": digest, "config": config},
                           indent=2).encode())
    with atomic_write(out / "config.toml") as f:
        f.write(text.encode())


def _stage_key(run: dict, stage: dict, input_hash: str) -> str:
    shaping = {k: v for k, v in run.items() if k not in MEASUREMENT_OPTIONS}
    return config_hash({"format": FORMAT, "run": shaping, "stage": stage, "input": input_hash})


def _finished(directory: Path, key: str) -> dict | None:
    """The stage record if ``directory`` holds the finished stage with ``key``."""
    try:
        record = json.loads((directory / "stage.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key or not (directory / "model.npz").is_file():
        return None
    shutil.rmtree(directory / "work", ignore_errors=True)  # left if killed right after stage.json
    return record


def _claim(directory: Path, key: str) -> Path:
    """The work directory of the stage ``key``, kept from an interrupted run of the same key,
    otherwise emptied (another key's stage or checkpoints lived here)."""
    work = directory / "work"
    key_file = work / "key"
    if directory.exists() and not (key_file.is_file() and key_file.read_text() == key):
        shutil.rmtree(directory)
    work.mkdir(parents=True, exist_ok=True)
    if not key_file.is_file():
        with atomic_write(key_file) as f:
            f.write(key.encode())
    return work


def _write_json(path: Path, value) -> None:
    with atomic_write(path) as f:
        f.write((json.dumps(value, indent=2) + "\n").encode())


def _measurement_key(run: dict) -> str:
    return config_hash({k: run.get(k) for k in MEASUREMENT_OPTIONS if k != "data_root"})


def _measured(directory: Path, record: dict, ctx: Context) -> dict:
    """``record`` with the measurements (test accuracy, counts, latency) of the stage's
    stored model."""
    stored, _ = load_model(directory / "model.npz")
    return {**record, **measure(stored, record["engine"], ctx.test, ctx.run["latency_repeats"]),
            "measured_with": _measurement_key(ctx.run)}


def _run_stage(stage: dict, model, ctx: Context, directory: Path, key: str) -> dict:
    """Run one stage, store its model and artifacts, measure the stored model, and write
    ``stage.json`` last. Returns the record."""
    started = time.perf_counter()
    outcome: Outcome = STAGE_FUNCTIONS[stage["type"]](model, stage, ctx)
    details = dict(outcome.details)
    history = details.pop("history", None)
    if history is not None:
        _write_json(directory / "history.json", history)
    for name, data in outcome.files.items():
        with atomic_write(directory / name) as f:
            f.write(data)
    sizes = save_model(outcome.model, directory / "model.npz",
                       meta={"stage": stage["name"], "type": stage["type"]})
    record = {"key": key, "stage": stage["name"], "type": stage["type"],
              "engine": outcome.engine, **sizes, "details": details}
    record = _measured(directory, record, ctx)
    record["seconds"] = time.perf_counter() - started
    _write_json(directory / "stage.json", record)
    shutil.rmtree(ctx.work, ignore_errors=True)
    return record


def summarize(rows: list[dict]) -> dict:
    """The final stage against the baseline: compression ratios, accuracy drop, b1 speed-up,
    and whether the targets (>= 10x smaller, drop <= 1 pp, faster at batch 1) are met."""
    base, final = rows[0], rows[-1]
    return {"final_stage": final["stage"], "engine": final["engine"], "ratio": final["ratio"],
            "file_ratio": final["file_ratio"], "accuracy": final["accuracy"],
            "baseline_accuracy": base["accuracy"], "accuracy_drop_pp": final["accuracy_drop_pp"],
            "latency_b1_speedup": base["latency_b1"] / final["latency_b1"],
            "targets": {"ratio_at_least_10x": final["ratio"] >= 10,
                        "file_ratio_at_least_10x": final["file_ratio"] >= 10,
                        "accuracy_drop_at_most_1pp": final["accuracy_drop_pp"] <= 1.0,
                        "faster_at_batch_1": final["latency_b1"] < base["latency_b1"]}}


def _summary_text(summary: dict) -> str:
    met = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in summary["targets"].items())
    return (f"final stage {summary['final_stage']!r} (run by {summary['engine']}): "
            f"{summary['ratio']:.1f}x smaller packed "
            f"({summary['file_ratio']:.1f}x on disk), test accuracy "
            f"{summary['accuracy']:.2%} vs {summary['baseline_accuracy']:.2%} "
            f"({-summary['accuracy_drop_pp']:+.2f} pp), batch-1 latency "
            f"{summary['latency_b1_speedup']:.1f}x faster\ntargets: {met}")


def _remove_stale(out: Path, current: set[str]) -> None:
    """Delete stage directories of this pipeline's making that the configuration no longer has."""
    for path in out.iterdir():
        ours = (path / "stage.json").exists() or (path / "work" / "key").exists()
        if path.is_dir() and path.name not in current and ours:
            shutil.rmtree(path)


def run_pipeline(config: dict, out: str | Path, *, config_text: str = "", force: bool = False,
                 progress: bool | None = None,
                 log: Callable[[str], None] = lambda s: tqdm.write(s)) -> dict:
    """Run the validated ``config`` into the directory ``out`` (see the module docstring) and
    return the report: ``{"format", "config", "rows", "summary", "environment"}``.

    ``progress``: tqdm bars (``None``: only on a terminal); ``log`` receives one line per
    stage and the final table. Raises ``PipelineError`` for an unusable ``out`` before any
    stage runs.
    """
    if not isinstance(config, dict) or set(config) != {"run", "stages"}:
        raise ConfigError("<config>", "expected the output of optim.pipeline_config.validate")
    out = Path(out)
    _prepare_directory(out, config, config_text, force)
    run = config["run"]
    train, test = load_data(run)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    names = [stage_dirname(i, s["name"]) for i, s in enumerate(config["stages"])]
    _remove_stale(out, set(names))
    records, model, baseline = [], None, None
    input_hash = "data:" + config_hash({k: run.get(k) for k in ("dataset", "limit", "seed")})
    bar = tqdm(config["stages"], desc="pipeline", unit="stage", disable=not show)
    for index, (stage, dirname) in enumerate(zip(bar, names)):
        bar.set_postfix_str(stage["name"])
        directory = out / dirname
        if stage["type"] == "baseline" and "checkpoint" in stage:
            input_hash = "checkpoint:" + _sha256(Path(stage["checkpoint"]))
        key = _stage_key(run, stage, input_hash)
        record = _finished(directory, key)
        where = f"[{index + 1}/{len(names)}] {stage['name']} ({stage['type']})"
        if record is None:
            log(f"{where}: running")
            ctx = Context(run, train, test, _claim(directory, key), baseline, show)
            record = _run_stage(stage, model, ctx, directory, key)
        elif record.get("measured_with") != _measurement_key(run):
            log(f"{where}: done earlier, reused and measured again")
            record = _measured(directory, record, Context(run, train, test, directory / "work"))
            _write_json(directory / "stage.json", record)
        else:
            log(f"{where}: done earlier, reused")
        model, _ = load_model(directory / "model.npz")
        if baseline is None:
            baseline = model
        input_hash = _sha256(directory / "model.npz")
        records.append(record)
    bar.close()
    rows = compression_rows([{k: v for k, v in r.items() if k not in ("key", "measured_with")}
                             for r in records])
    report = {"format": FORMAT, "config": config, "rows": rows, "summary": summarize(rows),
              "environment": {"python": platform.python_version(), "numpy": np.__version__,
                              "minnet": minnet.__version__, "machine": platform.machine(),
                              "timings": list(TIMING_KEYS)}}
    if plot_accuracy_vs_size(rows, out / "accuracy_vs_size.png"):
        report["plot"] = "accuracy_vs_size.png"
    write_report(report, out)
    log(format_table(rows))
    log(_summary_text(report["summary"]))
    return report
