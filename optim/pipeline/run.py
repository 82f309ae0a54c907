"""The end-to-end compression pipeline: stages, artifacts, resume and the report.

``run_pipeline(config, out)`` runs the enabled stages of a validated configuration
(``optim.pipeline.config``) in order, each on the model the previous one produced
(``optim.pipeline.stages``), and writes to the output directory ``out``::

    manifest.json          every file and directory the pipeline wrote here (``Manifest``)
    pipeline.json          the configuration and its hash (which run owns the directory)
    config.toml            the configuration text used
    NN-<name>/model.npz    the stage's model, a packed model file (optim.pipeline.store)
    NN-<name>/stage.json   its key, measurements and details, written last: the stage is done
    NN-<name>/work/        resumable checkpoints while the stage runs (removed when done)
    report.json/.csv/.txt  the table of every stage; accuracy_vs_size.png with matplotlib

A stage's key is the SHA-256 of its options, the run options that shape models and the
SHA-256 of the previous stage's model file (or of the baseline's checkpoint). Re-running
skips every stage whose ``stage.json`` holds the same key, and a stage interrupted mid-way
(even by SIGKILL) resumes from its work directory; every stage continues from the model as
loaded from the previous stage's file, so an interrupted and an uninterrupted run end with
the same report, timings aside (``tests/optim/pipeline/test_pipeline_run.py``). A directory
holding another configuration's run is refused unless ``force``; then stages whose keys still
match are reused and the others replaced. Whatever the options, the pipeline removes or
overwrites only what its manifest records as its own: a user's file in the output directory
(even inside a stage's directory) is never deleted, and a run refuses to overwrite one.
Temporary files that a killed run's atomic writes left are swept at the next start.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

import minnet
from minnet.io import atomic_write

from .config import ConfigError, config_hash
from .sources import load_run_data
from .report import (TIMING_KEYS, compression_rows, format_table, measure,
                     plot_accuracy_vs_size, write_report)
from .stages import STAGE_FUNCTIONS, Context, Outcome
from .store import PackedModelError, load_model, save_model

__all__ = ["PipelineError", "Manifest", "run_pipeline", "load_data", "stage_dirname",
           "summarize", "MEASUREMENT_OPTIONS", "FORMAT", "MANIFEST"]

FORMAT = "optim.pipeline.run/1"
# Run options that change measurements or file locations but no model: left out of stage keys
# (a finished stage measured with other values is measured again, not recomputed).
MEASUREMENT_OPTIONS = ("latency_repeats", "data_root", "test_limit")
# The files optim.pipeline.report.write_report writes in the output directory.
REPORT_FILES = ("report.json", "report.csv", "report.txt")
PLOT_FILE = "accuracy_vs_size.png"


class PipelineError(ValueError):
    """The output directory cannot be used (another run's artifacts, foreign files)."""


def stage_dirname(index: int, name: str) -> str:
    return f"{index:02d}-{name}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_data(run: dict) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` for the run (``optim.pipeline.sources``: MNIST or the user's .npz), cut
    to seeded random subsets of ``limit`` training and ``test_limit`` test images (in file
    order)."""
    (x, y), (x_test, y_test) = load_run_data(run)
    return _subset(x, y, run.get("limit"), run["seed"]), \
        _subset(x_test, y_test, run.get("test_limit"), run["seed"])


def _subset(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int):
    if limit is None or limit >= len(y):
        return x, y
    keep = np.sort(np.random.default_rng(seed).permutation(len(y))[:limit])
    return x[keep], y[keep]


# ---- what the pipeline wrote: the manifest -----------------------------------------------

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "optim.pipeline.manifest/1"
# minnet.io.atomic_write's temporary file beside <name>: ".<name>.<16 hex digits>.tmp"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{16}\.tmp$")


class Manifest:
    """The files, directories and scratch trees that the pipeline wrote in ``out``, kept in
    ``out/manifest.json`` (written atomically after every change). A path is recorded *before*
    it is created, so a run killed at any moment leaves nothing of its own unrecorded; only
    recorded paths are ever removed or overwritten, so a user's file survives ``--force``
    wherever it lies. Temporary files of interrupted atomic writes (``.<name>.<hex>.tmp``
    beside a recorded file, or anywhere in a recorded tree) are swept by ``sweep``.
    Tests: ``tests/adversarial/test_optim_pipeline.py``."""

    def __init__(self, out: Path):
        self.out = out
        self.files: set[str] = set()
        self.dirs: set[str] = set()
        self.trees: set[str] = set()
        try:
            record = json.loads((out / MANIFEST).read_text())
        except (OSError, ValueError):
            return  # none yet, or unreadable: the pipeline owns nothing it can prove
        if isinstance(record, dict) and record.get("format") == MANIFEST_FORMAT:
            for kind in ("files", "dirs", "trees"):
                paths = record.get(kind)
                if isinstance(paths, list):
                    getattr(self, kind).update(p for p in paths if self._valid(p))

    @staticmethod
    def _valid(rel: object) -> bool:
        if not isinstance(rel, str) or not rel:
            return False
        parts = rel.split("/")
        return not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def owns(self, path: Path) -> bool:
        rel = self._rel(path)
        return (rel in self.files or rel in self.dirs or rel in self.trees
                or any(rel.startswith(tree + "/") for tree in self.trees))

    def _save(self) -> None:
        _write_json(self.out / MANIFEST, {"format": MANIFEST_FORMAT,
                                          "files": sorted(self.files),
                                          "dirs": sorted(self.dirs),
                                          "trees": sorted(self.trees)})

    def file(self, path: Path) -> Path:
        """Record ``path`` as the pipeline's before it is written; PipelineError if a file
        the pipeline did not write is there."""
        if not self.owns(path):
            if path.exists() or path.is_symlink():
                raise PipelineError(f"--out: {path} exists and was not written by the pipeline; "
                                    f"move it away or choose another directory")
            self.files.add(self._rel(path))
            self._save()
        return path

    def directory(self, path: Path, tree: bool = False) -> Path:
        """Make the directory ``path`` (recorded first if it is new). A ``tree`` is scratch
        space: everything in it is the pipeline's, so it must not exist unless recorded."""
        if path.is_dir():
            if tree and not self.owns(path):
                raise PipelineError(f"--out: {path} exists and was not made by the pipeline; "
                                    f"move it away or choose another directory")
            return path
        (self.trees if tree else self.dirs).add(self._rel(path))
        self._save()
        try:
            path.mkdir()
        except OSError as err:
            raise PipelineError(f"--out: cannot create {path}: {err.strerror or err}") from None
        return path

    def remove(self, path: Path) -> None:
        """Delete what the pipeline recorded at or under ``path``: its files and trees, then
        its directories that are left empty (a directory holding a user's file stays)."""
        rel = self._rel(path)

        def under(p: str) -> bool:
            return p == rel or p.startswith(rel + "/")
        for name in sorted(p for p in self.files if under(p)):
            with contextlib.suppress(FileNotFoundError):
                (self.out / name).unlink()
            self.files.discard(name)
        for name in sorted(p for p in self.trees if under(p)):
            shutil.rmtree(self.out / name, ignore_errors=True)
            self.trees.discard(name)
        for name in sorted((p for p in self.dirs if under(p)), key=len, reverse=True):
            target = self.out / name
            if not target.exists():
                self.dirs.discard(name)
            elif not any(target.iterdir()):
                target.rmdir()
                self.dirs.discard(name)
        self._save()

    def stage_dirs(self) -> set[str]:
        """Top-level directories holding anything the pipeline recorded."""
        return {p.split("/")[0] for p in self.files | self.dirs | self.trees if "/" in p} \
            | {p for p in self.dirs | self.trees if "/" not in p}

    def sweep(self) -> int:
        """Remove the temporary files that interrupted atomic writes left: beside a recorded
        file (including the manifest itself) or anywhere in a recorded tree. Returns their
        number."""
        targets = {MANIFEST} | self.files
        parents = {str(Path(p).parent) for p in targets}
        removed = 0
        for parent in parents:
            folder = self.out / parent
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                match = _TEMPORARY.match(entry.name)
                rel = self._rel(folder / match["name"]) if match else None
                if match and rel in targets and entry.is_file():
                    entry.unlink()
                    removed += 1
        for tree in self.trees:
            for entry in (self.out / tree).rglob(".*.tmp"):
                if _TEMPORARY.match(entry.name) and entry.is_file():
                    entry.unlink()
                    removed += 1
        return removed


def _check_out(out: Path) -> None:
    """``out`` must be a directory or creatable as one: not a file, not under a file."""
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out: {out} is a file, not a directory; choose a directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise PipelineError(f"--out: {out} lies under {parent}, which is a file, not a "
                                    f"directory")
            break


def _prepare_directory(out: Path, config: dict, text: str, force: bool) -> Manifest:
    """Claim ``out`` for ``config``: refuse another configuration's run or foreign files
    unless ``force``, sweep the temporary files of interrupted writes, then write
    ``pipeline.json`` and ``config.toml``. Returns the directory's manifest."""
    _check_out(out)
    digest = config_hash(config)
    manifest = Manifest(out)
    record = out / "pipeline.json"
    if record.exists():
        try:
            owner = json.loads(record.read_text()).get("config_hash")
        except (OSError, ValueError, AttributeError):
            owner = None
        if owner != digest and not force:
            raise PipelineError(
                f"--out: {out} holds the artifacts of another configuration (config hash "
                f"{str(owner)[:12]}, this one {digest[:12]}); pass --force to replace them "
                f"(stages that did not change are kept) or choose another directory")
        if not manifest.owns(record):
            raise PipelineError(f"--out: {out} holds a pipeline.json that no {MANIFEST} lists "
                                f"(a run of an older version, or not the pipeline's): it cannot "
                                f"tell its files from others', so it writes nothing there; "
                                f"choose another directory")
    elif out.is_dir() and not force and any(
            not manifest.owns(p) and p.name != MANIFEST and not _TEMPORARY.match(p.name)
            for p in out.iterdir()):
        raise PipelineError(f"--out: {out} is not empty and holds no pipeline run "
                            f"(no pipeline.json); pass --force to write into it anyway or "
                            f"choose another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        manifest.sweep()
        with atomic_write(manifest.file(record)) as f:
            f.write(json.dumps({"format": FORMAT, "config_hash": digest, "config": config},
                               indent=2).encode())
        with atomic_write(manifest.file(out / "config.toml")) as f:
            f.write(text.encode())
        for name in REPORT_FILES + (PLOT_FILE,):  # refuse a user's file now, not after the run
            manifest.file(out / name)
    except OSError as err:
        raise PipelineError(f"--out: cannot write in {out}: {err.strerror or err}") from None
    return manifest


def _stage_key(run: dict, stage: dict, input_hash: str) -> str:
    shaping = {k: v for k, v in run.items() if k not in MEASUREMENT_OPTIONS}
    return config_hash({"format": FORMAT, "run": shaping, "stage": stage, "input": input_hash})


def _finished(directory: Path, key: str, manifest: Manifest) -> tuple[dict, object] | None:
    """``(record, model)`` if ``directory`` holds the finished stage with ``key`` and a
    readable model file (a corrupt ``stage.json`` or ``model.npz`` means: run it again)."""
    try:
        record = json.loads((directory / "stage.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    try:
        model, _ = load_model(directory / "model.npz")
    except (OSError, PackedModelError):
        return None
    manifest.remove(directory / "work")  # left if killed right after stage.json
    return record, model


def _claim(directory: Path, key: str, manifest: Manifest) -> Path:
    """The work directory of the stage ``key``, kept from an interrupted run of the same key;
    otherwise what the pipeline wrote in ``directory`` (another key's stage or checkpoints)
    is removed first. Files the pipeline did not write stay."""
    work = directory / "work"
    key_file = work / "key"
    resumable = manifest.owns(key_file) and key_file.is_file() and key_file.read_text() == key
    if not resumable:
        manifest.remove(directory)
    manifest.directory(directory)
    manifest.directory(work, tree=True)
    for name in ("model.npz", "stage.json"):  # refuse a user's file before the stage runs
        manifest.file(directory / name)
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
    stored model, run from its deployed file when the stage wrote one (``artefact``)."""
    stored, _ = load_model(directory / "model.npz")
    artefact = record.get("artefact")
    onnx = (directory / artefact).read_bytes() if artefact else None
    return {**record, **measure(stored, record["engine"], ctx.test, ctx.run["latency_repeats"],
                                onnx=onnx), "measured_with": _measurement_key(ctx.run)}


def _run_stage(stage: dict, model, ctx: Context, directory: Path, key: str,
               manifest: Manifest) -> dict:
    """Run one stage, store its model and artifacts, measure the stored model, and write
    ``stage.json`` last. Returns the record."""
    started = time.perf_counter()
    outcome: Outcome = STAGE_FUNCTIONS[stage["type"]](model, stage, ctx)
    details = dict(outcome.details)
    history = details.pop("history", None)
    if history is not None:
        _write_json(manifest.file(directory / "history.json"), history)
    for name, data in outcome.files.items():
        with atomic_write(manifest.file(directory / name)) as f:
            f.write(data)
    sizes = save_model(outcome.model, manifest.file(directory / "model.npz"),
                       meta={"stage": stage["name"], "type": stage["type"]})
    if outcome.artefact is not None:  # the deployed file's size on disk, not the npz's
        sizes["file_bytes"] = (directory / outcome.artefact).stat().st_size
    record = {"key": key, "stage": stage["name"], "type": stage["type"],
              "engine": outcome.engine, **sizes, "details": details,
              **({"artefact": outcome.artefact} if outcome.artefact else {})}
    record = _measured(directory, record, ctx)
    record["seconds"] = time.perf_counter() - started
    _write_json(manifest.file(directory / "stage.json"), record)
    manifest.remove(ctx.work)
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


def _remove_stale(manifest: Manifest, current: set[str]) -> None:
    """Delete what the pipeline wrote for stages the configuration no longer has."""
    for name in sorted(manifest.stage_dirs() - current):
        manifest.remove(manifest.out / name)


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
        raise ConfigError("<config>", "expected the output of optim.pipeline.config.validate")
    out = Path(out)
    manifest = _prepare_directory(out, config, config_text, force)
    run = config["run"]
    train, test = load_data(run)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    names = [stage_dirname(i, s["name"]) for i, s in enumerate(config["stages"])]
    _remove_stale(manifest, set(names))
    records, model, baseline = [], None, None
    input_hash = "data:" + config_hash({k: run.get(k) for k in ("dataset", "limit", "seed")})
    bar = tqdm(config["stages"], desc="pipeline", unit="stage", disable=not show)
    for index, (stage, dirname) in enumerate(zip(bar, names)):
        bar.set_postfix_str(stage["name"])
        directory = out / dirname
        if stage["type"] == "baseline" and "checkpoint" in stage:
            input_hash = "checkpoint:" + _sha256(Path(stage["checkpoint"]))
        key = _stage_key(run, stage, input_hash)
        done = _finished(directory, key, manifest)
        where = f"[{index + 1}/{len(names)}] {stage['name']} ({stage['type']})"
        if done is None:
            log(f"{where}: running")
            ctx = Context(run, train, test, _claim(directory, key, manifest), baseline, show)
            record = _run_stage(stage, model, ctx, directory, key, manifest)
            model, _ = load_model(directory / "model.npz")
        else:
            record, model = done
            if record.get("measured_with") != _measurement_key(run):
                log(f"{where}: done earlier, reused and measured again")
                record = _measured(directory, record,
                                   Context(run, train, test, directory / "work"))
                _write_json(manifest.file(directory / "stage.json"), record)
            else:
                log(f"{where}: done earlier, reused")
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
    if plot_accuracy_vs_size(rows, out / PLOT_FILE):
        report["plot"] = PLOT_FILE
    write_report(report, out)
    log(format_table(rows))
    log(_summary_text(report["summary"]))
    return report
