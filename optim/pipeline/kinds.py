"""The module types a packed model file can hold: a registry, and the validation of specs.

``module_spec(module)`` describes a module tree as JSON (no arrays); ``build_module(spec)``
rebuilds it, freshly initialised, after ``check_module_spec`` has validated the whole spec.
Each module type is a ``StoredType`` registered under a name (``register_stored_type``): how
to describe it (``spec``), build it (``build``), validate an untrusted description
(``check``) and, for parametrizations, which of the parameter's arrays are stored as integer
symbols (``symbols``). The built-in entries are the leaf layers of ``minnet.nn`` (``_LEAVES``),
``Sequential``, NAS's ``Residual``, ``QuantSequential``, ``QuantStage``, ``FixedFakeQuantize``,
``optim.graph``'s ``GraphModule`` (``optim.pipeline.stored_graph``) and the parametrizations
``PruningMask``, ``SharedWeights`` and ``FixedFakeQuantize``.

A module with parametrizations (``minnet.nn.parametrize``) carries them in its spec as
``"parametrizations": {"weight": [spec, ...]}``, in chain order; only registered
parametrization types are stored, on the weight or bias of a Linear or Conv2d.
Tests: ``tests/optim/pipeline/test_pipeline_store.py``, ``tests/adversarial/test_optim_packed.py``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable

import numpy as np

from minnet import nn
from minnet.nn import parametrize as P
from optim.nas.build import Residual
from optim.prune.parametrize import PruningMask
from optim.quant import (FixedFakeQuantize, QConfig, QuantSequential, QuantStage, SharedWeights,
                         convert)

__all__ = ["PackedModelError", "StoredType", "STORED_TYPES", "register_stored_type",
           "module_spec", "build_module", "check_module_spec", "derived_keys", "finish_loaded",
           "symbol_arrays", "MAX_ELEMENTS", "MAX_SPEC_BYTES", "MAX_DEPTH", "MAX_MODULES",
           "MAX_DIM", "MAX_NDIM", "MAX_CLUSTERS", "MAX_ALPHABET", "MAX_CHAIN"]

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
MAX_CHAIN = 8  # parametrizations on one parameter


class PackedModelError(ValueError):
    """A packed model file (or spec) that cannot be loaded: ``field`` names the offending part
    (``module.children[3].args.in_features``, ``arrays[2].parts``, ``<file>`` for the
    container), ``path`` the file (None for a spec given directly)."""

    def __init__(self, field: str, reason: str, path: str | os.PathLike | None = None):
        super().__init__(f"{path}: {field}: {reason}" if path is not None else f"{field}: {reason}")
        self.field, self.reason, self.path = field, reason, path


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _int_pair(low: int) -> Callable[[Any], bool]:
    def check(value):
        pair = value if isinstance(value, list) else [value, value]
        return len(pair) == 2 and all(is_int(v) and low <= v <= MAX_DIM for v in pair)
    return check


# kind -> (check, what a valid value is)
ARG_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "count": (lambda v: is_int(v) and 1 <= v <= MAX_DIM, f"an integer in [1, {MAX_DIM}]"),
    "size": (_int_pair(1), f"an integer in [1, {MAX_DIM}] or a pair of them"),
    "offset": (_int_pair(0), f"an integer in [0, {MAX_DIM}] or a pair of them"),
    "stride": (lambda v: v is None or _int_pair(1)(v),
               f"null, an integer in [1, {MAX_DIM}] or a pair of them"),
    "positive": (lambda v: _is_real(v) and v > 0, "a finite number > 0"),
    "unit": (lambda v: _is_real(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "real": (_is_real, "a finite number"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "axis": (lambda v: is_int(v) and -MAX_NDIM <= v <= MAX_NDIM,
             f"an integer in [-{MAX_NDIM}, {MAX_NDIM}]"),
}


def _pair(value: Any) -> tuple[int, int]:
    return (value[0], value[-1]) if isinstance(value, list) else (value, value)


class Walk:
    """State of one validation: modules seen and elements the tree allocates."""

    def __init__(self, max_elements: int):
        self.modules, self.elements, self.max_elements = 0, 0, max_elements

    def allocate(self, field: str, elements: int) -> None:
        self.elements += elements
        if self.elements > self.max_elements:
            raise PackedModelError(field, f"the model's arrays would hold more than "
                                          f"{self.max_elements} elements (the cap)")


def require(spec: Any, field: str, keys: set[str]) -> None:
    if not isinstance(spec, dict):
        raise PackedModelError(field, f"must be a JSON object, got {type(spec).__name__}")
    if set(spec) != keys:
        missing, extra = sorted(keys - set(spec)), sorted(set(spec) - keys)
        raise PackedModelError(field, f"keys missing {missing}, unexpected {extra}")


def _json_value(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _from_json(value: Any) -> Any:
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


# ---- the registry ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StoredType:
    """How a packed model file holds one module type.

    ``spec(module)`` -> the JSON fields besides ``type`` (children through ``module_spec``);
    ``keys``: exactly those fields; ``build(spec)`` -> a fresh module (children through
    ``build_child``), or for a parametrization ``build(spec, shape)`` of the parameter's shape;
    ``check(spec, field, depth, walk)`` validates an untrusted spec (children through
    ``check_child``), counting what it allocates. Optional: ``derived(module)`` -> state keys
    (relative to the module) recomputed after loading, so not stored; ``finish(module)`` ->
    the module after its arrays are loaded; ``symbols(chain_prefix, index, chain)`` (a
    parametrization) -> ``{array name: symbol info}`` of the arrays it stores as codes."""
    cls: type
    keys: frozenset[str]
    spec: Callable[[nn.Module], dict]
    build: Callable[..., nn.Module]
    check: Callable[[dict, str, int, Walk], None]
    parametrization: bool = False
    derived: Callable[[nn.Module], set[str]] | None = None
    finish: Callable[[nn.Module], nn.Module] | None = None
    symbols: Callable[[str, int, Any], dict] | None = None


STORED_TYPES: dict[str, StoredType] = {}


def register_stored_type(name: str, stored: StoredType) -> None:
    """Make modules of exactly ``stored.cls`` storable under ``name`` (ValueError if taken)."""
    if name in STORED_TYPES:
        raise ValueError(f"a stored type named {name!r} is already registered")
    if not (isinstance(stored.cls, type) and issubclass(stored.cls, nn.Module)):
        raise TypeError(f"stored.cls must be a Module class, got {stored.cls!r}")
    STORED_TYPES[name] = stored


def _name_of(module: nn.Module) -> str:
    for name, stored in STORED_TYPES.items():
        if type(module) is stored.cls:
            return name
    raise TypeError(f"cannot store a module of type {type(module).__name__}; supported: "
                    f"{sorted(STORED_TYPES)}")


def module_spec(module: nn.Module) -> dict:
    """A JSON-ready description of ``module``'s structure (no arrays): ``{"type": ..., ...}``
    by its registered type, with its parametrizations. TypeError names an unregistered type."""
    name = _name_of(module)
    spec = {"type": name, **STORED_TYPES[name].spec(module)}
    chains = {tensor: [module_spec(p) for p in P.parametrizations_of(module, tensor)]
              for tensor in _parametrized_names(module)}
    if chains:
        spec["parametrizations"] = chains
    return spec


def _parametrized_names(module: nn.Module) -> list[str]:
    return [n for n in ("weight", "bias") if P.is_parametrized(module, n)]


def build_module(spec: dict, *, max_elements: int | None = None) -> nn.Module:
    """A freshly initialised module with the structure ``spec`` (from ``module_spec``).

    ``spec`` is validated whole first (``check_module_spec``): PackedModelError names the
    field, and nothing is allocated for a spec whose arrays exceed ``max_elements``
    (default ``MAX_ELEMENTS``)."""
    check_module_spec(spec, MAX_ELEMENTS if max_elements is None else max_elements)
    return build_checked(spec)


def build_checked(spec: dict) -> nn.Module:
    """``build_child`` of an already checked spec; PackedModelError for a check that the
    constructors make beyond ours."""
    try:
        return build_child(spec)
    except (TypeError, ValueError) as err:
        raise PackedModelError("module", str(err)) from None


def build_child(spec: dict) -> nn.Module:
    module = STORED_TYPES[spec["type"]].build(spec)
    for tensor, chain in spec.get("parametrizations", {}).items():
        shape = getattr(module, tensor).shape
        for p_spec in chain:
            P.register_parametrization(module, tensor,
                                       STORED_TYPES[p_spec["type"]].build(p_spec, shape))
    return module


def check_module_spec(spec: Any, max_elements: int = MAX_ELEMENTS) -> int:
    """Validate a module spec (as ``module_spec`` writes it) before anything is built: known
    module types with exactly their keys, every constructor argument of the right type and
    range (``ARG_KINDS``), nesting at most ``MAX_DEPTH``, at most ``MAX_MODULES`` modules and
    at most ``max_elements`` array elements allocated by the constructors. Returns that element
    count; raises ``PackedModelError`` naming the field. Test:
    ``tests/adversarial/test_optim_packed.py::test_malicious_files_raise_the_documented_error``.
    """
    walk = Walk(max_elements)
    check_child(spec, "module", 0, walk)
    return walk.elements


def check_child(spec: Any, field: str, depth: int, walk: Walk) -> None:
    if depth > MAX_DEPTH:
        raise PackedModelError(field, f"modules are nested deeper than {MAX_DEPTH} levels")
    walk.modules += 1
    if walk.modules > MAX_MODULES:
        raise PackedModelError(field, f"more than {MAX_MODULES} modules")
    if not isinstance(spec, dict):
        raise PackedModelError(field, f"must be a JSON object, got {type(spec).__name__}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in STORED_TYPES \
            or STORED_TYPES[kind].parametrization and kind not in _MODULE_AND_PARAMETRIZATION:
        raise PackedModelError(f"{field}.type", f"unknown module type {kind!r}; known: "
                               f"{sorted(STORED_TYPES)}")
    stored = STORED_TYPES[kind]
    optional = {"parametrizations"} if "parametrizations" in spec else set()
    require(spec, field, {"type"} | stored.keys | optional)
    stored.check(spec, field, depth, walk)
    if optional:
        _check_parametrizations(spec, field, depth, walk)


def _check_parametrizations(spec: dict, field: str, depth: int, walk: Walk) -> None:
    chains, field = spec["parametrizations"], f"{field}.parametrizations"
    shapes = _parameter_shapes(spec)
    if not isinstance(chains, dict) or not chains or not set(chains) <= set(shapes):
        raise PackedModelError(field, f"must map some of {sorted(shapes)} to lists of "
                                      f"parametrizations, got {chains!r}"[:300])
    for tensor, chain in chains.items():
        if not (isinstance(chain, list) and 1 <= len(chain) <= MAX_CHAIN):
            raise PackedModelError(f"{field}.{tensor}", f"must be a list of 1 to {MAX_CHAIN} "
                                                        f"parametrizations")
        for i, p_spec in enumerate(chain):
            where = f"{field}.{tensor}[{i}]"
            walk.modules += 1
            if walk.modules > MAX_MODULES:
                raise PackedModelError(where, f"more than {MAX_MODULES} modules")
            kind = p_spec.get("type") if isinstance(p_spec, dict) else None
            if kind not in STORED_TYPES or not STORED_TYPES[kind].parametrization:
                raise PackedModelError(f"{where}.type", f"unknown parametrization {kind!r}; "
                                       f"known: {sorted(_PARAMETRIZATIONS)}")
            require(p_spec, where, {"type"} | STORED_TYPES[kind].keys)
            STORED_TYPES[kind].check(p_spec, where, depth + 1, walk, shapes[tensor])


def _parameter_shapes(spec: dict) -> dict[str, tuple[int, ...]]:
    """The shapes of the parametrizable parameters of a checked leaf spec."""
    args = spec.get("args", {})
    if spec["type"] == "Linear":
        weight = (args["out_features"], args["in_features"])
    elif spec["type"] == "Conv2d":
        weight = (args["out_channels"], args["in_channels"] // args["groups"],
                  *_pair(args["kernel_size"]))
    else:
        return {}
    return {"weight": weight, **({"bias": (weight[0],)} if spec["bias"] else {})}


# ---- leaves --------------------------------------------------------------------------------

# Leaf layers: constructor arguments read back from attributes of the same name, each with
# the kind of value it must hold in a file (``ARG_KINDS``).
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


def _leaf_type(kind: str) -> StoredType:
    cls, arg_kinds = _LEAVES[kind]
    with_bias = kind in _WITH_BIAS

    def spec(module):
        args = {a: _json_value(getattr(module, a)) for a in arg_kinds}
        if not with_bias:
            return {"args": args}
        has_bias = P.is_parametrized(module, "bias") or module._parameters.get("bias") is not None
        return {"args": args, "bias": has_bias}

    def build(spec):
        args = {k: _from_json(v) for k, v in spec["args"].items()}
        return cls(**args, bias=spec["bias"]) if with_bias else cls(**args)

    def check(spec, field, depth, walk):
        _check_leaf(kind, spec, field, walk)

    return StoredType(cls, frozenset({"args"} | ({"bias"} if with_bias else set())), spec,
                      build, check)


def _check_leaf(kind: str, spec: dict, field: str, walk: Walk) -> None:
    kinds = _LEAVES[kind][1]
    require(spec["args"], f"{field}.args", set(kinds))
    args = spec["args"]
    for name, arg_kind in kinds.items():
        check, valid = ARG_KINDS[arg_kind]
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


for _kind in _LEAVES:
    register_stored_type(_kind, _leaf_type(_kind))


# ---- containers ---------------------------------------------------------------------------

def _check_children(spec, field, depth, walk):
    children = spec["children"]
    if not isinstance(children, list):
        raise PackedModelError(f"{field}.children", "must be a list")
    for i, child in enumerate(children):
        check_child(child, f"{field}.children[{i}]", depth + 1, walk)


register_stored_type("Sequential", StoredType(
    nn.Sequential, frozenset({"children"}),
    spec=lambda m: {"children": [module_spec(c) for c in m]},
    build=lambda s: nn.Sequential(*(build_child(c) for c in s["children"])),
    check=_check_children))

register_stored_type("Residual", StoredType(
    Residual, frozenset({"body"}),
    spec=lambda m: {"body": module_spec(m.body)},
    build=lambda s: Residual(build_child(s["body"])),
    check=lambda s, field, depth, walk: check_child(s["body"], f"{field}.body", depth + 1, walk)))


_QCONFIG_KINDS = {f.name: "int" if f.name.endswith("_bits") else
                  "str" if f.name.endswith("_observer") else "bool"
                  for f in dataclasses.fields(QConfig)}


def _check_qconfig(config: Any, field: str) -> None:
    if config is None:
        return
    if not isinstance(config, dict) or not set(config) <= set(_QCONFIG_KINDS):
        raise PackedModelError(field, f"must be null or an object with keys among "
                                      f"{sorted(_QCONFIG_KINDS)}, got {config!r}")
    types = {"int": is_int, "str": lambda v: isinstance(v, str),
             "bool": lambda v: isinstance(v, bool)}
    for key, value in config.items():
        if not types[_QCONFIG_KINDS[key]](value):
            raise PackedModelError(f"{field}.{key}", f"must be of type {_QCONFIG_KINDS[key]}, "
                                   f"got {value!r}")


def _check_quant_sequential(spec, field, depth, walk):
    _check_children(spec, field, depth, walk)
    _check_qconfig(spec["config"], f"{field}.config")


def _derived_bias_quantizers(model: QuantSequential) -> set[str]:
    """A frozen QuantSequential's int32 bias quantizers, rebuilt from the stored scales by
    ``convert`` (``finish``), so not stored."""
    if not model.frozen:
        return set()
    keys = set()
    for i, stage in enumerate(model):
        if isinstance(stage, QuantStage) and stage.bias_quant is not None:
            index = len(P.parametrizations_of(stage.layer, "bias")) - 1
            keys |= {f"{i}.layer.parametrizations.bias.{index}.{k}"
                     for k in stage.bias_quant.state_dict()}
    return keys


register_stored_type("QuantSequential", StoredType(
    QuantSequential, frozenset({"children", "config"}),
    spec=lambda m: {"children": [module_spec(c) for c in m],
                    "config": None if m.config is None else dataclasses.asdict(m.config)},
    build=lambda s: QuantSequential(*(build_child(c) for c in s["children"]),
                                    config=None if s["config"] is None else QConfig(**s["config"])),
    check=_check_quant_sequential, derived=_derived_bias_quantizers,
    finish=lambda m: convert(m) if m.frozen else m))


def _check_quant_stage(spec, field, depth, walk):
    layer = spec["layer"]
    if not isinstance(layer, dict) or layer.get("type") not in _WITH_BIAS:
        raise PackedModelError(f"{field}.layer", "must be a Linear or Conv2d layer")
    check_child(layer, f"{field}.layer", depth + 1, walk)
    if not isinstance(spec["relu"], bool):
        raise PackedModelError(f"{field}.relu", f"must be true or false, got {spec['relu']!r}")
    out = spec["output_quant"]
    if out is not None:
        if not isinstance(out, dict) or out.get("type") != "FixedFakeQuantize":
            raise PackedModelError(f"{field}.output_quant", "must be null or a FixedFakeQuantize")
        check_child(out, f"{field}.output_quant", depth + 1, walk)


register_stored_type("QuantStage", StoredType(
    QuantStage, frozenset({"layer", "relu", "output_quant"}),
    spec=lambda m: {"layer": module_spec(m.layer), "relu": m.relu,
                    "output_quant": None if m.output_quant is None
                    else module_spec(m.output_quant)},
    build=lambda s: QuantStage(build_child(s["layer"]), s["relu"], None,
                               None if s["output_quant"] is None
                               else build_child(s["output_quant"])),
    check=_check_quant_stage))


# ---- quantizers and parametrizations ------------------------------------------------------

def _check_fixed_quantizer(spec, field, depth, walk, parameter_shape=None):
    shape = spec["shape"]
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
            and all(is_int(d) and 1 <= d <= MAX_DIM for d in shape)):
        raise PackedModelError(f"{field}.shape", f"must be a list of at most {MAX_NDIM} "
                               f"integers in [1, {MAX_DIM}], got {shape!r}")
    for key in ("qmin", "qmax"):
        if not (is_int(spec[key]) and abs(spec[key]) <= MAX_ALPHABET):
            raise PackedModelError(f"{field}.{key}", f"must be an integer of magnitude at "
                                   f"most {MAX_ALPHABET}, got {spec[key]!r}")
    if spec["qmin"] > spec["qmax"]:
        raise PackedModelError(f"{field}.qmin", f"qmin={spec['qmin']} exceeds "
                               f"qmax={spec['qmax']}")
    if not (spec["axis"] is None or ARG_KINDS["axis"][0](spec["axis"])):
        raise PackedModelError(f"{field}.axis", f"must be null or "
                               f"{ARG_KINDS['axis'][1]}, got {spec['axis']!r}")
    if parameter_shape is not None and not (
            spec["axis"] == 0 and shape == [parameter_shape[0]]
            or spec["axis"] is None and math.prod(shape) == 1):
        raise PackedModelError(f"{field}.shape", f"a quantizer of a parameter of shape "
                               f"{list(parameter_shape)} needs axis 0 and shape "
                               f"[{parameter_shape[0]}] or axis null and one element")
    walk.allocate(field, 2 * math.prod(shape))


def _fixed_quantizer(spec, parameter_shape=None):
    shape = tuple(spec["shape"])
    return FixedFakeQuantize(np.ones(shape, np.float32), np.zeros(shape, np.int64),
                             spec["qmin"], spec["qmax"], spec["axis"])


MAX_CODED_ALPHABET = 1 << 16  # wider codes (int32 biases) are stored as their float values


def _coded_original(prefix: str, index: int, chain) -> dict:
    """The last quantizer of a chain of masks and itself stores its parameter as codes."""
    q = chain[index]
    if index != len(chain) - 1 or not all(isinstance(p, PruningMask) for p in chain[:index]) \
            or q.qmax - q.qmin + 1 > MAX_CODED_ALPHABET:
        return {}
    return {f"{prefix}original": {
        "alphabet": q.qmax - q.qmin + 1,
        "masks": [f"{prefix}{i}.mask" for i in range(index)],
        "quant": {"scale": f"{prefix}{index}.scale", "zero_point": f"{prefix}{index}.zero_point",
                  "qmin": q.qmin, "qmax": q.qmax, "axis": q.axis}}}


register_stored_type("FixedFakeQuantize", StoredType(
    FixedFakeQuantize, frozenset({"shape", "qmin", "qmax", "axis"}),
    spec=lambda m: {"shape": list(m.scale.shape), "qmin": m.qmin, "qmax": m.qmax,
                    "axis": m.axis},
    build=_fixed_quantizer, check=_check_fixed_quantizer, parametrization=True,
    symbols=_coded_original))
_MODULE_AND_PARAMETRIZATION = {"FixedFakeQuantize"}  # also a module of its own (activations)


def _check_mask(spec, field, depth, walk, parameter_shape):
    walk.allocate(field, math.prod(parameter_shape))


register_stored_type("PruningMask", StoredType(
    PruningMask, frozenset(), spec=lambda m: {},
    build=lambda s, shape: PruningMask(np.ones(shape, dtype=bool)),
    check=_check_mask, parametrization=True,
    symbols=lambda prefix, index, chain: {f"{prefix}original": {"mask": f"{prefix}{index}.mask"}}))


def _check_shared(spec, field, depth, walk, parameter_shape):
    n = spec["n_clusters"]
    if not (is_int(n) and 1 <= n <= MAX_CLUSTERS):
        raise PackedModelError(f"{field}.n_clusters", f"must be an integer in "
                                                      f"[1, {MAX_CLUSTERS}], got {n!r}")
    walk.allocate(field, math.prod(parameter_shape) + n)  # indices and centroids


register_stored_type("SharedWeights", StoredType(
    SharedWeights, frozenset({"n_clusters"}),
    spec=lambda m: {"n_clusters": int(m.centroids.shape[0])},
    build=lambda s, shape: SharedWeights(np.zeros(s["n_clusters"], np.float32),
                                         np.zeros(shape, np.int64)),
    check=_check_shared, parametrization=True,
    symbols=lambda prefix, index, chain: {
        f"{prefix}{index}.indices": {"alphabet": int(chain[index].centroids.shape[0])}}))

_PARAMETRIZATIONS = sorted(n for n, t in STORED_TYPES.items() if t.parametrization)


# ---- what the arrays of a stored module are ------------------------------------------------

def symbol_arrays(model: nn.Module) -> dict[str, dict]:
    """``{state key: info}`` of the arrays stored as integer symbols (``alphabet``, and the
    ``quant`` parameters of quantized codes) or as the kept entries of a ``mask``, as the
    registered parametrizations declare them; a later parametrization's claim comes first."""
    found: dict[str, dict] = {}
    for name, chain in model.named_modules():
        if not isinstance(chain, P.ParametrizationList):
            continue
        prefix = f"{name}."
        for index in reversed(range(len(chain))):
            stored = _stored_type(chain[index])
            if stored is not None and stored.symbols is not None:
                for key, info in stored.symbols(prefix, index, chain).items():
                    found.setdefault(key, info)
    return found


def derived_keys(model: nn.Module) -> set[str]:
    """State keys recomputed after loading (``StoredType.derived``), so not stored."""
    keys = set()
    for name, module in model.named_modules():
        stored = _stored_type(module)
        if stored is not None and stored.derived is not None:
            keys |= {f"{name}.{k}" if name else k for k in stored.derived(module)}
    return keys


def finish_loaded(model: nn.Module) -> nn.Module:
    """The loaded model after its root type's ``StoredType.finish``."""
    stored = _stored_type(model)
    return stored.finish(model) if stored is not None and stored.finish is not None else model


def _stored_type(module: nn.Module) -> StoredType | None:
    return next((t for t in STORED_TYPES.values() if type(module) is t.cls), None)


from . import stored_graph  # noqa: E402,F401  registers GraphModule
