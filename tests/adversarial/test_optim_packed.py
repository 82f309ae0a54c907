"""Malicious and corrupted packed model files (``optim.pipeline.store.load_model``): every case
ends in ``PackedModelError`` naming the path and the field, before anything large is
allocated; a fuzzer of random byte edits runs in a memory-capped subprocess."""
import copy
import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile

import numpy as np
import pytest

import minnet
from minnet import nn
from optim import prune, quant
from optim.graph import GraphModule, trace
from optim.pipeline.store import (FORMAT, MAX_DEPTH, MAX_ELEMENTS, PackedModelError, load_model,
                                  module_spec, save_model)


def _small(seed: int = 0) -> nn.Sequential:
    minnet.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))


IMAGES = np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32)


def _pruned() -> nn.Module:
    model = _small()
    prune.prune_model(model, 0.6)
    return model


def _quantized() -> nn.Module:
    model = _small()
    prune.prune_model(model, 0.9)
    prepared = quant.prepare(prune.remove_all(model), weight_bits=4)
    quant.calibrate(prepared, IMAGES)
    return quant.convert(prepared)


def _shared() -> nn.Module:
    return quant.share_weights(_small(), n_clusters=4)


def _graph() -> nn.Module:
    return GraphModule(trace(_small().eval(), IMAGES[:2], dynamic_axes={0: "N"}))


MODELS = {"pruned": _pruned, "quantized": _quantized, "shared": _shared, "graph": _graph}


def _members(path) -> tuple[dict, bytes]:
    with np.load(path) as archive:
        return json.loads(archive["spec"].tobytes()), archive["payload"].tobytes()


def _write(path, spec, payload: bytes) -> None:
    text = spec if isinstance(spec, bytes) else json.dumps(spec).encode()
    minnet.save({"spec": np.frombuffer(text, np.uint8),
                 "payload": np.frombuffer(payload, np.uint8)}, path, compress=True)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """One real packed file per kind of model, and its (spec, payload)."""
    root = tmp_path_factory.mktemp("packed")
    files = {}
    for name, build in MODELS.items():
        save_model(build(), root / f"{name}.npz", meta={"kind": name})
        files[name] = root / f"{name}.npz"
    return files


def _entry(spec, name):
    return next(e for e in spec["arrays"] if e["name"] == name)


def _nested(depth):
    spec = {"type": "ReLU", "args": {}}
    for _ in range(depth):
        spec = {"type": "Sequential", "children": [spec]}
    return spec


def _linear(n, m):
    return {"type": "Linear", "args": {"in_features": n, "out_features": m}, "bias": True}


QUANTIZED_WEIGHT = "1.layer.parametrizations.weight.original"  # stored as integer codes

# (case id, model, edit of the (spec, payload) pair, expected field, pattern of the reason).
# An edit returns the new (spec or spec bytes, payload).
SPEC_CASES = [
    ("linear-37GiB", "pruned",
     lambda s, p: ({**s, "module": _linear(100_000, 100_000), "arrays": []}, b""),
     "module", "more than 16777216 elements"),
    ("conv-huge-kernel", "pruned",
     lambda s, p: (_set(s, ["module", "children", 0, "args", "kernel_size"], [50_000, 50_000]),
                   p), "module.children[0]", "the cap"),
    ("shared-huge-codebook", "shared",
     lambda s, p: (_set(s, ["module", "children", 0, "parametrizations", "weight", 0,
                            "n_clusters"], 1 << 40), p),
     "module.children[0].parametrizations.weight[0].n_clusters", "integer in"),
    ("nesting-past-max-depth", "pruned",
     lambda s, p: ({**s, "module": _nested(MAX_DEPTH + 5), "arrays": []}, b""),
     f"module{'.children[0]' * (MAX_DEPTH + 1)}", "nested deeper"),
    ("json-nesting-100k", "pruned",
     lambda s, p: (b'{"format":"' + FORMAT.encode() + b'","module":' + b"[" * 100_000
                   + b"]" * 100_000 + b"}", p), "spec", "RecursionError"),
    ("in_features-string", "pruned",
     lambda s, p: (_set(s, ["module", "children", 5, "args", "in_features"], "64"), p),
     "module.children[5].args.in_features", "integer in"),
    ("in_features-bool", "pruned",
     lambda s, p: (_set(s, ["module", "children", 5, "args", "in_features"], True), p),
     "module.children[5].args.in_features", "integer in"),
    ("out_features-zero", "pruned",
     lambda s, p: (_set(s, ["module", "children", 5, "args", "out_features"], 0), p),
     "module.children[5].args.out_features", "integer in"),
    ("bias-string", "pruned",
     lambda s, p: (_set(s, ["module", "children", 5, "bias"], "yes"), p),
     "module.children[5].bias", "true or false"),
    ("kernel-triple", "pruned",
     lambda s, p: (_set(s, ["module", "children", 0, "args", "kernel_size"], [3, 3, 3]), p),
     "module.children[0].args.kernel_size", "pair"),
    ("groups-not-dividing", "pruned",
     lambda s, p: (_set(s, ["module", "children", 0, "args", "groups"], 3), p),
     "module.children[0].args.groups", "must divide"),
    ("pool-padding-past-half-kernel", "pruned",
     lambda s, p: (_set(s, ["module", "children", 3, "args", "padding"], 100), p),
     "module.children[3].args.padding", "half of kernel_size"),
    ("bn-eps-negative", "pruned",
     lambda s, p: (_set(s, ["module", "children", 1, "args", "eps"], -1.0), p),
     "module.children[1].args.eps", "> 0"),
    ("dropout-nan", "pruned",
     lambda s, p: (_set(s, ["module", "children", 2], {"type": "Dropout", "args": {"p": 1e999}}),
                   p), "module.children[2].args.p", r"\[0, 1\]"),
    ("unknown-type", "pruned",
     lambda s, p: (_set(s, ["module", "children", 2, "type"], "os.system"), p),
     "module.children[2].type", "unknown module type"),
    ("type-not-string", "pruned",
     lambda s, p: (_set(s, ["module", "children", 2, "type"], ["ReLU"]), p),
     "module.children[2].type", "unknown module type"),
    ("args-missing", "pruned",
     lambda s, p: (_drop(s, ["module", "children", 5], "args"), p),
     "module.children[5]", "missing"),
    ("args-unexpected-key", "pruned",
     lambda s, p: (_set(s, ["module", "children", 5, "args", "dtype"], "float64"), p),
     "module.children[5].args", "unexpected"),
    ("children-not-list", "pruned",
     lambda s, p: (_set(s, ["module", "children"], {"0": {"type": "ReLU", "args": {}}}), p),
     "module.children", "list"),
    ("qconfig-unknown-key", "quantized",
     lambda s, p: (_set(s, ["module", "config", "__class__"], "x"), p),
     "module.config", "keys among"),
    ("quantizer-qmin-above-qmax", "quantized",
     lambda s, p: (_set(s, ["module", "children", 0, "qmin"], 300), p),
     "module.children[0].qmin", "exceeds"),
    ("quant-stage-layer-not-weighted", "quantized",
     lambda s, p: (_set(s, ["module", "children", 1, "layer"], {"type": "ReLU", "args": {}}), p),
     "module.children[1].layer", "Linear or Conv2d"),
    ("arrays-missing", "pruned",
     lambda s, p: ({k: v for k, v in s.items() if k != "arrays"}, p), "spec", "missing"),
    ("meta-not-object", "pruned", lambda s, p: ({**s, "meta": [1]}, p), "meta", "JSON object"),
    ("spec-is-a-list", "pruned", lambda s, p: (b"[1, 2]", p), "spec", "JSON object"),
    ("spec-not-utf8", "pruned", lambda s, p: (b'{"format": "\xff\xfe"}', p), "spec",
     "UnicodeDecodeError"),
    ("format-missing", "pruned", lambda s, p: ({"module": s["module"]}, p), "format",
     "unsupported format"),
    ("truncated-payload", "pruned", lambda s, p: (s, p[:-7]), "arrays[", "within the"),
    ("empty-payload", "quantized", lambda s, p: (s, b""), "arrays[", "within the"),
    ("dtype-object", "pruned", lambda s, p: (_set_entry(s, "0.bias", "dtype", "|O"), p),
     "arrays[0].dtype", "must be one of"),
    ("dtype-unicode", "pruned", lambda s, p: (_set_entry(s, "0.bias", "dtype", "<U4"), p),
     "arrays[0].dtype", "must be one of"),
    ("shape-negative", "pruned", lambda s, p: (_set_entry(s, "0.bias", "shape", [-4]), p),
     "arrays[0].shape", "integers in"),
    ("zeros-declaring-37GiB", "pruned",
     lambda s, p: (_set_entry(s, "1.bias", "shape", [100_000, 100_000]), p),
     "arrays[4].shape", "the cap"),
    ("raw-length-mismatch", "pruned",
     lambda s, p: (_set_entry(s, "0.bias", "shape", [5]), p), "arrays[0].parts", "needs parts"),
    ("part-beyond-payload", "pruned",
     lambda s, p: (_set_entry(s, "0.bias", "parts", [[len(p), 16]]), p), "arrays[0].parts",
     "within the"),
    ("part-negative-offset", "pruned",
     lambda s, p: (_set_entry(s, "0.bias", "parts", [[-16, 16]]), p), "arrays[0].parts",
     "within the"),
    ("unknown-codec", "pruned", lambda s, p: (_set_entry(s, "0.bias", "codec", "pickle"), p),
     "arrays[0].codec", "unknown codec"),
    ("duplicate-name", "pruned",
     lambda s, p: (_set_entry(s, "1.weight", "name", "0.bias"), p), "arrays[3].name",
     "naming no other"),
    ("mask-names-a-float-array", "pruned",
     lambda s, p: (_set_entry(s, "0.parametrizations.weight.original", "mask", "0.bias"), p),
     "arrays[1].mask",
     "boolean"),
    ("masked-values-too-long", "pruned",
     lambda s, p: (_set_entry(s, "0.parametrizations.weight.original", "parts",
                              [[0, 4 * 37]]), p), "arrays[1].parts", "at most 144 bytes"),
    ("kept-values-not-matching-mask", "pruned",
     lambda s, p: (_set_entry(s, "0.parametrizations.weight.original", "parts",
                              [[0, 4 * 3]]), p), "arrays[1]", "does not decode"),
    ("alphabet-zero", "quantized",
     lambda s, p: (_set_entry(s, QUANTIZED_WEIGHT, "alphabet", 0), p), "arrays[2].alphabet",
     "integer in"),
    ("relative-entries-beyond-size", "quantized",
     lambda s, p: (_set_entry(s, QUANTIZED_WEIGHT, "entries", 10 ** 9), p), "arrays[2].entries",
     "integer in"),
    ("quant-scale-missing", "quantized",
     lambda s, p: (_set_entry(s, QUANTIZED_WEIGHT, "quant",
                              {**_entry(s, QUANTIZED_WEIGHT)["quant"], "scale": "nope"}), p),
     "arrays[2].quant.scale", "must name another array"),
    ("quant-range-not-alphabet", "quantized",
     lambda s, p: (_set_entry(s, QUANTIZED_WEIGHT, "quant",
                              {**_entry(s, QUANTIZED_WEIGHT)["quant"], "qmax": 1000}), p),
     "arrays[2].quant", "spanning the alphabet"),
    ("huffman-stream-too-long", "quantized",
     lambda s, p: _huffman_bomb(s, p), "arrays[2].parts", "stream of at most"),
    ("graph-unknown-op", "graph",
     lambda s, p: (_set(s, ["module", "nodes", 0, 0], "os.system"), p),
     "module.nodes[0][0]", "unknown op"),
    ("graph-constant-37GiB", "graph",
     lambda s, p: (_set(s, ["module", "constants", 0, 1], [100_000, 100_000]), p),
     "module.constants[0]", "the cap"),
    ("graph-symbolic-constant", "graph",
     lambda s, p: (_set(s, ["module", "constants", 0, 1], ["N", 1, 3, 3]), p),
     "module.constants[0][1]", "integers in"),
    ("graph-bad-symbol", "graph",
     lambda s, p: (_set(s, ["module", "inputs", 0, 1, 0], "__import__('os')"), p),
     "module.inputs[0][1]", "symbolic names"),
    ("graph-object-dtype", "graph",
     lambda s, p: (_set(s, ["module", "inputs", 0, 2], "object"), p),
     "module.inputs[0][2]", "must be one of"),
    ("graph-attribute-object", "graph",
     lambda s, p: (_set(s, ["module", "nodes", 0, 3, "stride"], {"x": 1}), p),
     "module.nodes[0][3].stride", "must be null"),
    ("graph-parameter-not-constant", "graph",
     lambda s, p: (_set(s, ["module", "parameters"], ["input"]), p),
     "module.parameters", "constants of the graph"),
    ("graph-shapes-do-not-fit", "graph",
     lambda s, p: (_set(s, ["module", "constants", 0, 1], [4, 2, 3, 3]), p),
     "module", "channels|shape|match|expect"),
    ("graph-dangling-value", "graph",
     lambda s, p: (_set(s, ["module", "nodes", 1, 1, 0], "nowhere"), p),
     "module", "dangling"),
    ("array-shape-not-the-module's", "pruned",
     lambda s, p: (_set_entry(s, "1.running_var", "shape", [2, 2]), p),
     "arrays", "do not fit the module"),
]


def _set(spec, keys, value):
    spec = copy.deepcopy(spec)
    node = spec
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return spec


def _drop(spec, keys, key):
    spec = copy.deepcopy(spec)
    node = spec
    for k in keys:
        node = node[k]
    del node[key]
    return spec


def _set_entry(spec, name, key, value):
    spec = copy.deepcopy(spec)
    _entry(spec, name)[key] = value
    return spec


def _huffman_bomb(spec, payload):
    """The first quantized weight recoded as Huffman with a 1 MB stream for 36 symbols."""
    spec = copy.deepcopy(spec)
    entry = _entry(spec, QUANTIZED_WEIGHT)
    for key in ("zero", "gap_bits", "entries", "gaps", "values"):
        entry.pop(key)
    entry["codec"] = "huffman"
    lengths = bytes([4] * entry["alphabet"])
    entry["parts"] = [[len(payload), len(lengths)], [len(payload) + len(lengths), 1 << 20]]
    return spec, payload + lengths + bytes(1 << 20)


@pytest.mark.parametrize("case", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_malicious_files_raise_the_documented_error(case, originals, tmp_path):
    name, kind, edit, field, reason = case
    spec, payload = _members(originals[kind])
    bad_spec, bad_payload = edit(spec, payload)
    path = tmp_path / f"{name}.npz"
    _write(path, bad_spec, bad_payload)
    tracemalloc.start()
    try:
        with pytest.raises(PackedModelError, match=reason) as info:
            load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.field.startswith(field), (info.value.field, field)
    assert str(info.value).startswith(f"{path}: ")
    assert peak < 64 << 20, f"{peak} bytes allocated before the error"


def _npy_header(shape_text: str) -> bytes:
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': " + shape_text + ", }"
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def _container(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


CONTAINER_CASES = [
    ("empty-file", lambda p: p.write_bytes(b""), "not a readable packed model file"),
    ("text-file", lambda p: p.write_text("weights = [1, 2, 3]\n"),
     "not a readable packed model file"),
    ("state-dict-checkpoint", lambda p: minnet.save({"w": np.ones(3)}, p),
     "not a packed model file"),
    ("extra-member", lambda p: _container(p, {"spec.npy": _npy_header("(0,)"),
                                              "payload.npy": _npy_header("(0,)"),
                                              "x.npy": b""}), "not a packed model file"),
    ("spec-declares-1TB", lambda p: _container(p, {"spec.npy": _npy_header("(1000000000000,)"),
                                                   "payload.npy": _npy_header("(0,)")}),
     "more than the cap"),
    ("spec-shorter-than-declared", lambda p: _container(p, {"spec.npy": _npy_header("(100,)")
                                                            + b"{}", "payload.npy":
                                                            _npy_header("(0,)")}),
     "holds fewer"),
    ("spec-not-uint8", lambda p: _container(p, {"spec.npy": _npy_header("(2,)").replace(
        b"|u1", b"<f8"), "payload.npy": _npy_header("(0,)")}), "1-D uint8"),
    ("spec-2d", lambda p: _container(p, {"spec.npy": _npy_header("(2, 2)"),
                                         "payload.npy": _npy_header("(0,)")}), "1-D uint8"),
]


@pytest.mark.parametrize("case", CONTAINER_CASES, ids=[c[0] for c in CONTAINER_CASES])
def test_broken_containers_raise_the_documented_error(case, tmp_path):
    name, make, reason = case
    path = tmp_path / f"{name}.npz"
    make(path)
    with pytest.raises(PackedModelError, match=reason) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path}: ")


def test_flipped_byte_in_compressed_data_is_caught_by_the_crc(originals, tmp_path):
    data = bytearray(originals["pruned"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "flipped.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(PackedModelError, match="<file>: not a readable"):
        load_model(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.npz")


def test_cap_can_be_lowered_and_a_model_at_the_cap_loads(originals):
    model, meta = load_model(originals["pruned"])
    elements = sum(v.size for v in model.state_dict().values())
    assert meta == {"kind": "pruned"}
    with pytest.raises(PackedModelError, match="the cap"):
        load_model(originals["pruned"], max_elements=elements // 2)
    assert MAX_ELEMENTS == 1 << 24


# ---- fuzzing in a memory-capped subprocess -------------------------------------------------

FUZZ_CAP = 1 << 20          # elements allowed to the fuzzed loads
FUZZ_MEMORY = 512 << 20     # address space the child may add after its imports

FUZZ_SCRIPT = textwrap.dedent("""
    import json, resource, sys, zipfile
    import numpy as np
    from hypothesis import HealthCheck, given, settings, strategies as st
    import minnet
    from optim.pipeline.store import PackedModelError, load_model, module_spec

    cap, memory, examples, tmp = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    originals = sys.argv[5:]
    outcomes = {"error": 0, "loaded": 0}

    def members(data):
        path = tmp + "/members.npz"
        with open(path, "wb") as f:
            f.write(data)
        with np.load(path) as archive:
            return json.loads(archive["spec"].tobytes()), archive["payload"].tobytes()

    def check(data, reference, text_payload=None):
        path = tmp + "/fuzzed.npz"
        if text_payload is None:
            with open(path, "wb") as f:
                f.write(data)
        else:
            minnet.save({"spec": np.frombuffer(text_payload[0], np.uint8),
                         "payload": np.frombuffer(text_payload[1], np.uint8)}, path,
                        compress=True)
        try:
            model, meta = load_model(path, max_elements=cap)
        except PackedModelError:
            outcomes["error"] += 1
            return
        outcomes["loaded"] += 1
        if text_payload is None:  # the ZIP's CRC held: the very same model
            model0, meta0 = reference
            assert meta == meta0
            state, state0 = model.state_dict(), model0.state_dict()
            assert state.keys() == state0.keys()
            for key in state:
                np.testing.assert_array_equal(state[key], state0[key])
        else:  # a valid edited spec: the model has exactly the spec's structure
            assert module_spec(model) == json.loads(text_payload[0])["module"]

    files = []
    for name in originals:
        with open(name, "rb") as f:
            data = f.read()
        files.append((data, load_model(name), members(data)))
    # the cap is set after the first loads, which compiled (or loaded) the Numba kernels
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    limit = pages * resource.getpagesize() + memory
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    edit = st.tuples(st.integers(0, 1 << 30), st.integers(0, 255))
    settings_ = settings(max_examples=examples, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))

    @settings_
    @given(which=st.integers(0, len(files) - 1), edits=st.lists(edit, min_size=1, max_size=4),
           cut=st.none() | st.integers(0, 1 << 30), region=st.sampled_from(["any", "ends"]))
    def fuzz_file_bytes(which, edits, cut, region):
        data, reference, _ = files[which]
        data = bytearray(data)
        for position, value in edits:  # the ZIP headers at both ends carry no CRC
            if region == "ends":
                position %= 160
                position = position if position < 80 else len(data) - 1 - (position - 80)
            data[position % len(data)] = value
        if cut is not None:
            data = data[:cut % (len(data) + 1)]
        check(bytes(data), reference)

    @settings_
    @given(which=st.integers(0, len(files) - 1),
           edits=st.lists(st.tuples(st.integers(0, 1 << 30),
                                    st.sampled_from(b'0123456789-.e,:[]{}"nt')),
                          min_size=1, max_size=3),
           payload_edits=st.lists(edit, max_size=2), cut=st.none() | st.integers(0, 1 << 30))
    def fuzz_spec_and_payload(which, edits, payload_edits, cut):
        _, reference, (spec, payload) = files[which]
        text = bytearray(json.dumps(spec).encode())
        for position, value in edits:
            text[position % len(text)] = value
        payload = bytearray(payload)
        for position, value in payload_edits:
            if payload:
                payload[position % len(payload)] = value
        if cut is not None:
            payload = payload[:cut % (len(payload) + 1)]
        check(None, reference, (bytes(text), bytes(payload)))

    fuzz_file_bytes()
    fuzz_spec_and_payload()
    print(json.dumps(outcomes))
""")


def test_fuzzed_packed_files_end_in_the_documented_error_or_the_right_model(originals,
                                                                            tmp_path):
    """Random byte edits and truncations of real packed files (ZIP level: headers, compressed
    data; and of the JSON spec and the payload inside a valid ZIP), loaded by a child process
    whose address space is capped: no crash, no MemoryError, only PackedModelError or a
    model equal to the original (same ZIP content) or faithful to the edited spec."""
    examples = 60 if os.environ.get("CI", "").lower() == "true" else 150
    command = [sys.executable, "-c", FUZZ_SCRIPT, str(FUZZ_CAP), str(FUZZ_MEMORY),
               str(examples), str(tmp_path), *map(str, originals.values())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcomes["error"] > 0 and outcomes["loaded"] > 0, outcomes
