"""Packed model files: the architecture and every array of a model, in one npz.

A file written by ``save_model`` holds two uint8 members: ``spec``, a JSON document (the
module tree as ``module_spec`` describes it, and one entry per array naming its codec and its
bytes in the payload) and ``payload``, the concatenated encoded arrays. ``load_model``
rebuilds the model from the file alone. Each array is stored with the cheapest exact codec
that fits it (``optim.pipeline_codecs``):

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
Tests: ``tests/optim/test_pipeline_store.py``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

import minnet
from minnet import nn
from optim.nas.build import Residual
from optim.prune.parametrize import restore_pruning
from optim.quant import (FixedFakeQuantize, QConfig, QuantSequential, QuantStage,
                         SharedWeightLayer, convert, dequantize, quantize)

from . import pipeline_codecs as C

__all__ = ["FORMAT", "module_spec", "build_module", "encode_state", "decode_state", "save_model",
           "load_model", "packed_bytes"]

FORMAT = "optim.pipeline/1"

# Leaf layers: constructor arguments read back from attributes of the same name.
_LEAVES: dict[str, tuple[type, tuple[str, ...]]] = {
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "Conv2d": (nn.Conv2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                           "dilation", "groups")),
    "BatchNorm1d": (nn.BatchNorm1d, ("num_features", "eps", "momentum", "affine",
                                     "track_running_stats")),
    "BatchNorm2d": (nn.BatchNorm2d, ("num_features", "eps", "momentum", "affine",
                                     "track_running_stats")),
    "MaxPool2d": (nn.MaxPool2d, ("kernel_size", "stride", "padding")),
    "AvgPool2d": (nn.AvgPool2d, ("kernel_size", "stride", "padding")),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, ("output_size",)),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "Dropout": (nn.Dropout, ("p",)),
    "LeakyReLU": (nn.LeakyReLU, ("negative_slope",)),
    "ReLU": (nn.ReLU, ()), "GELU": (nn.GELU, ()), "Sigmoid": (nn.Sigmoid, ()),
    "Tanh": (nn.Tanh, ()), "Identity": (nn.Identity, ()),
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
                    f"{sorted(_LEAVES) + ['Sequential', 'QuantSequential', 'QuantStage', 'FixedFakeQuantize', 'SharedWeightLayer', 'Residual']}")


def build_module(spec: dict) -> nn.Module:
    """A freshly initialised module with the structure ``spec`` (from ``module_spec``)."""
    kind = spec["type"]
    if kind in _LEAVES:
        cls = _LEAVES[kind][0]
        args = {k: _from_json(v) for k, v in spec["args"].items()}
        return cls(**args, bias=spec["bias"]) if kind in _WITH_BIAS else cls(**args)
    if kind == "Sequential":
        return nn.Sequential(*(build_module(s) for s in spec["children"]))
    if kind == "QuantSequential":
        config = None if spec["config"] is None else QConfig(**spec["config"])
        return QuantSequential(*(build_module(s) for s in spec["children"]), config=config)
    if kind == "Residual":
        return Residual(build_module(spec["body"]))
    if kind == "QuantStage":
        parts = {k: None if spec[k] is None else build_module(spec[k])
                 for k in ("weight_quant", "output_quant")}
        return QuantStage(build_module(spec["layer"]), spec["relu"], **parts)
    if kind == "FixedFakeQuantize":
        shape = tuple(spec["shape"])
        return FixedFakeQuantize(np.ones(shape, np.float32), np.zeros(shape, np.int64),
                                 spec["qmin"], spec["qmax"], spec["axis"])
    if kind == "SharedWeightLayer":
        layer = build_module(spec["layer"])
        return SharedWeightLayer(layer, spec["n_clusters"], iters=0)
    raise ValueError(f"unknown module type {kind!r} in the model spec")


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


def decode_state(entries: list[dict], payload: bytes) -> dict[str, np.ndarray]:
    """The arrays that ``encode_state`` encoded (codes dequantized, masked entries zero).
    Entries that depend on others (quantized weights on their scales, pruned parameters on
    their masks) are decoded after them."""
    state: dict[str, np.ndarray] = {}
    dependent = [e for e in entries if "quant" in e or e["codec"] == "masked"]
    for entry in [e for e in entries if e not in dependent] + dependent:
        state[entry["name"]] = _decode(entry, payload, state)
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


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """``(model, meta)`` from a file written by ``save_model``; the model is in eval mode.
    ValueError if the file is not such a file."""
    arrays = minnet.load(path)
    if set(arrays) != {"spec", "payload"}:
        raise ValueError(f"{path} is not a packed model file (members {sorted(arrays)})")
    spec = json.loads(arrays["spec"].tobytes().decode())
    if spec.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported format {spec.get('format')!r}, expected {FORMAT!r}")
    model = build_module(spec["module"])
    state = decode_state(spec["arrays"], arrays["payload"].tobytes())
    restore_pruning(model, state)
    if isinstance(model, QuantSequential) and model.frozen:
        model = convert(model)
    return model.eval(), spec["meta"]
