r"""Mixed precision: one weight bit width per layer, chosen from measured sensitivities.

* ``layer_sensitivity``: how much the loss grows (or the accuracy drops) when only one layer's
  weights are quantized at :math:`b` bits, every other layer in float;
* ``greedy_bit_allocation``: lower the bit width of the layer that costs the least sensitivity
  per byte saved, until the weights fit a byte budget;
* ``quantize_mixed``: the converted model with those per-layer bit widths;
  ``mixed_model_bytes`` its storage.

Layers are named as in ``model.named_modules()`` (``"0"``, ``"3.0"``, ...), Linear and Conv2d
only, in forward order.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers

import numpy as np

from minnet import functional as F
from minnet import nn
from minnet.train import evaluate

from ._checks import check_count
from ._layers import LAYERS
from .fake_quant import FixedFakeQuantize, QuantSequential, QuantStage
from .ptq import calibrate, convert, prepare
from .qconfig import QConfig
from .ranges import check_bits
from .size import packed_bytes, quantized_model_bytes

METRICS = ("loss", "accuracy")


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Linear and Conv2d layers of ``model`` by name, in forward order (the order of the
    ``QuantStage`` s that ``prepare`` / ``convert`` make)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a minnet Module, got {type(model).__name__}")
    return {name: m for name, m in model.named_modules(remove_duplicate=False)
            if isinstance(m, LAYERS)}


def layer_weight_counts(model: nn.Module) -> dict[str, int]:
    """Number of weights of each quantizable layer (``layer_sizes`` for
    ``greedy_bit_allocation``)."""
    return {name: int(m.weight.size) for name, m in quantizable_layers(model).items()}


def _check_bit_widths(bits: object, name: str = "bits") -> tuple[int, ...]:
    """Distinct bit widths in [2, 16], highest first."""
    if isinstance(bits, (str, bytes)) or not hasattr(bits, "__iter__"):
        raise TypeError(f"{name} must be a sequence of bit widths, got {bits!r}")
    widths = []
    for b in bits:
        try:
            widths.append(check_bits(b))
        except ValueError as err:
            raise ValueError(f"{name}: {err} (got {name}={tuple(bits)!r})") from None
    if not widths:
        raise ValueError(f"{name} must hold at least one bit width, got {bits!r}")
    if len(set(widths)) != len(widths):
        raise ValueError(f"{name} must be distinct, got {tuple(widths)!r}")
    return tuple(sorted(widths, reverse=True))


def _check_names(given, known, name: str) -> None:
    unknown = [k for k in given if k not in known]
    if unknown:
        raise ValueError(f"{name} names unknown layer(s) {unknown}; the layers are {list(known)}")
    missing = [k for k in known if k not in given]
    if missing:
        raise ValueError(f"{name} is missing layer(s) {missing}")


def _check_assignment(assignment: object, names: list[str]) -> list[int | None]:
    """Per-stage bit widths (None: float weights) in forward order."""
    if not isinstance(assignment, dict):
        raise TypeError(f"assignment must be a dict layer name -> bits, got "
                        f"{type(assignment).__name__}")
    _check_names(assignment, names, "assignment")
    out = []
    for name in names:
        bits = assignment[name]
        if bits is not None:
            try:
                bits = check_bits(bits)
            except ValueError as err:
                raise ValueError(f"assignment[{name!r}]: {err}") from None
        out.append(bits)
    return out


def _converted_by_bits(model: nn.Module, widths, x, max_batches: int | None, *,
                       weight_only: bool, **options) -> dict[int, QuantSequential]:
    """``convert`` of ``model`` at each weight bit width (same activation calibration)."""
    if not weight_only and x is None:
        raise ValueError("data must hold calibration inputs when weight_only=False")
    out = {}
    for bits in widths:
        prepared = prepare(model, QConfig(weight_bits=bits, weight_only=weight_only, **options))
        if not weight_only:
            calibrate(prepared, x, max_batches=max_batches)
        out[bits] = convert(prepared)
    return out


def _assemble(converted: dict[int, QuantSequential], stage_bits: list[int | None]
              ) -> QuantSequential:
    """A model whose i-th ``QuantStage`` is taken from ``converted[stage_bits[i]]`` (weight and
    int32-bias quantizers of that width), or in float when the width is None (a float copy of
    the layer). The quantized modules are shared with ``converted``, not copied."""
    base = next(iter(converted.values()))
    stages = iter(stage_bits)
    modules = []
    for i, module in enumerate(base):
        if isinstance(module, QuantStage):
            bits = next(stages)
            if bits is None:
                module = QuantStage(module.float_layer(), module.relu, None, module.output_quant)
            else:
                module = converted[bits][i]
        modules.append(module)
    widest = max((b for b in stage_bits if b is not None), default=base.config.weight_bits)
    config = dataclasses.replace(base.config, weight_bits=widest)
    return QuantSequential(*modules, config=config).eval()


def _calibration_inputs(data):
    return data[0] if isinstance(data, tuple) else data


def quantize_mixed(model: nn.Module, assignment: dict[str, int | None], data=None, *,
                   weight_only: bool = True, activation_bits: int = 8,
                   weight_observer: str = "mse", activation_observer: str = "minmax",
                   max_batches: int | None = None) -> QuantSequential:
    """``model`` quantized with per-layer weight bit widths: ``assignment`` maps every
    quantizable layer's name to its bits in [2, 16] (None keeps that layer's weights in
    float). Weights are per-channel symmetric (``QConfig``'s scheme, ``weight_observer``
    ranges); with ``weight_only=False`` activations are quantized at ``activation_bits``
    with ranges calibrated on ``data`` (inputs ``x`` or an ``(x, y)`` pair, at most
    ``max_batches`` batches of 64).

    Built on the PTQ path: ``prepare`` → ``calibrate`` → ``convert`` once per distinct bit
    width, each stage taken from the model of its width (its int32 bias scale
    :math:`s_{in} s_w` uses its own weight scale). Bytes: ``mixed_model_bytes``.

    Checked by ``tests/optim/quant/test_quant_mixed.py::test_quantize_mixed_matches_uniform_ptq``
    and ``::test_quantize_mixed_takes_each_layer_from_its_width``.
    """
    names = list(quantizable_layers(model))
    stage_bits = _check_assignment(assignment, names)
    widths = sorted({b for b in stage_bits if b is not None}) or [8]
    converted = _converted_by_bits(
        model, widths, _calibration_inputs(data), max_batches, weight_only=weight_only,
        activation_bits=activation_bits, weight_observer=weight_observer,
        activation_observer=activation_observer)
    return copy.deepcopy(_assemble(converted, stage_bits))


def _stage_bits(stage: QuantStage) -> int:
    """Bit width of a stage's weight codes, from its integer range."""
    quant = stage.weight_quant
    if not isinstance(quant, FixedFakeQuantize):
        raise TypeError("every layer of model must have quantized weights to count its bytes")
    return (quant.qmax - quant.qmin).bit_length()


def mixed_model_bytes(model: QuantSequential) -> dict[str, int | float]:
    r"""``quantized_model_bytes`` with each layer's weight codes packed at its own bit width:
    ``weights`` :math:`= \sum_l \lceil N_l b_l / 8 \rceil`, the other entries as there.

    Checked by ``tests/optim/quant/test_quant_mixed.py::test_mixed_model_bytes``.
    """
    sizes = quantized_model_bytes(model)
    weights = sum(packed_bytes(m.float_weight().size, _stage_bits(m))
                  for m in model.modules() if isinstance(m, QuantStage))
    sizes["total"] += weights - sizes["weights"]
    sizes["weights"] = weights
    sizes["ratio"] = sizes["total"] / sizes["fp32"]
    return sizes


def layer_sensitivity(model: nn.Module, data, bits=(8, 4, 3, 2), *, weight_only: bool = True,
                      observer: str = "mse", metric: str = "loss", activation_bits: int = 8,
                      batch_size: int = 256, max_batches: int | None = None
                      ) -> dict[str, dict[int, float]]:
    r"""One-layer-at-a-time sensitivity: for each Linear/Conv2d :math:`l` and width :math:`b`,

    .. math::
        S_l(b) = \mathcal{L}(\hat W_l^{(b)},\ W_{-l}) - \mathcal{L}(W)
        \quad\text{or}\quad
        S_l(b) = \operatorname{acc}(W) - \operatorname{acc}(\hat W_l^{(b)},\ W_{-l})

    (``metric="loss"``: mean cross-entropy increase; ``"accuracy"``: accuracy drop as a
    fraction), on ``data = (x, y)``, where only layer :math:`l`'s weights are replaced by their
    per-channel symmetric :math:`b`-bit fake quantization (``observer`` ranges) and all other
    weights stay in float. With ``weight_only=False`` activations are quantized at
    ``activation_bits`` (calibrated on ``x``) in both terms, so :math:`S_l(b)` is the weight's
    share on top of activation quantization.

    Built on the PTQ path (``prepare`` / ``convert`` at each width, BatchNorm folded), so it
    measures exactly the layers that ``quantize_mixed`` produces. This is the direct
    measurement that HAWQ (Dong et al. 2019, "Hessian AWare Quantization", section 3)
    approximates by the top Hessian eigenvalue of each block: a second-order expansion gives
    :math:`S_l(b) \approx \tfrac12 \Delta W_l^\top H_l \Delta W_l`.

    Returns ``{layer name: {bits: S}}``. Checked by
    ``tests/optim/quant/test_quant_mixed.py::test_sensitivity_vanishes_at_16_bits_and_grows_as_bits_drop``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not isinstance(data, tuple) or len(data) != 2:
        raise TypeError("data must be an (x, y) pair of arrays")
    widths = _check_bit_widths(bits)
    names = list(quantizable_layers(model))
    converted = _converted_by_bits(model, widths, data[0], max_batches, weight_only=weight_only,
                                   activation_bits=activation_bits, weight_observer=observer)

    def score(stage_bits):
        result = evaluate(_assemble(converted, stage_bits), data, batch_size, F.cross_entropy)
        return result["loss"] if metric == "loss" else -result["accuracy"]

    reference = score([None] * len(names))
    table = {}
    for i, name in enumerate(names):
        stage_bits = [None] * len(names)
        table[name] = {}
        for b in widths:
            stage_bits[i] = b
            table[name][b] = score(stage_bits) - reference
    return table


def _check_sizes(layer_sizes: object) -> dict[str, int]:
    if not isinstance(layer_sizes, dict) or not layer_sizes:
        raise TypeError(f"layer_sizes must be a non-empty dict layer name -> number of weights, "
                        f"got {layer_sizes!r}")
    return {k: check_count(v, f"layer_sizes[{k!r}]") for k, v in layer_sizes.items()}


def _check_table(sensitivity: object, names, widths) -> dict[str, dict[int, float]]:
    if not isinstance(sensitivity, dict):
        raise TypeError(f"sensitivity must be a dict layer name -> {{bits: value}}, got "
                        f"{type(sensitivity).__name__}")
    _check_names(sensitivity, names, "sensitivity")
    table = {}
    for name in names:
        row = sensitivity[name]
        missing = [b for b in widths if b not in row]
        if missing:
            raise ValueError(f"sensitivity[{name!r}] has no value for bits {missing}")
        values = {b: row[b] for b in widths}
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values.values()):
            raise ValueError(f"sensitivity[{name!r}] must hold finite numbers, got {values}")
        table[name] = {b: float(v) for b, v in values.items()}
    return table


def weight_bytes(layer_sizes: dict[str, int], assignment: dict[str, int]) -> int:
    r"""Packed weight bytes of an allocation, :math:`\sum_l \lceil n_l b_l / 8 \rceil`."""
    return sum(packed_bytes(n, assignment[name]) for name, n in layer_sizes.items())


def greedy_bit_allocation(sensitivity: dict[str, dict[int, float]], layer_sizes: dict[str, int],
                          budget_bytes: float, bits=None) -> dict[str, int]:
    r"""Per-layer weight bit widths whose packed weights fit ``budget_bytes``, chosen greedily.

    Problem: minimise :math:`\sum_l S_l(b_l)` subject to
    :math:`\sum_l \lceil n_l b_l / 8 \rceil \le B`, each :math:`b_l` in ``bits``
    (default: the widths of the sensitivity table), :math:`n_l` = ``layer_sizes[l]``.

    Greedy: start every layer at the highest width; while the weights exceed :math:`B`, take
    the step :math:`b_l \to b_l'` (the next lower width of layer :math:`l`) of least cost per
    byte saved,

    .. math::
        r_l = \frac{S_l(b_l') - S_l(b_l)}{n_l\,(b_l - b_l') / 8},

    ties to the earlier layer. The sequence of steps does not depend on :math:`B`, so a
    larger budget never lowers any layer's width. When every :math:`S_l` is non-decreasing as
    bits drop and each layer's :math:`r_l` is non-decreasing along its own steps (convex
    costs), every greedy allocation minimises :math:`\sum_l S_l` among all allocations no
    larger than itself: it minimises the Lagrangian :math:`\sum_l S_l(b_l) + \lambda
    \sum_l n_l b_l / 8` at :math:`\lambda` = its last step's :math:`r` (Everett 1963,
    "Generalized Lagrange multiplier method", Operations Research 11(3), theorem 1).

    ValueError if even every layer at the lowest width exceeds :math:`B` (the message gives
    that smallest size). Checked by ``tests/optim/quant/test_quant_mixed.py::
    test_greedy_is_optimal_for_convex_costs`` and ``::test_greedy_is_monotone_in_budget``.
    """
    sizes = _check_sizes(layer_sizes)
    names = list(sizes)
    if bits is None:
        if not isinstance(sensitivity, dict) or not sensitivity:
            raise TypeError("sensitivity must be a non-empty dict layer name -> {bits: value}")
        bits = next(iter(sensitivity.values())).keys()
    widths = _check_bit_widths(bits)
    table = _check_table(sensitivity, names, widths)
    if not isinstance(budget_bytes, numbers.Real) or not math.isfinite(budget_bytes):
        raise ValueError(f"budget_bytes must be a finite number, got {budget_bytes!r}")
    smallest = weight_bytes(sizes, dict.fromkeys(names, widths[-1]))
    if smallest > budget_bytes:
        raise ValueError(f"budget_bytes={budget_bytes} is below the smallest achievable size "
                         f"{smallest} bytes (every layer at {widths[-1]} bits)")
    level = dict.fromkeys(names, 0)  # index into widths, 0 = highest

    def assignment():
        return {name: widths[level[name]] for name in names}

    while weight_bytes(sizes, assignment()) > budget_bytes:
        def ratio(name):
            b, lower = widths[level[name]], widths[level[name] + 1]
            return (table[name][lower] - table[name][b]) / (sizes[name] * (b - lower) / 8)

        steps = [name for name in names if level[name] + 1 < len(widths)]
        level[min(steps, key=ratio)] += 1
    return assignment()
