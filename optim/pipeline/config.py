"""The pipeline's TOML configuration: schema, defaults and validation before any work starts.

A configuration has a ``[run]`` table (model, dataset, seed, ...) and an ordered array of
``[[stage]]`` tables. Each stage names its ``type`` (one of ``STAGES``), optionally a unique
``name`` (default: the type) and ``enabled = false`` to switch it off; the other keys are the
type's options (``OPTIONS``). The stages run in the order written. ``validate`` fills in the
defaults and raises ``ConfigError`` naming the key (``stage[2].sparsities``) and the reason for:
an unknown table, stage type or key, a value of the wrong type or out of range, a missing
checkpoint file, or an impossible order (the first stage must be the baseline; only ``graph``
and ``export`` may follow ``quantize``, ``share`` or ``auto``, whose models are no longer float).
Tests: ``tests/optim/pipeline/test_pipeline_config.py``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from importlib import resources
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10: the tomli backport, if installed
    import tomli as tomllib

from .options import ConfigError, Option
from .sources import (MNIST_SUBSETS, MODEL_BUILDERS, checkpoint_problem, dataset_problem,
                      model_problem)
from .stages import CHANNEL_CRITERIA, STAGE_OPTIONS, WEIGHT_CRITERIA

__all__ = ["ConfigError", "Option", "RUN_OPTIONS", "OPTIONS", "STAGES", "MODELS", "DATASETS",
           "default_config_text", "read_config_text", "load_config", "parse_config", "validate",
           "config_hash"]

MODELS = tuple(MODEL_BUILDERS)
DATASETS = tuple(MNIST_SUBSETS)
FLOAT_ONLY_AFTER = ("quantize", "share", "auto")  # stages whose output is no longer float
LATE_STAGES = ("graph", "export")


RUN_OPTIONS: dict[str, Option] = {
    "model": Option("str", "lenet5", f"the model: {' | '.join(MODELS)}, a path to an .onnx "
                    "file (its weights are the baseline) or 'package.module:function' "
                    "returning a minnet Module", check=model_problem),
    "dataset": Option("str", "mnist-5k", "mnist-5k (bundled 4,000/1,000 images), mnist-full "
                      "(60,000/10,000, downloaded to data_root) or a path to an .npz with "
                      "x_train, y_train, x_test, y_test", check=dataset_problem),
    "data_root": Option("str", None, "cache directory of the full MNIST files (default: "
                        "$MINNET_DATA or ~/.cache/minnet/mnist)"),
    "seed": Option("int", 0, "seed of initialisation, shuffling and every random choice",
                   low=0),
    "batch_size": Option("int", 64, "mini-batch size of every training stage", low=1),
    "limit": Option("int", None, "train on a seeded random subset of this many training "
                    "images (quick runs)", low=1),
    "test_limit": Option("int", None, "evaluate on a seeded random subset of this many test "
                         "images", low=1),
    "validation_fraction": Option("float", None, "hold this fraction of the training images "
                                  "out of every stage's training; the auto stage measures its "
                                  "candidates on them", low=0, high=1, open="both"),
    "latency_repeats": Option("int", 20, "timed repetitions per latency measurement (median)",
                              low=1),
}

_COMMON = {
    "type": Option("str", None, "the stage type"),
    "name": Option("str", None, "unique name of the stage (default: its type)"),
    "enabled": Option("bool", True, "false skips the stage"),
}

# Each stage type's keys, declared beside its function (optim.pipeline.stages.stage).
OPTIONS: dict[str, dict[str, Option]] = STAGE_OPTIONS
STAGES = tuple(OPTIONS)


def default_config_text() -> str:
    """The text of the default pipeline shipped in the package (``default_pipeline.toml``)."""
    shipped = resources.files("optim.pipeline").joinpath("default_pipeline.toml")
    return shipped.read_text(encoding="utf-8")


def _check_table(table: Any, options: dict[str, Option], where: str) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(where, f"must be a table, got {type(table).__name__}")
    out = {}
    for key, value in table.items():
        if key not in options:
            raise ConfigError(f"{where}.{key}", f"unknown key; allowed: {', '.join(options)}")
        option = options[key]
        reason = option.problem(value)
        if reason:
            raise ConfigError(f"{where}.{key}", reason)
        out[key] = float(value) if option.kind == "float" else \
            [float(v) for v in value] if option.kind == "floats" else value
    for key, option in options.items():
        if key not in out and option.default is not None:
            out[key] = copy.deepcopy(option.default)
    return out


def _check_stage(index: int, table: Any) -> dict:
    where = f"stage[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(where, f"must be a table, got {type(table).__name__}")
    if "type" not in table:
        raise ConfigError(f"{where}.type", f"missing; one of {', '.join(STAGES)}")
    kind = table["type"]
    if kind not in OPTIONS:
        raise ConfigError(f"{where}.type", f"unknown stage type {kind!r}; one of {', '.join(STAGES)}")
    stage = _check_table(table, {**_COMMON, **OPTIONS[kind]}, where)
    stage.setdefault("name", kind)
    if not stage["name"] or any(c in stage["name"] for c in "/\\:") or stage["name"] in (".", ".."):
        raise ConfigError(f"{where}.name", f"must be a non-empty name without path separators, "
                                           f"got {stage['name']!r}")
    if kind == "prune":
        criteria = WEIGHT_CRITERIA if stage["method"] == "weights" else CHANNEL_CRITERIA
        stage.setdefault("criterion", criteria[0])
        if stage["criterion"] not in criteria:
            raise ConfigError(f"{where}.criterion", f"method {stage['method']!r} takes one of "
                                                    f"{', '.join(criteria)}, got {stage['criterion']!r}")
    if kind == "baseline" and "checkpoint" in stage:
        problem = checkpoint_problem(stage["checkpoint"])
        if problem:
            raise ConfigError(f"{where}.checkpoint", problem)
    return stage


def validate(raw: Any) -> dict:
    """The configuration ``raw`` (parsed TOML) checked and completed with the defaults:
    ``{"run": {...}, "stages": [enabled stages, each with "type" and "name"]}``.
    Raises ``ConfigError`` (see the module docstring)."""
    if not isinstance(raw, dict):
        raise ConfigError("<config>", f"must be a table, got {type(raw).__name__}")
    for key in raw:
        if key not in ("run", "stage"):
            raise ConfigError(key, "unknown table; a configuration has [run] and [[stage]] tables")
    run = _check_table(raw.get("run", {}), RUN_OPTIONS, "run")
    tables = raw.get("stage", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError("stage", "needs at least one [[stage]] table")
    stages = [_check_stage(i, t) for i, t in enumerate(tables)]
    names: dict[str, int] = {}
    for i, stage in enumerate(stages):
        if stage["name"] in names:
            raise ConfigError(f"stage[{i}].name", f"{stage['name']!r} is also the name of "
                                                  f"stage[{names[stage['name']]}]; names must be unique")
        names[stage["name"]] = i
    enabled = [s for s in stages if s["enabled"]]
    if not enabled or enabled[0]["type"] != "baseline":
        first = enabled[0]["type"] if enabled else "nothing"
        raise ConfigError("stage[0].type", f"the first enabled stage must be 'baseline' (it "
                                           f"trains or loads the model), got {first!r}")
    frozen_by = None
    for i, stage in enumerate(stages):
        if not stage["enabled"]:
            continue
        if stage["type"] == "baseline" and stage is not enabled[0]:
            raise ConfigError(f"stage[{i}].type", "only one baseline stage is allowed")
        if frozen_by is not None and stage["type"] not in LATE_STAGES:
            raise ConfigError(f"stage[{i}].type", f"{stage['type']!r} cannot follow "
                                                  f"{frozen_by!r}: only {', '.join(LATE_STAGES)} "
                                                  f"can run on its model")
        if stage["type"] in FLOAT_ONLY_AFTER:
            frozen_by = stage["type"]
        if stage["type"] == "nas" and run["dataset"] not in MNIST_SUBSETS:
            raise ConfigError(f"stage[{i}].type", "nas searches MNIST architectures: it needs "
                                                  f"a built-in dataset, got {run['dataset']!r}")
    return {"run": run, "stages": enabled}


def parse_config(text: str, source: str = "<config>") -> dict:
    """``validate`` of the TOML ``text``; a TOML syntax error becomes a ``ConfigError`` naming
    ``source``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, f"not valid TOML: {err}") from err
    return validate(raw)


def read_config_text(path: str | os.PathLike) -> str:
    """The text of the configuration file ``path``; ``ConfigError`` (key ``--config``) if it
    cannot be read or is not UTF-8 (TOML files are UTF-8, TOML 1.0 section 1). Test:
    ``tests/optim/pipeline/test_pipeline_run.py::test_cli_errors``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ConfigError("--config", f"cannot read {os.fspath(path)!r}: "
                                      f"{err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError("--config", f"{os.fspath(path)!r} is not UTF-8 text (byte "
                                      f"0x{data[err.start]:02x} at offset {err.start}); TOML "
                                      f"files are UTF-8") from None


def load_config(path: str | os.PathLike | None = None) -> tuple[dict, str]:
    """``(config, text)`` of the TOML file ``path`` (default: the shipped default pipeline)."""
    if path is None:
        text, source = default_config_text(), "default_pipeline.toml"
    else:
        if not os.path.isfile(path):
            raise ConfigError("--config", f"no such file: {os.fspath(path)!r}")
        text, source = read_config_text(path), os.fspath(path)
    return parse_config(text, source), text


def config_hash(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value`` (sorted keys), in hex."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
