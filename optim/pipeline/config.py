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
import math
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

try:
    import tomllib
except ImportError:  # Python 3.10: the tomli backport, if installed
    import tomli as tomllib

from optim.distill.soft import T_MAX as KD_T_MAX
from optim.distill.soft import T_MIN as KD_T_MIN
from optim.quant.qconfig import OBSERVERS
from optim.quant.ranges import MAX_BITS, MIN_BITS

__all__ = ["ConfigError", "Option", "RUN_OPTIONS", "OPTIONS", "STAGES", "MODELS", "DATASETS",
           "default_config_text", "read_config_text", "load_config", "parse_config", "validate",
           "config_hash"]

MODELS = ("lenet5", "lenet5-bn", "lenet-300-100")
MNIST_SUBSETS = {"mnist-5k": "5k", "mnist-full": "full"}  # dataset -> load_mnist subset
DATASETS = tuple(MNIST_SUBSETS)
WEIGHT_CRITERIA = ("magnitude", "random", "taylor", "snip", "obd_fisher", "obd_hutchinson",
                   "influence")
CHANNEL_CRITERIA = ("l1", "l2", "fpgm", "random", "taylor", "bn_scale", "activation_variance",
                    "activation_entropy")
FLOAT_ONLY_AFTER = ("quantize", "share", "auto")  # stages whose output is no longer float
LATE_STAGES = ("graph", "export")


class ConfigError(ValueError):
    """An invalid configuration; the message starts with the offending key."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


@dataclass(frozen=True)
class Option:
    """One configuration key: its kind, default (``None``: optional, absent by default), a
    check ``value -> reason or None`` and a one-line help."""

    kind: str  # "int", "float", "bool", "str", "floats", "strs"
    default: Any
    help: str
    choices: tuple = ()
    check: Callable[[Any], str | None] | None = None


def _at_least(low: float, strict: bool = False) -> Callable[[Any], str | None]:
    def check(value):
        ok = value > low if strict else value >= low
        return None if ok else f"must be {'>' if strict else '>='} {low}, got {value!r}"
    return check


def _within(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value):
        return None if low <= value <= high else f"must lie in [{low:g}, {high:g}], got {value!r}"
    return check


def _fraction(value) -> str | None:
    return None if 0 < value < 1 else f"must lie in (0, 1), got {value!r}"


def _unit(value) -> str | None:
    return None if 0 <= value <= 1 else f"must lie in [0, 1], got {value!r}"


def _energy(value) -> str | None:
    return None if 0 < value <= 1 else f"must lie in (0, 1], got {value!r}"


def _bits(value) -> str | None:
    return None if MIN_BITS <= value <= MAX_BITS else \
        f"must lie in [{MIN_BITS}, {MAX_BITS}], got {value!r}"


def _rising_fractions(values) -> str | None:
    if not values:
        return "must not be empty"
    if any(not 0 < v < 1 for v in values):
        return f"every amount must lie in (0, 1), got {values!r}"
    if any(b <= a for a, b in zip(values, values[1:])):
        return f"amounts must increase from round to round, got {values!r}"
    return None


def _sparsity_levels(values) -> str | None:
    if not values or len(set(values)) != len(values) or any(not 0 <= v < 1 for v in values):
        return f"must be distinct fractions in [0, 1), got {values!r}"
    return None


def _bit_levels(values) -> str | None:
    if not values or len(set(values)) != len(values) or any(
            v != int(v) or not MIN_BITS <= v <= 8 for v in values):
        return f"must be distinct integers in [{MIN_BITS}, 8], got {values!r}"
    return None


_POSITIVE = _at_least(1)
_EPOCHS = "training epochs"
_LR = "Adam learning rate (annealed to 0 by a cosine over the stage's epochs)"

RUN_OPTIONS: dict[str, Option] = {
    "model": Option("str", "lenet5", "architecture of the baseline", MODELS),
    "dataset": Option("str", "mnist-5k", "bundled 4,000/1,000-image subset or the full "
                      "60,000/10,000 MNIST (downloaded to data_root)", DATASETS),
    "data_root": Option("str", None, "cache directory of the full MNIST files (default: "
                        "$MINNET_DATA or ~/.cache/minnet/mnist)"),
    "seed": Option("int", 0, "seed of initialisation, shuffling and every random choice",
                   check=_at_least(0)),
    "batch_size": Option("int", 64, "mini-batch size of every training stage", check=_POSITIVE),
    "limit": Option("int", None, "train on a seeded random subset of this many training "
                    "images (quick runs)", check=_POSITIVE),
    "test_limit": Option("int", None, "evaluate on a seeded random subset of this many test images",
                         check=_POSITIVE),
    "validation_fraction": Option("float", None, "hold this fraction of the training images "
                                  "out of every stage's training; the auto stage measures its "
                                  "candidates on them", check=_fraction),
    "latency_repeats": Option("int", 20, "timed repetitions per latency measurement (median)",
                              check=_POSITIVE),
}

_COMMON = {
    "type": Option("str", None, "the stage type"),
    "name": Option("str", None, "unique name of the stage (default: its type)"),
    "enabled": Option("bool", True, "false skips the stage"),
}

OPTIONS: dict[str, dict[str, Option]] = {
    "baseline": {
        "epochs": Option("int", 20, _EPOCHS, check=_POSITIVE),
        "lr": Option("float", 1e-3, _LR, check=_at_least(0, strict=True)),
        "checkpoint": Option("str", None, "load this state_dict npz (minnet.save) or packed "
                             "model file instead of training"),
    },
    "prune": {
        "method": Option("str", "weights", "'weights': unstructured, 'channels': whole "
                         "neurons/filters (structured)", ("weights", "channels")),
        "criterion": Option("str", None, "saliency: for weights one of "
                            f"{', '.join(WEIGHT_CRITERIA)} (default magnitude); for channels "
                            f"one of {', '.join(CHANNEL_CRITERIA)} (default l1)"),
        "scope": Option("str", "global", "weights: one threshold over all layers or the same "
                        "sparsity per layer", ("global", "layer")),
        "amounts": Option("floats", [0.5, 0.75, 0.875, 0.92], "fraction pruned after each "
                          "round (of the weights, or of each layer's units), increasing",
                          check=_rising_fractions),
        "layers": Option("strs", None, "layer names to prune (default: every Linear/Conv2d; "
                         "for channels all but the output layer)"),
        "fine_tune_epochs": Option("int", 2, "training epochs after each round",
                                   check=_at_least(0)),
        "lr": Option("float", 5e-4, _LR, check=_at_least(0, strict=True)),
    },
    "shrink": {},
    "lowrank": {
        "layers": Option("strs", None, "Linear/Conv2d layer names to factorize (default: every "
                         "Linear but the output layer)"),
        "energy": Option("float", 0.9, "keep the smallest rank holding this fraction of the "
                         "singular energy", check=_energy),
        "scheme": Option("str", "channel", "factorization of convolutions",
                         ("channel", "spatial")),
        "data_aware": Option("bool", True, "factorize Linear layers on their calibration "
                             "inputs (whitened SVD)"),
        "fine_tune_epochs": Option("int", 3, _EPOCHS, check=_at_least(0)),
        "lr": Option("float", 5e-4, _LR, check=_at_least(0, strict=True)),
    },
    "nas": {
        "space": Option("str", "cnn", "search space of optim.nas", ("cnn", "mlp")),
        "strategy": Option("str", "random", "search strategy",
                           ("random", "evolution", "nsga2")),
        "trials": Option("int", 12, "architectures evaluated", check=_POSITIVE),
        "trial_epochs": Option("int", 2, "training epochs per trial", check=_POSITIVE),
        "macs_budget": Option("float", 1.0, "largest MACs per image, as a fraction of the "
                              "current model's", check=_at_least(0, strict=True)),
        "tolerance": Option("float", 0.01, "pick the fewest parameters among architectures "
                            "within this validation error of the best", check=_unit),
        "epochs": Option("int", 10, "training epochs of the picked architecture",
                         check=_POSITIVE),
        "lr": Option("float", 1e-3, _LR, check=_at_least(0, strict=True)),
    },
    "distill": {
        "epochs": Option("int", 10, _EPOCHS, check=_POSITIVE),
        "lr": Option("float", 5e-4, _LR, check=_at_least(0, strict=True)),
        "T": Option("float", 4.0, "softmax temperature of the soft targets",
                    check=_within(KD_T_MIN, KD_T_MAX)),
        "alpha": Option("float", 0.9, "weight of the soft loss (1 - alpha: cross entropy)",
                        check=_unit),
    },
    "quantize": {
        "method": Option("str", "ptq", "post-training quantization or quantization-aware "
                         "training", ("ptq", "qat")),
        "weight_bits": Option("int", 8, "bits per weight code", check=_bits),
        "activation_bits": Option("int", 8, "bits per activation code", check=_bits),
        "weight_only": Option("bool", False, "keep activations in float"),
        "weight_observer": Option("str", "minmax", "weight range estimator",
                                  tuple(sorted(OBSERVERS))),
        "activation_observer": Option("str", "minmax", "activation range estimator",
                                      tuple(sorted(OBSERVERS))),
        "calibration_images": Option("int", 1024, "training images seen by the observers",
                                     check=_POSITIVE),
        "epochs": Option("int", 3, "QAT training epochs", check=_POSITIVE),
        "lr": Option("float", 1e-4, _LR + " (QAT)", check=_at_least(0, strict=True)),
        "weight_method": Option("str", "ste", "QAT weight quantizer: the current range per "
                                "channel (ste) or a learned step (lsq; its initial step averages "
                                "|w| over pruned zeros too, so prefer ste after pruning)",
                                ("lsq", "ste")),
        "activation_method": Option("str", "ste", "QAT activation quantizer", ("lsq", "ste")),
        "engine": Option("str", "auto", "what runs the measurements: integer-only kernels, the "
                         "fake-quantized minnet model, or integer when possible",
                         ("auto", "integer", "minnet")),
    },
    "share": {
        "n_clusters": Option("int", 16, "shared values per layer (k-means centroids)",
                             check=_at_least(2)),
        "init": Option("str", "linear", "k-means initialisation",
                       ("linear", "density", "random")),
        "fine_tune_epochs": Option("int", 2, "epochs of centroid fine-tuning",
                                   check=_at_least(0)),
        "lr": Option("float", 1e-4, _LR, check=_at_least(0, strict=True)),
    },
    "auto": {
        "max_drop_pp": Option("float", 0.5, "largest accuracy drop on the validation split, in "
                              "percentage points", check=_at_least(0)),
        "objective": Option("str", "bytes", "what the allocation minimises: packed weight "
                            "bytes, multiply-accumulates with a non-zero weight, or energy per "
                            "inference (Horowitz 2014's 45 nm table)", ("bytes", "macs", "energy")),
        "sparsities": Option("floats", [0.0, 0.5, 0.75, 0.875, 0.95], "per-layer magnitude "
                             "pruning levels to choose from", check=_sparsity_levels),
        "bits": Option("floats", [8, 6, 5, 4, 3, 2], "per-layer weight bit widths to choose "
                       "from (activations: 8 bits)", check=_bit_levels),
        "confidence_z": Option("float", 1.0, "a candidate fits when its validation drop plus "
                               "this many standard errors is within max_drop_pp",
                               check=_at_least(0)),
        "validation_fraction": Option("float", 0.25, "fraction of the training images held "
                                      "out to measure candidates (never the test images)",
                                      check=_fraction),
        "fine_tune_epochs": Option("int", 2, "fine-tuning epochs of each candidate after "
                                   "pruning (masks kept)", check=_at_least(0)),
        "max_candidates": Option("int", 8, "candidates built and measured at most (the "
                                 "fine-tuning budget is this times fine_tune_epochs)",
                                 check=_POSITIVE),
        "lr": Option("float", 5e-4, _LR, check=_at_least(0, strict=True)),
        "calibration_images": Option("int", 1024, "training images seen by the activation "
                                     "observers", check=_POSITIVE),
    },
    "graph": {},
    "export": {},
}
STAGES = tuple(OPTIONS)


def default_config_text() -> str:
    """The text of the default pipeline shipped in the package (``default_pipeline.toml``)."""
    shipped = resources.files("optim.pipeline").joinpath("default_pipeline.toml")
    return shipped.read_text(encoding="utf-8")


def _type_ok(option: Option, value: Any) -> bool:
    number = (int, float)
    if option.kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if option.kind == "float":
        return isinstance(value, number) and not isinstance(value, bool) and math.isfinite(value)
    if option.kind == "bool":
        return isinstance(value, bool)
    if option.kind == "str":
        return isinstance(value, str)
    if option.kind == "floats":
        return isinstance(value, list) and all(
            isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if option.kind == "strs":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise AssertionError(option.kind)


_KIND_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false",
               "str": "a string", "floats": "a list of numbers", "strs": "a list of strings"}


def _check_table(table: Any, options: dict[str, Option], where: str) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(where, f"must be a table, got {type(table).__name__}")
    out = {}
    for key, value in table.items():
        if key not in options:
            raise ConfigError(f"{where}.{key}", f"unknown key; allowed: {', '.join(options)}")
        option = options[key]
        if not _type_ok(option, value):
            raise ConfigError(f"{where}.{key}", f"must be {_KIND_NAMES[option.kind]}, got "
                                                f"{value!r} ({type(value).__name__})")
        if option.choices and value not in option.choices:
            raise ConfigError(f"{where}.{key}", f"must be one of {', '.join(option.choices)}, "
                                                f"got {value!r}")
        reason = option.check(value) if option.check is not None else None
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
    if kind == "baseline" and "checkpoint" in stage and not os.path.isfile(stage["checkpoint"]):
        raise ConfigError(f"{where}.checkpoint", f"no such file: {stage['checkpoint']!r}")
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
