"""Packed model files: the architecture and every array of a model, in one npz.

A file written by ``save_model`` holds two uint8 members: ``spec``, a JSON document (the
module tree as ``module_spec`` describes it, and one entry per array naming its codec and its
bytes in the payload) and ``payload``, the concatenated encoded arrays. ``load_model``
rebuilds the model from the file alone. Each array is stored with the cheapest exact codec
that fits it (``optim.pipeline.codecs``):

- the weight of a converted ``QuantStage``: its integer codes :math:`q - q_{min}`; loading
  dequantizes them, :math:`\\hat W = (q - z) s`, which the stage's weight quantizer maps to
  itself, so the model computes the same outputs;
- the indices of a ``SharedWeightLayer``: its centroids are stored beside them;

  codes and indices are integer symbols, stored fixed-width, Huffman-coded, or (when one
  symbol, e.g. the code of a pruned zero, dominates) relatively indexed with fixed or
  Huffman-coded gaps and values, whichever is smallest (Deep Compression's storage, Han et al.
  2016, sections 2-4);
- a pruning mask: one bit per weight; the pruned parameter ``<name>_orig``: its kept entries;
- other float arrays: raw, or a bitmap of the non-zeros and their values when smaller;
  arrays of zeros: nothing.

A frozen ``QuantSequential``'s int32 bias quantizers are derived from the stored scales
(``optim.quant.convert``), so they are not stored. ``packed_bytes(model)`` is the payload size:
the model's bytes as deployed, without the JSON and the npz container.

``load_model`` treats a file as untrusted: the container, the module spec and every array
entry are validated whole (``check_module_spec``, ``check_entries``) against the caps
``MAX_ELEMENTS`` (array elements), ``MAX_SPEC_BYTES``, ``MAX_DEPTH`` and ``MAX_MODULES``
before any array is allocated, and every failure is one ``PackedModelError`` (a ValueError)
naming the file and the field.
Tests: ``tests/optim/pipeline/test_pipeline_store.py``,
``tests/adversarial/test_optim_packed.py``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

import minnet
from minnet import nn
from optim.nas.build import Residual
from optim.prune.parametrize import restore_pruning
from optim.quant import (FixedFakeQuantize, QConfig, QuantSequential, QuantStage,
                         SharedWeightLayer, convert, dequantize, quantize)

from . import codecs as C

__all__ = ["FORMAT", "PackedModelError", "MAX_ELEMENTS", "MAX_SPEC_BYTES", "MAX_DEPTH",
           "MAX_MODULES", "module_spec", "build_module", "check_module_spec", "check_entries",
           "encode_state", "decode_state", "save_model", "load_model", "packed_bytes"]

FORMAT = "optim.pipeline/1"

# Leaf layers: constructor arguments read back from attributes of the same name, each with
# the kind of value it must hold in a file (``_ARG_KINDS``).
_LEAVES: dict[str, tuple[type, dict[str, str]]] = {
    "Linear": (nn.Linear, {"in_features": "count", "out_features": "count"}),
    "Conv2d": (nn.Conv2d, {"in_channels": "count", "out_channels": "count", "kernel_size": "size",
                           "stride": "size", "padding": "offset", "dilation": "size",
                           "groups": "count"}),
    "BatchNorm1d": (nn.BatchNorm1d, {"num_features": "count", "eps": "positive",
                                     "momentum": "unit", "affine": "flag",
                                     "track_running_stats": "flag"}),
    "BatchNorm2d": (nn.BatchNorm2d, {"num_features": "count", "eps": "positive",
                                     "momentum": "unit", "affine": "flag",
                                     "track_running_stats": "flag"}),
    "MaxPool2d": (nn.MaxPool2d, {"kernel_size": "size", "stride": "stride", "padding": "offset"}),
    "AvgPool2d": (nn.AvgPool2d, {"kernel_size": "size", "stride": "stride", "padding": "offset"}),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, {"output_size": "size"}),
    "Flatten": (nn.Flatten, {"start_dim": "axis", "end_dim": "axis"}),
    "Dropout": (nn.Dropout, {"p": "unit"}),
    "LeakyReLU": (nn.LeakyReLU, {"negative_slope": "real"}),
    "ReLU": (nn.ReLU, {}), "GELU": (nn.GELU, {}), "Sigmoid": (nn.Sigmoid, {}),
    "Tanh": (nn.Tanh, {}), "Identity": (nn.Identity, {}),
}
_WITH_BIAS = ("Linear", "Conv2d")


def _json_value(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _from_json(value: Any) -> Any:
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def module_spec(module: nn.Module) -> dict:
    """A JSON-ready description of ``module``'s structure (no arrays): ``{"type": ..., ...}``
    for the layers of ``minnet.nn`` listed in ``_LEAVES``, ``Sequential``, ``QuantSequential``
    (with its ``QConfig``), ``QuantStage``, ``FixedFakeQuantize``, ``SharedWeightLayer`` and
    NAS's ``Residual``. TypeError names any other module type."""
    kind = type(module).__name__
    if kind in _LEAVES and type(module) is _LEAVES[kind][0]:
        spec = {"type": kind, "args": {a: _json_value(getattr(module, a)) for a in _LEAVES[kind][1]}}
        if kind in _WITH_BIAS:
            spec["bias"] = module.bias is not None
        return spec
    if isinstance(module, QuantSequential):
        return {"type": "QuantSequential", "children": [module_spec(m) for m in module],
                "config": None if module.config is None else dataclasses.asdict(module.config)}
    if type(module) is nn.Sequential:
        return {"type": "Sequential", "children": [module_spec(m) for m in module]}
    if isinstance(module, Residual):
        return {"type": "Residual", "body": module_spec(module.body)}
    if isinstance(module, QuantStage):
        return {"type": "QuantStage", "layer": module_spec(module.layer), "relu": module.relu,
                **{k: None if getattr(module, k) is None else module_spec(getattr(module, k))
                   for k in ("weight_quant", "output_quant")}}
    if isinstance(module, FixedFakeQuantize):
        return {"type": "FixedFakeQuantize", "shape": list(module.scale.shape),
                "qmin": module.qmin, "qmax": module.qmax, "axis": module.axis}
    if isinstance(module, SharedWeightLayer):
        return {"type": "SharedWeightLayer", "n_clusters": int(module.centroids.shape[0]),
                "layer": module_spec(module.layer)}
    raise TypeError(f"cannot store a module of type {kind}; supported: "
                    f"{sorted(_LEAVES) + sorted(_CONTAINERS)}")


def build_module(spec: dict, *, max_elements: int | None = None) -> nn.Module:
    """A freshly initialised module with the structure ``spec`` (from ``module_spec``).

    ``spec`` is validated whole first (``check_module_spec``): PackedModelError names the
    field, and nothing is allocated for a spec whose arrays exceed ``max_elements``
    (default ``MAX_ELEMENTS``)."""
    check_module_spec(spec, MAX_ELEMENTS if max_elements is None else max_elements)
    return _build_checked(spec)


def _build_checked(spec: dict) -> nn.Module:
    try:
        return _build(spec)
    except (TypeError, ValueError) as err:  # a check the constructors make beyond ours
        raise PackedModelError("module", str(err)) from None


def _build(spec: dict) -> nn.Module:
    kind = spec["type"]
    if kind in _LEAVES:
        cls = _LEAVES[kind][0]
        args = {k: _from_json(v) for k, v in spec["args"].items()}
        return cls(**args, bias=spec["bias"]) if kind in _WITH_BIAS else cls(**args)
    if kind == "Sequential":
        return nn.Sequential(*(_build(s) for s in spec["children"]))
    if kind == "QuantSequential":
        config = None if spec["config"] is None else QConfig(**spec["config"])
        return QuantSequential(*(_build(s) for s in spec["children"]), config=config)
    if kind == "Residual":
        return Residual(_build(spec["body"]))
    if kind == "QuantStage":
        parts = {k: None if spec[k] is None else _build(spec[k])
                 for k in ("weight_quant", "output_quant")}
        return QuantStage(_build(spec["layer"]), spec["relu"], **parts)
    if kind == "FixedFakeQuantize":
        shape = tuple(spec["shape"])
        return FixedFakeQuantize(np.ones(shape, np.float32), np.zeros(shape, np.int64),
                                 spec["qmin"], spec["qmax"], spec["axis"])
    layer = _build(spec["layer"])  # SharedWeightLayer, the only kind left after the checks
    return SharedWeightLayer(layer, spec["n_clusters"], iters=0)


# ---- validation of untrusted specs -------------------------------------------------------

# Caps on what a packed model file may declare (README, "Limits on untrusted files"): the
# elements of all arrays, as the module tree allocates them and as the entries declare them
# (at most 8 bytes each), the JSON spec and payload members, nesting and module count.
MAX_ELEMENTS = 1 << 24
MAX_SPEC_BYTES = 1 << 24
MAX_DEPTH = 32
MAX_MODULES = 4096
MAX_DIM = (1 << 31) - 1
MAX_NDIM = 8
MAX_CLUSTERS = 1 << 16
MAX_ALPHABET = 1 << 32


class PackedModelError(ValueError):
    """A packed model file (or spec) that cannot be loaded: ``field`` names the offending part
    (``module.children[3].args.in_features``, ``arrays[2].parts``, ``<file>`` for the
    container), ``path`` the file (None for a spec given directly)."""

    def __init__(self, field: str, reason: str, path: str | os.PathLike | None = None):
        super().__init__(f"{path}: {field}: {reason}" if path is not None else f"{field}: {reason}")
        self.field, self.reason, self.path = field, reason, path


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _int_pair(low: int) -> Callable[[Any], bool]:
    def check(value):
        pair = value if isinstance(value, list) else [value, value]
        return len(pair) == 2 and all(_is_int(v) and low <= v <= MAX_DIM for v in pair)
    return check


# kind -> (check, what a valid value is)
_ARG_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "count": (lambda v: _is_int(v) and 1 <= v <= MAX_DIM, f"an integer in [1, {MAX_DIM}]"),
    "size": (_int_pair(1), f"an integer in [1, {MAX_DIM}] or a pair of them"),
    "offset": (_int_pair(0), f"an integer in [0, {MAX_DIM}] or a pair of them"),
    "stride": (lambda v: v is None or _int_pair(1)(v),
               f"null, an integer in [1, {MAX_DIM}] or a pair of them"),
    "positive": (lambda v: _is_real(v) and v > 0, "a finite number > 0"),
    "unit": (lambda v: _is_real(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "real": (_is_real, "a finite number"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "axis": (lambda v: _is_int(v) and -MAX_NDIM <= v <= MAX_NDIM,
             f"an integer in [-{MAX_NDIM}, {MAX_NDIM}]"),
}


def _pair(value: Any) -> tuple[int, int]:
    return (value[0], value[-1]) if isinstance(value, list) else (value, value)


class _Walk:
    """State of one validation: modules seen and elements the tree allocates."""

    def __init__(self, max_elements: int):
        self.modules, self.elements, self.max_elements = 0, 0, max_elements

    def allocate(self, field: str, elements: int) -> None:
        self.elements += elements
        if self.elements > self.max_elements:
            raise PackedModelError(field, f"the model's arrays would hold more than "
                                          f"{self.max_elements} elements (the cap)")


def _require(spec: Any, field: str, keys: set[str]) -> None:
    if not isinstance(spec, dict):
        raise PackedModelError(field, f"must be a JSON object, got {type(spec).__name__}")
    if set(spec) != keys:
        missing, extra = sorted(keys - set(spec)), sorted(set(spec) - keys)
        raise PackedModelError(field, f"keys missing {missing}, unexpected {extra}")


def _check_leaf(kind: str, spec: dict, field: str, walk: _Walk) -> None:
    _require(spec, field, {"type", "args"} | ({"bias"} if kind in _WITH_BIAS else set()))
    kinds = _LEAVES[kind][1]
    _require(spec["args"], f"{field}.args", set(kinds))
    args = spec["args"]
    for name, arg_kind in kinds.items():
        check, valid = _ARG_KINDS[arg_kind]
        if not check(args[name]):
            raise PackedModelError(f"{field}.args.{name}", f"must be {valid}, got {args[name]!r}")
    if kind in _WITH_BIAS and not isinstance(spec["bias"], bool):
        raise PackedModelError(f"{field}.bias", f"must be true or false, got {spec['bias']!r}")
    if kind == "Linear":
        walk.allocate(field, args["out_features"] * (args["in_features"] + spec["bias"]))
    elif kind == "Conv2d":
        groups = args["groups"]
        if args["in_channels"] % groups or args["out_channels"] % groups:
            raise PackedModelError(f"{field}.args.groups", f"groups={groups} must divide "
                                   f"in_channels and out_channels")
        kh, kw = _pair(args["kernel_size"])
        walk.allocate(field, args["out_channels"]
                      * (args["in_channels"] // groups * kh * kw + spec["bias"]))
    elif kind.startswith("BatchNorm"):
        walk.allocate(field, 2 * args["num_features"]
                      * (args["affine"] + args["track_running_stats"]) + 1)
    elif kind in ("MaxPool2d", "AvgPool2d"):
        kernel, padding = _pair(args["kernel_size"]), _pair(args["padding"])
        if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
            raise PackedModelError(f"{field}.args.padding", f"must be at most half of "
                                   f"kernel_size {args['kernel_size']!r}, got {args['padding']!r}")


_QCONFIG_KINDS = {f.name: "int" if f.name.endswith("_bits") else
                  "str" if f.name.endswith("_observer") else "bool"
                  for f in dataclasses.fields(QConfig)}


def _check_qconfig(config: Any, field: str) -> None:
    if config is None:
        return
    if not isinstance(config, dict) or not set(config) <= set(_QCONFIG_KINDS):
        raise PackedModelError(field, f"must be null or an object with keys among "
                                      f"{sorted(_QCONFIG_KINDS)}, got {config!r}")
    types = {"int": _is_int, "str": lambda v: isinstance(v, str),
             "bool": lambda v: isinstance(v, bool)}
    for key, value in config.items():
        if not types[_QCONFIG_KINDS[key]](value):
            raise PackedModelError(f"{field}.{key}", f"must be of type {_QCONFIG_KINDS[key]}, "
                                   f"got {value!r}")


def _check_node(spec: Any, field: str, depth: int, walk: _Walk) -> None:
    if depth > MAX_DEPTH:
        raise PackedModelError(field, f"modules are nested deeper than {MAX_DEPTH} levels")
    walk.modules += 1
    if walk.modules > MAX_MODULES:
        raise PackedModelError(field, f"more than {MAX_MODULES} modules")
    if not isinstance(spec, dict):
        raise PackedModelError(field, f"must be a JSON object, got {type(spec).__name__}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _LEAVES and kind not in _CONTAINERS:
        raise PackedModelError(f"{field}.type", f"unknown module type {kind!r}; known: "
                               f"{sorted(_LEAVES) + sorted(_CONTAINERS)}")
    if kind in _LEAVES:
        _check_leaf(kind, spec, field, walk)
        return
    _require(spec, field, _CONTAINERS[kind])
    if kind in ("Sequential", "QuantSequential"):
        children = spec["children"]
        if not isinstance(children, list):
            raise PackedModelError(f"{field}.children", "must be a list")
        for i, child in enumerate(children):
            _check_node(child, f"{field}.children[{i}]", depth + 1, walk)
        if kind == "QuantSequential":
            _check_qconfig(spec["config"], f"{field}.config")
    elif kind == "Residual":
        _check_node(spec["body"], f"{field}.body", depth + 1, walk)
    elif kind == "QuantStage":
        _check_weighted(spec["layer"], f"{field}.layer", depth + 1, walk)
        if not isinstance(spec["relu"], bool):
            raise PackedModelError(f"{field}.relu", f"must be true or false, got {spec['relu']!r}")
        for key in ("weight_quant", "output_quant"):
            if spec[key] is not None:
                if not isinstance(spec[key], dict) or spec[key].get("type") != "FixedFakeQuantize":
                    raise PackedModelError(f"{field}.{key}", "must be null or a FixedFakeQuantize")
                _check_node(spec[key], f"{field}.{key}", depth + 1, walk)
    elif kind == "FixedFakeQuantize":
        shape = spec["shape"]
        if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
                and all(_is_int(d) and 1 <= d <= MAX_DIM for d in shape)):
            raise PackedModelError(f"{field}.shape", f"must be a list of at most {MAX_NDIM} "
                                   f"integers in [1, {MAX_DIM}], got {shape!r}")
        for key in ("qmin", "qmax"):
            if not (_is_int(spec[key]) and abs(spec[key]) <= MAX_ALPHABET):
                raise PackedModelError(f"{field}.{key}", f"must be an integer of magnitude at "
                                       f"most {MAX_ALPHABET}, got {spec[key]!r}")
        if spec["qmin"] > spec["qmax"]:
            raise PackedModelError(f"{field}.qmin", f"qmin={spec['qmin']} exceeds "
                                   f"qmax={spec['qmax']}")
        if not (spec["axis"] is None or _ARG_KINDS["axis"][0](spec["axis"])):
            raise PackedModelError(f"{field}.axis", f"must be null or "
                                   f"{_ARG_KINDS['axis'][1]}, got {spec['axis']!r}")
        walk.allocate(field, 2 * math.prod(shape))
    else:  # SharedWeightLayer
        n = spec["n_clusters"]
        if not (_is_int(n) and 1 <= n <= MAX_CLUSTERS):
            raise PackedModelError(f"{field}.n_clusters", f"must be an integer in "
                                   f"[1, {MAX_CLUSTERS}], got {n!r}")
        before = walk.elements
        _check_weighted(spec["layer"], f"{field}.layer", depth + 1, walk)
        walk.allocate(field, walk.elements - before + n)  # indices beside the weight


def _check_weighted(spec: Any, field: str, depth: int, walk: _Walk) -> None:
    if not isinstance(spec, dict) or spec.get("type") not in _WITH_BIAS:
        raise PackedModelError(field, f"must be a Linear or Conv2d layer")
    _check_node(spec, field, depth, walk)


_CONTAINERS: dict[str, set[str]] = {
    "Sequential": {"type", "children"}, "QuantSequential": {"type", "children", "config"},
    "Residual": {"type", "body"},
    "QuantStage": {"type", "layer", "relu", "weight_quant", "output_quant"},
    "FixedFakeQuantize": {"type", "shape", "qmin", "qmax", "axis"},
    "SharedWeightLayer": {"type", "n_clusters", "layer"},
}


def check_module_spec(spec: Any, max_elements: int = MAX_ELEMENTS) -> int:
    """Validate a module spec (as ``module_spec`` writes it) before anything is built: known
    module types with exactly their keys, every constructor argument of the right type and
    range (``_ARG_KINDS``), nesting at most ``MAX_DEPTH``, at most ``MAX_MODULES`` modules and
    at most ``max_elements`` array elements allocated by the constructors. Returns that element
    count; raises ``PackedModelError`` naming the field. Test:
    ``tests/adversarial/test_optim_packed.py::test_malicious_files_raise_the_documented_error``.
    """
    walk = _Walk(max_elements)
    _check_node(spec, "module", 0, walk)
    return walk.elements


# ---- arrays ----------------------------------------------------------------------------

def _special_arrays(module: nn.Module) -> tuple[dict[str, dict], set[str]]:
    """Arrays stored as integer symbols (quantized weights, shared indices) and the derived
    arrays not stored at all (bias quantizers of a frozen QuantSequential)."""
    symbols, derived = {}, set()
    frozen = isinstance(module, QuantSequential) and module.frozen
    for name, m in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, QuantStage) and isinstance(m.weight_quant, FixedFakeQuantize) \
                and "weight" in m.layer._parameters:
            wq = m.weight_quant
            symbols[f"{prefix}layer.weight"] = {
                "alphabet": wq.qmax - wq.qmin + 1,
                "quant": {"scale": f"{prefix}weight_quant.scale",
                          "zero_point": f"{prefix}weight_quant.zero_point",
                          "qmin": wq.qmin, "qmax": wq.qmax, "axis": wq.axis}}
            if frozen and m.bias_quant is not None:
                derived.update(f"{prefix}bias_quant.{k}" for k in m.bias_quant.state_dict())
        elif isinstance(m, SharedWeightLayer):
            symbols[f"{prefix}indices"] = {"alphabet": int(m.centroids.shape[0])}
    return symbols, derived


def _sequence(symbols: np.ndarray, alphabet: int) -> tuple[str, list[bytes]]:
    """The cheaper of the fixed-width and the Huffman code of ``symbols``."""
    fixed = C.pack_symbols(symbols, alphabet)
    lengths, stream = C.huffman_encode(symbols, alphabet)
    if len(lengths) + len(stream) < len(fixed):
        return "huffman", [lengths.tobytes(), stream]
    return "fixed", [fixed]


def _sequence_decode(codec: str, parts: list[bytes], alphabet: int, n: int) -> np.ndarray:
    if codec == "fixed":
        return C.unpack_symbols(parts[0], alphabet, n)
    return C.huffman_decode(np.frombuffer(parts[0], np.uint8), parts[1], n)


MAX_GAP_BITS = 12


def _symbol_codec(symbols: np.ndarray, alphabet: int) -> tuple[str, list[bytes], dict]:
    """The cheapest exact code of integer ``symbols`` in [0, ``alphabet``): dense (fixed or
    Huffman), or relative indexing around the most frequent symbol with the best gap width
    (gaps and symbols each fixed or Huffman)."""
    symbols = symbols.reshape(-1).astype(np.int64)
    codec, parts = _sequence(symbols, alphabet)
    best = (sum(map(len, parts)), codec, parts, {})
    if symbols.size:
        zero = int(np.bincount(symbols, minlength=alphabet).argmax())
        for gap_bits in range(1, MAX_GAP_BITS + 1):
            gaps, values = C.relative_encode(symbols, zero, gap_bits)
            gap_codec, gap_parts = _sequence(gaps, 1 << gap_bits)
            value_codec, value_parts = _sequence(values, alphabet)
            size = sum(map(len, gap_parts + value_parts))
            if size < best[0]:
                best = (size, "relative", gap_parts + value_parts,
                        {"zero": zero, "gap_bits": gap_bits, "entries": len(gaps),
                         "gaps": [gap_codec, len(gap_parts)],
                         "values": [value_codec, len(value_parts)]})
    return best[1], best[2], best[3]


def _array_codec(name: str, array: np.ndarray, state: dict) -> tuple[str, list[bytes], dict]:
    if array.dtype == np.bool_:
        return "bits", [np.packbits(array.reshape(-1)).tobytes()], {}
    if name.endswith("_orig") and name[:-5] + "_mask" in state:
        mask = state[name[:-5] + "_mask"]
        return "masked", [np.ascontiguousarray(array[mask]).tobytes()], {"mask": name[:-5] + "_mask"}
    if not np.any(array):
        return "zeros", [], {}
    if array.dtype.kind == "f":
        bitmap, values = C.bitmap_encode(array)
        if len(bitmap) + values.nbytes < array.nbytes:
            return "bitmap", [bitmap, values.tobytes()], {}
    return "raw", [np.ascontiguousarray(array).tobytes()], {}


def encode_state(module: nn.Module) -> tuple[list[dict], bytes]:
    """``(entries, payload)``: every array of ``module.state_dict()`` (derived ones excepted)
    encoded by its codec (see the module docstring); each entry records the array's name,
    dtype, shape, codec and the ``[offset, length]`` of its parts in ``payload``."""
    state = module.state_dict()
    symbols, derived = _special_arrays(module)
    entries, chunks, offset = [], [], 0
    for name, array in state.items():
        if name in derived:
            continue
        array = np.asarray(array)
        extra: dict = {}
        if name in symbols:
            info = symbols[name]
            extra = dict(info)
            if "quant" in info:
                q = info["quant"]
                codes = quantize(array, state[q["scale"]], state[q["zero_point"]], q["qmin"],
                                 q["qmax"], axis=q["axis"])
                values = codes.astype(np.int64) - q["qmin"]
            else:
                values = array
            codec, parts, coded = _symbol_codec(values, info["alphabet"])
            extra.update(coded)
        else:
            codec, parts, extra = _array_codec(name, array, state)
        spans = []
        for part in parts:
            spans.append([offset, len(part)])
            chunks.append(part)
            offset += len(part)
        entries.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape),
                        "codec": codec, "parts": spans, **extra})
    return entries, b"".join(chunks)


def _decode(entry: dict, payload: bytes, state: dict) -> np.ndarray:
    parts = [payload[o:o + n] for o, n in entry["parts"]]
    shape, dtype = tuple(entry["shape"]), np.dtype(entry["dtype"])
    size = int(np.prod(shape, dtype=np.int64))
    codec = entry["codec"]
    if codec in ("fixed", "huffman", "relative"):
        alphabet = entry["alphabet"]
        if codec == "relative":
            (gap_codec, n_gap_parts), (value_codec, _) = entry["gaps"], entry["values"]
            gaps = _sequence_decode(gap_codec, parts[:n_gap_parts], 1 << entry["gap_bits"],
                                    entry["entries"])
            symbols = _sequence_decode(value_codec, parts[n_gap_parts:], alphabet,
                                       entry["entries"])
            values = C.relative_decode(gaps, symbols, entry["zero"], size)
        else:
            values = _sequence_decode(codec, parts, alphabet, size)
        if values.size and values.max() >= alphabet:
            raise ValueError(f"symbol {values.max()} outside the alphabet of {alphabet}")
        values = values.reshape(shape)
        if "quant" not in entry:
            return values.astype(dtype)
        q = entry["quant"]
        return dequantize(values + q["qmin"], state[q["scale"]], state[q["zero_point"]],
                          axis=q["axis"], dtype=dtype)
    if codec == "bits":
        return np.unpackbits(np.frombuffer(parts[0], np.uint8))[:size].astype(bool).reshape(shape)
    if codec == "masked":
        out = np.zeros(shape, dtype)
        out[state[entry["mask"]]] = np.frombuffer(parts[0], dtype)
        return out
    if codec == "zeros":
        return np.zeros(shape, dtype)
    if codec == "bitmap":
        return C.bitmap_decode(parts[0], np.frombuffer(parts[1], dtype), shape)
    if codec == "raw":
        return np.frombuffer(parts[0], dtype).reshape(shape).copy()
    raise ValueError(f"unknown codec {codec!r} for array {entry['name']!r}")


_DTYPES = {np.dtype(t).str for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                     np.uint16, np.uint32, np.uint64, np.float16, np.float32,
                                     np.float64)}
_ENTRY_KEYS = {"name", "dtype", "shape", "codec", "parts"}
_SYMBOL_CODECS = ("fixed", "huffman", "relative")
_CODEC_KEYS = {"raw": set(), "zeros": set(), "bits": set(), "bitmap": set(), "masked": {"mask"},
               "fixed": {"alphabet"}, "huffman": {"alphabet"},
               "relative": {"alphabet", "zero", "gap_bits", "entries", "gaps", "values"}}


def _check_sequence(codec: Any, spans: list, alphabet: int, n: int, field: str) -> None:
    """The parts of ``n`` symbols of ``alphabet`` coded by ``codec``: their lengths must be
    those the codec writes (fixed) or can write (Huffman: one length byte per symbol, at most
    ``MAX_CODE_LENGTH`` bits per symbol)."""
    if codec == "fixed":
        need = [math.ceil(n * C.symbol_bits(alphabet) / 8)]
        if len(spans) != 1 or spans[0][1] != need[0]:
            raise PackedModelError(field, f"a fixed code of {n} symbols of alphabet {alphabet} "
                                          f"needs one part of {need[0]} bytes, got {spans!r}")
    elif codec == "huffman":
        if len(spans) != 2 or spans[0][1] != alphabet \
                or spans[1][1] > math.ceil(n * C.MAX_CODE_LENGTH / 8):
            most = math.ceil(n * C.MAX_CODE_LENGTH / 8)
            raise PackedModelError(field, f"a Huffman code of {n} symbols of alphabet {alphabet}"
                                          f" needs a part of {alphabet} code lengths and a "
                                          f"stream of at most {most} bytes, got {spans!r}")
    else:
        raise PackedModelError(field, f"unknown symbol codec {codec!r}")


def _check_entry(entry: Any, field: str, payload_bytes: int, names: dict[str, dict]) -> int:
    """Validate one array entry against the payload's length; returns its element count."""
    if not isinstance(entry, dict):
        raise PackedModelError(field, f"must be a JSON object, got {type(entry).__name__}")
    codec = entry.get("codec")
    if codec not in _CODEC_KEYS:
        raise PackedModelError(f"{field}.codec", f"unknown codec {codec!r}; known: "
                                                 f"{sorted(_CODEC_KEYS)}")
    keys = _ENTRY_KEYS | _CODEC_KEYS[codec]
    _require(entry, field, keys | ({"quant"} if "quant" in entry and codec in _SYMBOL_CODECS
                                   else set()))
    dtype, shape, spans = entry["dtype"], entry["shape"], entry["parts"]
    if dtype not in _DTYPES:
        raise PackedModelError(f"{field}.dtype", f"must be one of {sorted(_DTYPES)}, got "
                                                 f"{dtype!r}")
    dtype = np.dtype(dtype)
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
            and all(_is_int(d) and 0 <= d <= MAX_DIM for d in shape)):
        raise PackedModelError(f"{field}.shape", f"must be a list of at most {MAX_NDIM} "
                                                 f"integers in [0, {MAX_DIM}], got {shape!r}")
    size = math.prod(shape)
    if not (isinstance(spans, list) and all(
            isinstance(p, list) and len(p) == 2 and all(_is_int(v) and v >= 0 for v in p)
            and p[0] + p[1] <= payload_bytes for p in spans)):
        raise PackedModelError(f"{field}.parts", f"must be a list of [offset, length] pairs "
                                                 f"within the {payload_bytes}-byte payload, "
                                                 f"got {spans!r}")
    lengths = [n for _, n in spans]
    full = size * dtype.itemsize
    expect = {"raw": [full], "zeros": [], "bits": [math.ceil(size / 8)]}
    if codec in expect and lengths != expect[codec]:
        raise PackedModelError(f"{field}.parts", f"codec {codec!r} of shape {shape} and dtype "
                               f"{dtype} needs parts of {expect[codec]} bytes, got {lengths}")
    if codec == "bits" and dtype != np.bool_ or codec in ("bitmap", "masked") and \
            dtype.kind == "b" or codec in _SYMBOL_CODECS and dtype.kind == "b":
        raise PackedModelError(f"{field}.dtype", f"codec {codec!r} cannot store dtype {dtype}")
    if codec == "bitmap" and (len(lengths) != 2 or lengths[0] != math.ceil(size / 8)
                              or lengths[1] % dtype.itemsize or lengths[1] > full):
        raise PackedModelError(f"{field}.parts", f"a bitmap of shape {shape} needs "
                               f"{math.ceil(size / 8)} bytes and at most {full} bytes of "
                               f"{dtype} values, got {lengths}")
    if codec == "masked":
        mask = names.get(entry["mask"]) if isinstance(entry["mask"], str) else None
        if mask is None or mask.get("dtype") != np.dtype(np.bool_).str \
                or mask.get("shape") != shape or mask.get("codec") == "masked":
            raise PackedModelError(f"{field}.mask", f"must name another array, boolean, of "
                                                    f"shape {shape}, got {entry['mask']!r}")
        if len(lengths) != 1 or lengths[0] % dtype.itemsize or lengths[0] > full:
            raise PackedModelError(f"{field}.parts", f"the kept values need one part of at most "
                                                     f"{full} bytes of {dtype}, got {lengths}")
    if codec in _SYMBOL_CODECS:
        _check_symbols_entry(entry, field, size, spans, names)
    return size


def _check_symbols_entry(entry: dict, field: str, size: int, spans: list,
                         names: dict[str, dict]) -> None:
    alphabet = entry["alphabet"]
    if not (_is_int(alphabet) and 1 <= alphabet <= MAX_ALPHABET):
        raise PackedModelError(f"{field}.alphabet", f"must be an integer in [1, {MAX_ALPHABET}],"
                                                    f" got {alphabet!r}")
    if entry["codec"] != "relative":
        _check_sequence(entry["codec"], spans, alphabet, size, f"{field}.parts")
    else:
        zero, gap_bits, count = entry["zero"], entry["gap_bits"], entry["entries"]
        if not (_is_int(zero) and 0 <= zero < alphabet):
            raise PackedModelError(f"{field}.zero", f"must be a symbol in [0, {alphabet}), got "
                                                    f"{zero!r}")
        if not (_is_int(gap_bits) and 1 <= gap_bits <= MAX_GAP_BITS):
            raise PackedModelError(f"{field}.gap_bits", f"must be an integer in "
                                   f"[1, {MAX_GAP_BITS}], got {gap_bits!r}")
        if not (_is_int(count) and 0 <= count <= size):
            raise PackedModelError(f"{field}.entries", f"must be an integer in [0, {size}], got "
                                                       f"{count!r}")
        split = []
        for key in ("gaps", "values"):
            pair = entry[key]
            if not (isinstance(pair, list) and len(pair) == 2 and pair[0] in ("fixed", "huffman")
                    and pair[1] == (1 if pair[0] == "fixed" else 2)):
                raise PackedModelError(f"{field}.{key}", f"must be [\"fixed\", 1] or "
                                                         f"[\"huffman\", 2], got {pair!r}")
            split.append(pair[1])
        if len(spans) != sum(split):
            raise PackedModelError(f"{field}.parts", f"must hold {sum(split)} parts, got "
                                                     f"{len(spans)}")
        _check_sequence(entry["gaps"][0], spans[:split[0]], 1 << gap_bits, count,
                        f"{field}.parts")
        _check_sequence(entry["values"][0], spans[split[0]:], alphabet, count, f"{field}.parts")
    if "quant" in entry:
        q = entry["quant"]
        _require(q, f"{field}.quant", {"scale", "zero_point", "qmin", "qmax", "axis"})
        for key in ("scale", "zero_point"):
            ref = names.get(q[key]) if isinstance(q[key], str) else None
            if ref is None or ref.get("codec") == "masked" or "quant" in ref:
                raise PackedModelError(f"{field}.quant.{key}", f"must name another array "
                                       f"that depends on none, got {q[key]!r}")
        if not (_is_int(q["qmin"]) and _is_int(q["qmax"])
                and q["qmax"] - q["qmin"] + 1 == alphabet and abs(q["qmin"]) <= MAX_ALPHABET):
            raise PackedModelError(f"{field}.quant", f"qmin and qmax must be integers spanning "
                                   f"the alphabet of {alphabet}, got {q['qmin']!r}, {q['qmax']!r}")
        if not (q["axis"] is None or _ARG_KINDS["axis"][0](q["axis"])):
            raise PackedModelError(f"{field}.quant.axis", f"must be null or "
                                   f"{_ARG_KINDS['axis'][1]}, got {q['axis']!r}")
        if np.dtype(entry["dtype"]).kind != "f":
            raise PackedModelError(f"{field}.dtype", "a quantized array must be floating")


def check_entries(entries: Any, payload_bytes: int, max_elements: int = MAX_ELEMENTS) -> None:
    """Validate the array entries of a spec against the payload's length before anything is
    decoded: known codecs with exactly their keys, allowed dtypes (booleans, integers and
    floats of at most 8 bytes), shapes of at most ``MAX_NDIM`` dimensions, parts inside the
    payload with the lengths their codec writes for the declared shape, references (masks,
    scales) to other arrays that depend on none, and at most ``max_elements`` elements in total.
    Raises ``PackedModelError`` naming the entry and field. Test:
    ``tests/adversarial/test_optim_packed.py::test_malicious_files_raise_the_documented_error``.
    """
    if not isinstance(entries, list):
        raise PackedModelError("arrays", f"must be a list, got {type(entries).__name__}")
    names: dict[str, dict] = {}
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or name in names:
            raise PackedModelError(f"arrays[{i}].name", f"must be a non-empty string naming "
                                                        f"no other array, got {name!r}")
        names[name] = entry
    total = 0
    for i, entry in enumerate(entries):
        total += _check_entry(entry, f"arrays[{i}]", payload_bytes, names)
        if total > max_elements:
            raise PackedModelError(f"arrays[{i}].shape", f"the arrays declare more than "
                                   f"{max_elements} elements (the cap)")


def decode_state(entries: list[dict], payload: bytes,
                 max_elements: int = MAX_ELEMENTS) -> dict[str, np.ndarray]:
    """The arrays that ``encode_state`` encoded (codes dequantized, masked entries zero).
    Entries that depend on others (quantized weights on their scales, pruned parameters on
    their masks) are decoded after them. The entries are validated first
    (``check_entries``); PackedModelError names an entry that does not decode."""
    check_entries(entries, len(payload), max_elements)
    return _decode_checked(entries, payload)


def _decode_checked(entries: list[dict], payload: bytes) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    indexed = list(enumerate(entries))
    dependent = [(i, e) for i, e in indexed if "quant" in e or e["codec"] == "masked"]
    for i, entry in [(i, e) for i, e in indexed if "quant" not in e and e["codec"] != "masked"] \
            + dependent:
        try:
            state[entry["name"]] = _decode(entry, payload, state)
        except (ValueError, TypeError, IndexError) as err:
            raise PackedModelError(f"arrays[{i}]", f"array {entry['name']!r} does not decode: "
                                                   f"{err}") from None
    return {e["name"]: state[e["name"]] for e in entries}


def packed_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s payload in a packed model file (see the module docstring)."""
    return len(encode_state(module)[1])


def save_model(module: nn.Module, path: str | os.PathLike, meta: dict | None = None) -> dict:
    """Write ``module`` (structure, arrays and the JSON-ready ``meta``) to the npz ``path``,
    atomically, deflated. Returns ``{"packed_bytes", "file_bytes"}``."""
    entries, payload = encode_state(module)
    spec = {"format": FORMAT, "module": module_spec(module), "arrays": entries,
            "meta": meta or {}}
    text = json.dumps(spec, separators=(",", ":")).encode()
    minnet.save({"spec": np.frombuffer(text, np.uint8), "payload": np.frombuffer(payload, np.uint8)},
                path, compress=True)
    return {"packed_bytes": len(payload), "file_bytes": os.path.getsize(path)}


# Failures of the ZIP container and the .npy headers inside it (zipfile raises many kinds).
_CONTAINER_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
                     ValueError, NotImplementedError, RuntimeError, struct.error, SyntaxError,
                     TypeError, KeyError, IndexError, OverflowError)


def _read_member(archive: zipfile.ZipFile, name: str, cap: int) -> bytes:
    """The bytes of the 1-D uint8 ``.npy`` member ``name``: header checked, at most ``cap``
    bytes read, the ZIP's CRC checked (by reading to the member's end)."""
    with archive.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise PackedModelError(name, f".npy format version {version} is not supported")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        if dtype != np.uint8 or len(shape) != 1:
            raise PackedModelError(name, f"must be a 1-D uint8 array, got dtype {dtype} and "
                                         f"shape {shape}")
        if shape[0] > cap:
            raise PackedModelError(name, f"declares {shape[0]} bytes, more than the cap of {cap}")
        data = f.read(shape[0])
        if len(data) != shape[0] or f.read(1):
            raise PackedModelError(name, f"declares {shape[0]} bytes but holds "
                                         f"{'fewer' if len(data) < shape[0] else 'more'}")
    return data


def _read_packed(path: Path, max_elements: int) -> tuple[dict, bytes]:
    """The JSON spec and the payload of the packed model file ``path``, read within the caps
    (the payload at most 8 bytes per allowed element)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted(archive.namelist())
            if members != ["payload.npy", "spec.npy"]:
                raise PackedModelError("<file>", f"not a packed model file (members {members})")
            text = _read_member(archive, "spec", MAX_SPEC_BYTES)
            payload = _read_member(archive, "payload", 8 * max_elements)
    except PackedModelError:
        raise
    except _CONTAINER_ERRORS as err:
        raise PackedModelError("<file>", f"not a readable packed model file: "
                                         f"{type(err).__name__}: {err}") from None
    try:
        spec = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise PackedModelError("spec", f"not a JSON document: {type(err).__name__}: "
                                       f"{str(err)[:200]}") from None
    if not isinstance(spec, dict):
        raise PackedModelError("spec", f"must be a JSON object, got {type(spec).__name__}")
    if spec.get("format") != FORMAT:
        raise PackedModelError("format", f"unsupported format {spec.get('format')!r}, "
                                         f"expected {FORMAT!r}")
    _require(spec, "spec", {"format", "module", "arrays", "meta"})
    if not isinstance(spec["meta"], dict):
        raise PackedModelError("meta", f"must be a JSON object, got {type(spec['meta']).__name__}")
    return spec, payload


def load_model(path: str | os.PathLike, *, max_elements: int = MAX_ELEMENTS
               ) -> tuple[nn.Module, dict]:
    """``(model, meta)`` from a file written by ``save_model``; the model is in eval mode.

    The file is untrusted: it is validated whole before any array is allocated
    (``check_module_spec``, ``check_entries``; the members' declared sizes against their real
    lengths and the caps ``MAX_SPEC_BYTES`` and 8 bytes per element for the payload), and
    every failure is a ``PackedModelError`` (a ValueError) naming the path and the field.
    ``max_elements`` caps the elements of all the model's arrays (default ``MAX_ELEMENTS``,
    2**24). FileNotFoundError if ``path`` does not exist. Tests:
    ``tests/adversarial/test_optim_packed.py``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such packed model file: {path}")
    try:
        spec, payload = _read_packed(path, max_elements)
        check_module_spec(spec["module"], max_elements)
        check_entries(spec["arrays"], len(payload), max_elements)
        model = _build_checked(spec["module"])
        state = _decode_checked(spec["arrays"], payload)
        try:
            restore_pruning(model, state)
            if isinstance(model, QuantSequential) and model.frozen:
                model = convert(model)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            raise PackedModelError("arrays", f"the arrays do not fit the module: {err}") from None
    except PackedModelError as err:
        raise PackedModelError(err.field, err.reason, path) from None
    return model.eval(), spec["meta"]
