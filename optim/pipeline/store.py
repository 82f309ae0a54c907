"""Packed model files: the architecture and every array of a model, in one npz.

A file written by ``save_model`` holds two uint8 members: ``spec``, a JSON document (the
module tree as ``module_spec`` describes it, and one entry per array naming its codec and its
bytes in the payload) and ``payload``, the concatenated encoded arrays. ``load_model``
rebuilds the model from the file alone. Each array is stored with the cheapest exact codec
that fits it (``optim.pipeline.codecs``):

- a parameter quantized by a ``FixedFakeQuantize`` parametrization (after any masks): its
  integer codes :math:`q - q_{min}`; loading dequantizes them, :math:`\\hat W = (q - z) s`,
  which the quantizer maps to itself, so the model computes the same outputs;
- the indices of a ``SharedWeights`` parametrization: its centroids are stored beside them,
  and the parameter's original (zeros) as nothing;

  codes and indices are integer symbols, stored fixed-width, Huffman-coded, or (when one
  symbol, e.g. the code of a pruned zero, dominates) relatively indexed with fixed or
  Huffman-coded gaps and values, whichever is smallest (Deep Compression's storage, Han et al.
  2016, sections 2-4);
- a ``PruningMask``: one bit per weight; the pruned parameter (``parametrizations.<name>.
  original``): its kept entries;
- other float arrays: raw, or a bitmap of the non-zeros and their values when smaller;
  arrays of zeros: nothing.

Which arrays are codes, indices or masked is declared by the registered module and
parametrization types (``optim.pipeline.kinds``), not by this module. A frozen
``QuantSequential``'s int32 bias quantizers are derived from the stored scales
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

import json
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

import minnet
from minnet import nn
from optim.quant import dequantize, quantize

from . import codecs as C
from .kinds import (ARG_KINDS, MAX_ALPHABET, MAX_DEPTH, MAX_DIM, MAX_ELEMENTS, MAX_MODULES,
                    MAX_NDIM, MAX_SPEC_BYTES, PackedModelError,
                    build_checked, build_module, check_module_spec, derived_keys, finish_loaded,
                    is_int, module_spec, require, symbol_arrays)

__all__ = ["FORMAT", "PackedModelError", "MAX_ELEMENTS", "MAX_SPEC_BYTES", "MAX_DEPTH",
           "MAX_MODULES", "module_spec", "build_module", "check_module_spec", "check_entries",
           "encode_state", "decode_state", "save_model", "load_model", "packed_bytes"]

FORMAT = "optim.pipeline/2"


# ---- arrays ----------------------------------------------------------------------------

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


def _array_codec(array: np.ndarray, mask: np.ndarray | None) -> tuple[str, list[bytes]]:
    if array.dtype == np.bool_:
        return "bits", [np.packbits(array.reshape(-1)).tobytes()]
    if mask is not None:
        return "masked", [np.ascontiguousarray(array[mask]).tobytes()]
    if not np.any(array):
        return "zeros", []
    if array.dtype.kind == "f":
        bitmap, values = C.bitmap_encode(array)
        if len(bitmap) + values.nbytes < array.nbytes:
            return "bitmap", [bitmap, values.tobytes()]
    return "raw", [np.ascontiguousarray(array).tobytes()]


def _coded(array: np.ndarray, info: dict, state: dict) -> tuple[str, list[bytes], dict]:
    """Integer symbols: the array itself (indices), or the codes of a quantized parameter
    (of the value entering its quantizer: the array times the masks before it)."""
    extra = {k: v for k, v in info.items() if k != "masks"}
    values = array
    if "quant" in info:
        q = info["quant"]
        for mask in info["masks"]:
            array = array * state[mask]
        codes = quantize(array, state[q["scale"]], state[q["zero_point"]], q["qmin"], q["qmax"],
                         axis=q["axis"])
        values = codes.astype(np.int64) - q["qmin"]
    codec, parts, coded = _symbol_codec(values, info["alphabet"])
    return codec, parts, {**extra, **coded}


def encode_state(module: nn.Module) -> tuple[list[dict], bytes]:
    """``(entries, payload)``: every array of ``module.state_dict()`` (derived ones excepted)
    encoded by its codec (see the module docstring); each entry records the array's name,
    dtype, shape, codec and the ``[offset, length]`` of its parts in ``payload``."""
    state = module.state_dict()
    claims, derived = symbol_arrays(module), derived_keys(module)
    entries, chunks, offset = [], [], 0
    for name, array in state.items():
        if name in derived:
            continue
        array, info = np.asarray(array), claims.get(name, {})
        if "alphabet" in info:
            codec, parts, extra = _coded(array, info, state)
        else:
            mask = info.get("mask")
            codec, parts = _array_codec(array, None if mask is None else state[mask])
            extra = {} if mask is None else {"mask": mask}
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
    require(entry, field, keys | ({"quant"} if "quant" in entry and codec in _SYMBOL_CODECS
                                   else set()))
    dtype, shape, spans = entry["dtype"], entry["shape"], entry["parts"]
    if dtype not in _DTYPES:
        raise PackedModelError(f"{field}.dtype", f"must be one of {sorted(_DTYPES)}, got "
                                                 f"{dtype!r}")
    dtype = np.dtype(dtype)
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
            and all(is_int(d) and 0 <= d <= MAX_DIM for d in shape)):
        raise PackedModelError(f"{field}.shape", f"must be a list of at most {MAX_NDIM} "
                                                 f"integers in [0, {MAX_DIM}], got {shape!r}")
    size = math.prod(shape)
    if not (isinstance(spans, list) and all(
            isinstance(p, list) and len(p) == 2 and all(is_int(v) and v >= 0 for v in p)
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
    if not (is_int(alphabet) and 1 <= alphabet <= MAX_ALPHABET):
        raise PackedModelError(f"{field}.alphabet", f"must be an integer in [1, {MAX_ALPHABET}],"
                                                    f" got {alphabet!r}")
    if entry["codec"] != "relative":
        _check_sequence(entry["codec"], spans, alphabet, size, f"{field}.parts")
    else:
        zero, gap_bits, count = entry["zero"], entry["gap_bits"], entry["entries"]
        if not (is_int(zero) and 0 <= zero < alphabet):
            raise PackedModelError(f"{field}.zero", f"must be a symbol in [0, {alphabet}), got "
                                                    f"{zero!r}")
        if not (is_int(gap_bits) and 1 <= gap_bits <= MAX_GAP_BITS):
            raise PackedModelError(f"{field}.gap_bits", f"must be an integer in "
                                   f"[1, {MAX_GAP_BITS}], got {gap_bits!r}")
        if not (is_int(count) and 0 <= count <= size):
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
        require(q, f"{field}.quant", {"scale", "zero_point", "qmin", "qmax", "axis"})
        for key in ("scale", "zero_point"):
            ref = names.get(q[key]) if isinstance(q[key], str) else None
            if ref is None or ref.get("codec") == "masked" or "quant" in ref:
                raise PackedModelError(f"{field}.quant.{key}", f"must name another array "
                                       f"that depends on none, got {q[key]!r}")
        if not (is_int(q["qmin"]) and is_int(q["qmax"])
                and q["qmax"] - q["qmin"] + 1 == alphabet and abs(q["qmin"]) <= MAX_ALPHABET):
            raise PackedModelError(f"{field}.quant", f"qmin and qmax must be integers spanning "
                                   f"the alphabet of {alphabet}, got {q['qmin']!r}, {q['qmax']!r}")
        if not (q["axis"] is None or ARG_KINDS["axis"][0](q["axis"])):
            raise PackedModelError(f"{field}.quant.axis", f"must be null or "
                                   f"{ARG_KINDS['axis'][1]}, got {q['axis']!r}")
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
    require(spec, "spec", {"format", "module", "arrays", "meta"})
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
        model = build_checked(spec["module"])
        state = _decode_checked(spec["arrays"], payload)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
            if unexpected or set(missing) - derived_keys(model):
                raise ValueError(f"missing {sorted(set(missing) - derived_keys(model))}, "
                                 f"unexpected {sorted(unexpected)}")
            model = finish_loaded(model)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            raise PackedModelError("arrays", f"the arrays do not fit the module: {err}") from None
    except PackedModelError as err:
        raise PackedModelError(err.field, err.reason, path) from None
    return model.eval(), spec["meta"]
