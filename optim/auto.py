r"""Accuracy-targeted compression: per-layer sparsity and weight bit width chosen together so
that the model is as small (or as cheap) as possible within an accuracy tolerance.

The steps, each a function here:

1. **Options and their compression.** Every Linear/Conv2d layer :math:`l` takes one option
   :math:`k = (s, b)`: prune the fraction :math:`s` of its weights of smallest magnitude
   (Han et al. 2015), then quantize the kept ones per output channel, symmetric, at
   :math:`b` bits (``compress_weight``).
2. **One-layer sensitivities** ``sensitivity_table``: the loss increase or the accuracy drop
   when only layer :math:`l` takes option :math:`k` (a pruned option optionally after a short
   fine-tuning, NetAdapt's short-term fine-tuning), and HAWQ-V2's Hessian-trace criterion
   ``hawq_v2_table`` (Dong et al. 2020). ``additivity`` measures how well their sum
   predicts the change when all layers change together (Pearson correlation over random joint
   configurations).
3. **Costs** ``option_costs``: packed bytes, multiply-accumulates, energy (``ENERGY_PJ``,
   Horowitz 2014's 45 nm figures) or measured batch-1 latency (``latency_table``) of each
   layer under each option. For ``"latency"`` the sparsity removes whole output channels
   (``compress_weight(..., structured=True)``, Li et al. 2017), which the candidates then
   lose physically (``optim.prune.shrink``): unstructured zeros do not make dense kernels
   faster. One channel of each layer stays (``channel_sparsity``), and the output layer
   keeps all of its (they are the model's outputs); among equally fast options the smaller
   wins (bytes are added with a weight below 1 % of a layer's time).
4. **Allocation** ``allocate``: a 0–1 integer programme over one-hot choices, solved by
   ``scipy.optimize.milp``: the cheapest model whose predicted drop is within a tolerance, or
   the smallest predicted drop within a cost budget.
5. **Verify** ``search_tolerance``: measure allocations on held-out validation data, searching
   the programme's limit for the cheapest one that measures within the tolerance; **repair**
   ``verify_and_repair``: if none does, back off the layer whose current option is predicted
   to cost the most accuracy (equal predictions: the most loss) until the measured drop fits.
   For ``"latency"`` the search runs without cuts first, then ``grow_cuts`` adds one channel
   cut at a time (NetAdapt's forward steps), keeping those that still measure within the
   tolerance.

``compress_to_target`` runs the whole procedure on a model (the pipeline's ``auto`` stage).
Tests: ``tests/optim/test_auto.py`` and ``tests/optim/test_auto_stage.py``.
"""
from __future__ import annotations

import copy
import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.optimize

import minnet
from minnet import functional as F
from minnet import nn
from minnet.io import atomic_write
from minnet.ops.conv import int_pair
from minnet.train import evaluate
from optim import metrics
from optim.prune import apply_mask, ln_structured_mask, magnitude_mask, remove_all, shrink
from optim.prune.scores import finite_difference_hvp, hutchinson_diagonal
from optim.quant.affine import fake_quantize
from optim.quant.int_conv import conv2d_kernel
from optim.quant.int_linear import linear_kernel
from optim.quant.mixed import quantizable_layers, quantize_mixed
from optim.quant.qconfig import QConfig
from optim.quant.ranges import check_bits
from optim.quant.requant import quantize_multiplier

__all__ = ["ENERGY_PJ", "OBJECTIVES", "Option", "make_options", "channel_sparsity",
           "compress_weight", "layer_macs", "latency_table", "option_costs",
           "energy_per_inference", "sensitivity_table", "hawq_v2_table", "joint_change",
           "additivity", "allocate", "back_off", "verify_and_repair", "grow_cuts",
           "search_tolerance", "validation_split", "paired_drop", "compress_to_target"]

# the predicted drop of an option a layer cannot take (finite, for the integer programme)
NOT_APPLICABLE = 1e9

# Energy per operation in picojoules, 45 nm CMOS at 0.9 V: Horowitz 2014, "Computing's energy
# problem (and what we can do about it)", ISSCC, figure 1.1.9; the 32-bit rows are the table
# Han et al. 2016 (Deep Compression, table 1 / figure 1) reproduce.
ENERGY_PJ = {
    "int8_add": 0.03, "int32_add": 0.1, "fp32_add": 0.9,
    "int8_mult": 0.2, "int32_mult": 3.1, "fp32_mult": 3.7,
    "sram_32bit": 5.0,  # 32-bit read from an 8 KB SRAM
    "dram_32bit": 640.0,  # 32-bit DRAM read
}
OBJECTIVES = ("bytes", "macs", "energy", "latency")
METRICS = ("loss", "accuracy")

Option = tuple  # (sparsity in [0, 1), bits in [2, 16])


def make_options(sparsities: Sequence[float], bits: Sequence[int]) -> list[Option]:
    """Every ``(s, b)`` pair of the given sparsities and bit widths (the per-layer choices),
    checked: sparsities in [0, 1), bits in [2, 16], each list non-empty and distinct."""
    sparsities, bits = list(sparsities), list(bits)
    if not sparsities or len(set(sparsities)) != len(sparsities) or any(
            not isinstance(s, (int, float)) or not 0 <= s < 1 for s in sparsities):
        raise ValueError(f"sparsities must be distinct numbers in [0, 1), got {sparsities!r}")
    if not bits or len(set(bits)) != len(bits):
        raise ValueError(f"bits must be distinct bit widths, got {bits!r}")
    return [(float(s), check_bits(b)) for s in sorted(sparsities)
            for b in sorted(bits, reverse=True)]


def channel_sparsity(sparsity: float, channels: int) -> float:
    """The fraction of a layer's ``channels`` output channels that structured pruning removes
    for option sparsity ``sparsity``: capped at (C - 1) / C, so at least one channel stays (a
    layer without outputs would make the model constant). Test:
    ``tests/optim/test_auto_stage.py::test_structured_options_keep_one_channel_per_layer``."""
    return min(float(sparsity), (channels - 1) / channels)


def compress_weight(w: np.ndarray, sparsity: float, bits: int, observer: str = "mse",
                    structured: bool = False) -> np.ndarray:
    r"""The weight a layer computes with under option :math:`(s, b)`:

    .. math:: C_{s,b}(W) = Q_b(W \odot M_s), \qquad
              M_s = \text{keep all but the } \operatorname{round}(s\,|W|)
              \text{ entries of smallest } |w|,

    or, ``structured``, all but the :math:`\operatorname{round}(s\,C_{out})` output channels
    of smallest :math:`\ell_1` norm (Li et al. 2017, "Pruning Filters for Efficient
    ConvNets", section 3.1), one channel at least (``channel_sparsity``);

    :math:`Q_b` the per-output-channel symmetric fake quantization at :math:`b` bits whose
    range is set by ``observer`` on the pruned weight (``QConfig``'s weight scheme, so that
    ``quantize_mixed`` builds the same weights); zero stays zero. Sources: Han et al. 2015,
    section 3 (magnitude pruning); Jacob et al. 2018, section 2 (quantization).
    Test: ``tests/optim/test_auto.py::test_compress_weight_prunes_then_quantizes``.
    """
    w = np.asarray(w)
    if sparsity == 0:
        pruned = w.copy()
    elif structured:
        pruned = w * ln_structured_mask(w, channel_sparsity(sparsity, w.shape[0]), n=1)
    else:
        pruned = w * magnitude_mask(w, sparsity)
    observe = QConfig(weight_bits=bits, weight_observer=observer).weight_observer_instance()
    observe(pruned)
    scale, zero_point = observe.calculate_qparams()
    return fake_quantize(pruned, scale, zero_point, observe.qmin, observe.qmax, axis=0
                         ).astype(w.dtype)


def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    r"""Multiply-accumulates per image of each Linear/Conv2d layer: output elements times
    the fan-in of one output, :math:`M_l = |y_l| \cdot |W_l| / C_{out}`. Test:
    ``tests/optim/test_auto.py::test_layer_macs_by_hand``."""
    layers = quantizable_layers(model)
    counts: dict[str, int] = {}

    def hook(name):
        def record(module, inputs, output):
            fan_in = module.weight.data.size // module.weight.shape[0]
            counts[name] = int(output.data.size // input_shape[0] * fan_in)
        return record
    metrics.forward_with_hooks(model, input_shape, {m: hook(n) for n, m in layers.items()})
    return counts


def _layer_call(layer: nn.Module, input_shape: tuple[int, ...], keep: int, engine: str
                ) -> Callable[[], object]:
    """One forward call of ``layer`` keeping its first ``keep`` output channels, on a random
    input of ``input_shape`` (whose dim 1 may be narrower than the layer's: its first inputs
    kept): the float layer in eval mode (``"minnet"``), or the integer engine's kernel as
    ``optim.quant.IntegerModel`` calls it (``"integer"``: uint8 codes in, read-only int8
    weights, fused requantization and ReLU)."""
    rng = np.random.default_rng(0)
    w_shape = (keep, input_shape[1]) + layer.weight.shape[2:]
    if engine == "minnet":
        kept = copy.deepcopy(layer).eval()
        kept.weight.data = np.ascontiguousarray(layer.weight.data[:keep, :input_shape[1]])
        if layer.bias is not None:
            kept.bias.data = np.ascontiguousarray(layer.bias.data[:keep])
        return partial(kept, minnet.Tensor(rng.standard_normal(input_shape).astype(np.float32)))
    x_q = rng.integers(0, 256, input_shape, dtype=np.uint8)
    w_q = rng.integers(-127, 128, w_shape, dtype=np.int8)
    w_q.flags.writeable = False  # frozen, as the engine's: the kernels may keep a packed copy
    M0, shift = quantize_multiplier(np.full(keep, 1.0 / (255 * 127 * w_q[0].size)))
    args = (x_q, 128, w_q, np.zeros(keep, np.int32), M0, shift, 0, 0, 255, True)
    if isinstance(layer, nn.Conv2d):
        geometry = (int_pair("stride", layer.stride, 1), int_pair("padding", layer.padding, 0),
                    int_pair("dilation", layer.dilation, 1))
        return lambda: conv2d_kernel(*args, *geometry)
    return lambda: linear_kernel(*args)


def _fastest_times(runs: dict, repeats: int) -> dict:
    """The fastest of ``repeats`` timed calls of each of ``runs`` (``{key: call}``), the calls
    interleaved round by round so that a burst of other load meets all of them alike; other
    load only adds time, so the minimum is the stablest estimate of a short deterministic
    call."""
    for run in runs.values():
        run()  # warm-up (Numba compilation, caches)
    fastest = dict.fromkeys(runs, math.inf)
    for _ in range(repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            fastest[key] = min(fastest[key], time.perf_counter() - start)
    return fastest


def latency_table(model: nn.Module, input_shape: tuple[int, ...], sparsities: Sequence[float],
                  repeats: int = 50, engine: str = "minnet") -> dict[str, dict[float, float]]:
    r"""Measured batch time in seconds (``{layer: {s: seconds}}``) that layer :math:`l`
    costs when it keeps :math:`C_l - r` of its :math:`C_l` output channels,
    :math:`r = \operatorname{round}(s\,C_l)`, with the input shape it sees in ``model``
    (``input_shape`` is the model's, batch included) — NetAdapt's per-layer latency look-up
    table (Yang et al. 2018, section 3.3), which is indexed by a layer's input and output
    channels. The next Linear/Conv2d layer :math:`l+1` (its consumer in a sequential model)
    then loses :math:`r k` of its inputs (:math:`k` inputs per channel: 1 after a
    convolution, :math:`H W` after flattening), and that saving is charged to :math:`l`:

    .. math:: c_l(s) = T_l(C_l - r;\ \text{all inputs})
              + T_{l+1}(\text{all outputs};\ I_{l+1} - r k)
              - T_{l+1}(\text{all outputs};\ I_{l+1}),

    each :math:`T` the fastest of ``repeats`` runs of the layer alone, on the engine that will
    run the model: ``"minnet"``, the float layer in eval mode, or ``"integer"``, the
    integer-only kernel that ``optim.quant.IntegerModel`` runs for it. Where two neighbours
    are both cut, the sum over layers counts the weights they both remove twice, so it is
    then slightly optimistic.
    Tests: ``tests/optim/test_auto.py::test_latency_table_times_every_layer_at_every_sparsity``,
    ``::test_integer_latency_table_times_the_integer_kernels``."""
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if engine not in ("minnet", "integer"):
        raise ValueError(f"engine must be 'minnet' or 'integer', got {engine!r}")
    layers = quantizable_layers(model)
    inputs: dict[str, tuple[int, ...]] = {}

    def hook(name):
        def record(module, args, output):
            inputs[name] = args[0].shape
        return record
    metrics.forward_with_hooks(model, input_shape, {m: hook(n) for n, m in layers.items()})
    names = list(layers)
    runs, consumers = {}, {}
    with minnet.no_grad():
        for i, (name, layer) in enumerate(layers.items()):
            channels = layer.weight.shape[0]
            shape = inputs[names[i + 1]] if i + 1 < len(names) else None
            if shape is not None and shape[1] % channels == 0:  # fed channel by channel
                consumer = layers[names[i + 1]]
                consumers[name] = consumer
                runs[name, "consumer", 0] = _layer_call(consumer, shape, consumer.weight.shape[0],
                                                        engine)
            for s in sparsities:
                removed = int(round(channel_sparsity(s, channels) * channels))
                runs[name, "own", s] = _layer_call(layer, inputs[name], channels - removed, engine)
                if name in consumers and removed:
                    consumer = consumers[name]
                    narrower = shape[:1] + (shape[1] - removed * (shape[1] // channels),) \
                        + shape[2:]
                    runs[name, "consumer", s] = _layer_call(consumer, narrower,
                                                            consumer.weight.shape[0], engine)
        times = _fastest_times(runs, repeats)
    table: dict[str, dict[float, float]] = {}
    for name in names:
        table[name] = {}
        for s in sparsities:
            saved = times[name, "consumer", s] - times[name, "consumer", 0] \
                if (name, "consumer", s) in times and s else 0.0
            table[name][float(s)] = times[name, "own", s] + saved
    return table


def _mask_entropy_bits(n: int, sparsity: float) -> float:
    """Shannon's bound on the bits of a mask of ``n`` entries with ``sparsity`` zeros."""
    p = sparsity
    if p <= 0 or p >= 1:
        return 0.0
    return n * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def energy_per_inference(macs: float, weight_bits: float, arithmetic: str = "int8") -> float:
    r"""Energy of one inference in picojoules, by Horowitz 2014's per-operation table
    (``ENERGY_PJ``), in Deep Compression's accounting (Han et al. 2016, section 1): every
    weight bit fetched once from DRAM and every multiply-accumulate one multiply and one add,

    .. math:: E = M\,(e_\times + e_+) + \frac{W_{bits}}{32}\, e_{\mathrm{DRAM}},

    with :math:`e_\times, e_+` = 3.7, 0.9 pJ (``"fp32"``) or, for integer weights of at most
    8 bits and 8-bit activations (``"int8"``), the 8-bit multiply 0.2 pJ and a 32-bit
    accumulator add 0.1 pJ. Activations are left out (they stay on chip).
    Test: ``tests/optim/test_auto.py::test_energy_by_hand``.
    """
    if arithmetic not in ("int8", "fp32"):
        raise ValueError(f"arithmetic must be 'int8' or 'fp32', got {arithmetic!r}")
    if not (macs >= 0 and weight_bits >= 0):
        raise ValueError(f"macs and weight_bits must be >= 0, got {macs!r}, {weight_bits!r}")
    if arithmetic == "fp32":
        per_mac = ENERGY_PJ["fp32_mult"] + ENERGY_PJ["fp32_add"]
    else:
        per_mac = ENERGY_PJ["int8_mult"] + ENERGY_PJ["int32_add"]
    return macs * per_mac + weight_bits / 32 * ENERGY_PJ["dram_32bit"]


def option_costs(sizes: dict[str, int], channels: dict[str, int], macs: dict[str, int],
                 options: Sequence[Option], objective: str,
                 latency: dict[str, dict[float, float]] | None = None,
                 zeros: dict[str, float] | None = None) -> np.ndarray:
    r"""Cost :math:`c_{lk}` of layer :math:`l` (``sizes``: its :math:`n_l` weights,
    ``channels``: its :math:`C_l` output channels, ``macs``: its :math:`M_l`) under option
    :math:`k = (s, b)`, as an array (layers × options):

    - ``"bytes"``: :math:`\big(n_l(1-s)b + n_l H_2(s)\big)/8 + 4 C_l` — the kept codes, the
      mask at its entropy bound (:math:`H_2` the binary entropy; the store's Huffman and
      relative-index codes approach it) and a float32 scale per channel;
    - ``"macs"``: :math:`M_l (1 - s)`, the multiply-accumulates with a non-zero weight;
    - ``"energy"``: ``energy_per_inference`` of :math:`M_l(1-s)` 8-bit MACs and the
      :math:`n_l(1-s)b + n_l H_2(s)` weight bits, in picojoules;
    - ``"latency"``: ``latency[l][s]``, the layer's measured time with the fraction :math:`s`
      of its output channels removed (``latency_table``), whatever :math:`b`.

    ``zeros``: the fraction of each layer's weights already zero (a pruned input keeps them),
    so that bytes, MACs and energy count :math:`\max(s, z_l)` for :math:`s`.

    Test: ``tests/optim/test_auto.py::test_option_costs_by_hand``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "latency" and latency is None:
        raise ValueError("the latency objective needs latency (see latency_table)")
    costs = np.empty((len(sizes), len(options)))
    for i, name in enumerate(sizes):
        n = sizes[name]
        for k, (s, b) in enumerate(options):
            if zeros is not None and objective != "latency":
                s = max(s, zeros[name])
            weight_bits = n * (1 - s) * b + _mask_entropy_bits(n, s)
            if objective == "bytes":
                costs[i, k] = weight_bits / 8 + 4 * channels[name]
            elif objective == "macs":
                costs[i, k] = macs[name] * (1 - s)
            elif objective == "latency":
                costs[i, k] = latency[name][s]
            else:
                costs[i, k] = energy_per_inference(macs[name] * (1 - s), weight_bits)
    return costs


def _with_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> nn.Module:
    """A copy of ``model`` (pruning made permanent) with the named layers' weights replaced."""
    out = remove_all(copy.deepcopy(model))
    layers = quantizable_layers(out)
    for name, w in weights.items():
        layers[name].weight.data = w
    return out


def _scores(model: nn.Module, data) -> dict[str, float]:
    """Loss and minus the accuracy in percentage points: larger is worse in both."""
    result = evaluate(model, data, 500, F.cross_entropy)
    return {"loss": result["loss"], "accuracy": -100.0 * result["accuracy"]}


def _score(model: nn.Module, data, metric: str) -> float:
    return _scores(model, data)[metric]


def joint_change(model: nn.Module, data, choice: dict[str, Option], metric: str = "loss",
                 observer: str = "mse", structured: bool = False) -> float:
    r"""The measured change :math:`\mathcal{L}(C(W)) - \mathcal{L}(W)` (``"loss"``) or the
    accuracy drop in percentage points (``"accuracy"``) on ``data = (x, y)`` when each layer
    named in ``choice`` takes its option (``compress_weight``) and the others stay as they
    are (``structured``: sparsity removes output channels). Test:
    ``tests/optim/test_auto.py::test_additivity_matches_brute_force``."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return (_changed_score(model, data, choice, metric, observer, structured)
            - _score(model, data, metric))


def _changed_scores(model: nn.Module, data, choice: dict[str, Option], observer: str,
                    structured: bool) -> dict[str, float]:
    layers = quantizable_layers(model)
    weights = {n: compress_weight(layers[n].weight.data, *opt, observer=observer,
                                  structured=structured)
               for n, opt in choice.items()}
    return _scores(_with_weights(model, weights), data)


def _changed_score(model: nn.Module, data, choice: dict[str, Option], metric: str,
                   observer: str, structured: bool) -> float:
    return _changed_scores(model, data, choice, observer, structured)[metric]


def sensitivity_table(model: nn.Module, data, options: Sequence[Option], metric: str = "loss",
                      observer: str = "mse", structured: bool = False,
                      recover: Callable[[nn.Module], None] | None = None) -> np.ndarray:
    r"""One-layer sensitivities (layers × options): :math:`S_{lk}` = ``joint_change`` when
    only layer :math:`l` takes option :math:`k` — the direct measurement that
    ``optim.quant.mixed.layer_sensitivity`` makes for bit widths alone, here for pruning and
    quantization together. Rows follow ``quantizable_layers(model)``.

    ``recover(model)``, optional, fine-tunes a model in place keeping its pruning masks: then
    a pruned option :math:`(s > 0, b)` is measured as the candidates are built — layer
    :math:`l` pruned alone, the model fine-tuned by ``recover``, the layer quantized — the
    short-term fine-tuning that NetAdapt gives each proposal before measuring it (Yang et al.
    2018, sections 3.2-3.3): without it, a pruning that fine-tuning recovers looks as costly as
    it is before any retraining (removing a quarter of a convolution's channels: several
    points).
    Tests: ``tests/optim/test_auto.py::test_sensitivity_table_is_one_layer_joint_change``,
    ``::test_recovered_sensitivities_prune_then_fine_tune``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return _sensitivity_tables(model, data, options, observer, structured, recover)[metric]


def _recovered_scores(model: nn.Module, data, name: str, options: Sequence[Option],
                      observer: str, structured: bool,
                      recover: Callable[[nn.Module], None]) -> list[dict[str, float]]:
    """Scores of ``model`` with only layer ``name`` at each option, its pruning first
    recovered: per sparsity :math:`s > 0`, the layer pruned alone (mask kept), ``recover``
    (a short fine-tuning of the whole model), then the layer quantized at each bit width."""
    recovered: dict[float, nn.Module] = {}
    scores = []
    for s, b in options:
        if s == 0:
            scores.append(_changed_scores(model, data, {name: (s, b)}, observer, structured))
            continue
        if s not in recovered:
            pruned = _masked_copy(model, {name: s}, structured)
            recover(pruned)
            recovered[s] = remove_all(pruned)
        w = quantizable_layers(recovered[s])[name].weight.data
        weight = compress_weight(w, 0.0, b, observer=observer)
        scores.append(_scores(_with_weights(recovered[s], {name: weight}), data))
    return scores


def _sensitivity_tables(model: nn.Module, data, options: Sequence[Option], observer: str,
                        structured: bool, recover: Callable[[nn.Module], None] | None = None
                        ) -> dict[str, np.ndarray]:
    """``sensitivity_table`` for every metric from one evaluation per (layer, option); with
    ``recover``, the pruned options after a short fine-tuning (``_recovered_scores``)."""
    reference = _scores(model, data)
    if recover is None:
        rows = [[_changed_scores(model, data, {name: opt}, observer, structured)
                 for opt in options] for name in quantizable_layers(model)]
    else:
        rows = [_recovered_scores(model, data, name, options, observer, structured, recover)
                for name in quantizable_layers(model)]
    return {m: np.array([[r[m] - reference[m] for r in row] for row in rows]) for m in METRICS}


def _float64_loss_grad(model: nn.Module, data, name: str) -> Callable[[np.ndarray], np.ndarray]:
    """``w -> dL/dW_name`` of the mean cross-entropy on ``data`` in float64."""
    model = remove_all(copy.deepcopy(model)).eval()
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    layer = quantizable_layers(model)[name]
    x, y = np.asarray(data[0], np.float64), data[1]

    def grad(w: np.ndarray) -> np.ndarray:
        layer.weight.data = np.asarray(w, np.float64)
        model.zero_grad()
        F.cross_entropy(model(minnet.Tensor(x)), y).backward()
        return layer.weight.grad.copy()
    return grad


def hawq_v2_table(model: nn.Module, data, options: Sequence[Option], n_samples: int = 16,
                  rng: np.random.Generator | int | None = 0, observer: str = "mse",
                  eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    r"""HAWQ-V2's sensitivity (Dong et al. 2020, "HAWQ-V2", equation 5) of each layer under
    each option, with the quantization perturbation generalised to pruning then quantization:

    .. math:: \Omega_{lk} = \frac{\operatorname{Tr}(H_l)}{n_l}\,
              \lVert C_k(W_l) - W_l \rVert_2^2,

    :math:`H_l` the Hessian of the mean cross-entropy on ``data`` with respect to the
    :math:`n_l` weights of layer :math:`l`, its trace by Hutchinson's estimator
    :math:`\operatorname{Tr}(H) \approx \frac1S\sum_s z_s^\top H z_s` (``S = n_samples``
    Rademacher probes; ``optim.prune.scores.hutchinson_diagonal`` summed; Hessian-vector
    products by central differences of float64 gradients, step ``eps``). Returns
    ``(table, traces)``. Test:
    ``tests/optim/test_auto.py::test_hawq_v2_trace_matches_exact_hessian``.
    """
    layers = quantizable_layers(model)
    rng = np.random.default_rng(rng)
    table, traces = np.empty((len(layers), len(options))), np.empty(len(layers))
    for i, (name, layer) in enumerate(layers.items()):
        w = np.asarray(layer.weight.data, np.float64)
        grad = _float64_loss_grad(model, data, name)
        diag = hutchinson_diagonal(lambda v: finite_difference_hvp(grad, w, v, eps), w.shape,
                                   n_samples, rng)
        traces[i] = float(diag.sum())
        for k, (s, b) in enumerate(options):
            delta = compress_weight(layer.weight.data, s, b, observer) - layer.weight.data
            table[i, k] = traces[i] / w.size * float(np.sum(delta.astype(np.float64) ** 2))
    return table, traces


def additivity(model: nn.Module, data, options: Sequence[Option], table: np.ndarray,
               n_configs: int = 20, metric: str = "loss",
               rng: np.random.Generator | int | None = 0, observer: str = "mse") -> dict:
    r"""How well one-layer sensitivities add up: for ``n_configs`` random joint choices
    :math:`k(l)` (each layer's option uniform), the predicted change
    :math:`\hat\Delta = \sum_l S_{l,k(l)}` from ``table`` against the measured
    ``joint_change``; returns their Pearson correlation

    .. math:: r = \frac{\sum_j (\hat\Delta_j - \bar{\hat\Delta})(\Delta_j - \bar\Delta)}
              {\sqrt{\sum_j (\hat\Delta_j - \bar{\hat\Delta})^2 \sum_j (\Delta_j - \bar\Delta)^2}}

    with the configurations and both columns (``{"r", "configs", "predicted", "measured"}``).
    A table in other units (HAWQ-V2's :math:`\Omega`) is compared the same way: :math:`r` is
    scale-free. Test: ``tests/optim/test_auto.py::test_additivity_matches_brute_force``.
    """
    names = list(quantizable_layers(model))
    table = np.asarray(table, dtype=np.float64)
    if table.shape != (len(names), len(options)):
        raise ValueError(f"table must have shape {(len(names), len(options))} (layers x "
                         f"options), got {table.shape}")
    if not isinstance(n_configs, int) or n_configs < 2:
        raise ValueError(f"n_configs must be an integer >= 2, got {n_configs!r}")
    rng = np.random.default_rng(rng)
    configs = rng.integers(0, len(options), size=(n_configs, len(names)))
    predicted = table[np.arange(len(names)), configs].sum(axis=1)
    measured = np.array([joint_change(model, data, {n: options[k] for n, k in zip(names, row)},
                                      metric, observer) for row in configs])
    pc, mc = predicted - predicted.mean(), measured - measured.mean()
    denominator = math.sqrt(float(pc @ pc) * float(mc @ mc))
    r = float(pc @ mc) / denominator if denominator > 0 else float("nan")
    return {"r": r, "configs": configs.tolist(), "predicted": predicted.tolist(),
            "measured": measured.tolist()}


def _check_matrix(value, name: str, shape=None) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (layers x options), got shape "
                         f"{array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} must have the shape of costs {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def allocate(costs, drops, *, tolerance: float | None = None, budget: float | None = None
             ) -> list[int]:
    r"""One option per layer by a 0–1 integer programme (``scipy.optimize.milp``, HiGHS) over
    one-hot variables :math:`x_{lk}`, :math:`\sum_k x_{lk} = 1` for every layer :math:`l`:

    - with ``tolerance`` :math:`\tau`: minimise :math:`\sum c_{lk}x_{lk}` subject to
      :math:`\sum d_{lk}x_{lk} \le \tau` (the cheapest model predicted within the tolerance);
    - with ``budget`` :math:`B`: minimise :math:`\sum d_{lk}x_{lk}` subject to
      :math:`\sum c_{lk}x_{lk} \le B` (the least predicted drop that fits the budget).

    A multiple-choice knapsack (Kellerer, Pferschy & Pisinger 2004, "Knapsack Problems",
    chapter 11), solved exactly; HAWQ-V3 (Yao et al. 2021, section 3.3) allocates bit widths
    by the same kind of programme. Returns the chosen option index of each layer; ValueError
    if no choice satisfies the constraint. Test:
    ``tests/optim/test_auto.py::test_allocate_equals_brute_force``.
    """
    costs = _check_matrix(costs, "costs")
    drops = _check_matrix(drops, "drops", costs.shape)
    if (tolerance is None) == (budget is None):
        raise ValueError("give exactly one of tolerance and budget")
    limit = tolerance if budget is None else budget
    if not isinstance(limit, (int, float)) or not math.isfinite(limit):
        raise ValueError(f"{'tolerance' if budget is None else 'budget'} must be a finite "
                         f"number, got {limit!r}")
    objective, constrained = (costs, drops) if budget is None else (drops, costs)
    n_layers, n_options = costs.shape
    one_hot = np.kron(np.eye(n_layers), np.ones(n_options))
    # rounding slack so that a choice meeting the limit exactly is feasible
    slack = 1e-9 * max(1.0, abs(limit), float(np.abs(constrained).max()) * n_layers)
    constraints = [scipy.optimize.LinearConstraint(one_hot, 1, 1),
                   scipy.optimize.LinearConstraint(constrained.reshape(1, -1), -np.inf,
                                                   limit + slack)]
    result = scipy.optimize.milp(objective.reshape(-1), constraints=constraints,
                                 integrality=np.ones(costs.size),
                                 bounds=scipy.optimize.Bounds(0, 1))
    if result.x is None:
        smallest = float(constrained.min(axis=1).sum())
        raise ValueError(f"no allocation satisfies the "
                         f"{'tolerance' if budget is None else 'budget'} {limit!r}: the "
                         f"least achievable is {smallest!r}")
    return [int(k) for k in np.round(result.x).reshape(n_layers, n_options).argmax(axis=1)]


def back_off(choice: Sequence[int], costs, drops, tiebreak=None) -> list[int] | None:
    r"""One repair step: the layer :math:`l^*` whose current option has the largest predicted
    drop :math:`d_{l,k(l)}` among layers that have an option of smaller drop moves to the
    cheapest option with :math:`d \le d_{l^*,k(l^*)}/2` (or, if none, the cheapest with a
    smaller drop). When no layer has a smaller drop (an accuracy table is coarse: one-layer
    drops of 0 everywhere while the joint drop is not), ``tiebreak`` (layers × options, e.g.
    the one-layer loss changes) orders equal drops: the layer of largest current tiebreak
    among those with an equal-drop option of smaller tiebreak moves to the cheapest such
    option. Every step lowers one layer's (drop, tiebreak) pair, so the steps end; None when
    no layer can back off. Tests:
    ``tests/optim/test_auto.py::test_repair_terminates_and_meets_the_tolerance`` and
    ``::test_back_off_breaks_ties_of_the_predicted_drop``."""
    costs = _check_matrix(costs, "costs")
    drops = _check_matrix(drops, "drops", costs.shape)
    tiebreak = np.zeros(costs.shape) if tiebreak is None else \
        _check_matrix(tiebreak, "tiebreak", costs.shape)
    choice = list(choice)
    rows = np.arange(len(choice))
    current, current_tie = drops[rows, choice], tiebreak[rows, choice]
    movable = [l for l in range(len(choice)) if np.any(drops[l] < current[l])]
    if movable:
        layer = max(movable, key=lambda l: (current[l], -l))
        halved = np.flatnonzero(drops[layer] <= current[layer] / 2)
        better = halved if halved.size else np.flatnonzero(drops[layer] < current[layer])
    else:
        movable = [l for l in range(len(choice)) if np.any(
            (drops[l] == current[l]) & (tiebreak[l] < current_tie[l]))]
        if not movable:
            return None
        layer = max(movable, key=lambda l: (current_tie[l], -l))
        better = np.flatnonzero((drops[layer] == current[layer])
                                & (tiebreak[layer] < current_tie[layer]))
    choice[layer] = int(min(better, key=lambda k: (costs[layer, k], drops[layer, k],
                                                   tiebreak[layer, k], k)))
    return choice


def verify_and_repair(choice: Sequence[int], costs, drops, tolerance: float,
                      measure: Callable[[list[int]], float], max_steps: int = 50,
                      tiebreak=None) -> tuple[list[int], list[dict]]:
    r"""Measure ``choice`` (``measure(choice)`` → the drop on validation data); while it
    exceeds ``tolerance``, ``back_off`` and measure again, at most ``max_steps`` times.
    Returns the last choice and every candidate measured (``{"choice", "predicted",
    "measured", "cost"}``); the last one meets the tolerance unless no layer could back off
    further or the steps ran out. Test:
    ``tests/optim/test_auto.py::test_repair_terminates_and_meets_the_tolerance``."""
    costs = _check_matrix(costs, "costs")
    drops = _check_matrix(drops, "drops", costs.shape)
    choice, history = list(choice), []
    for _ in range(max_steps + 1):
        rows = np.arange(len(choice))
        measured = float(measure(choice))
        history.append({"choice": list(choice), "predicted": float(drops[rows, choice].sum()),
                        "measured": measured, "cost": float(costs[rows, choice].sum())})
        if measured <= tolerance:
            break
        step = back_off(choice, costs, drops, tiebreak)
        if step is None:
            break
        choice = step
    return choice, history


def grow_cuts(choice: Sequence[int], options: Sequence[Option], costs, tiebreak,
              tolerance: float, measure: Callable[[list[int]], float], max_steps: int = 8,
              exclude: Sequence[int] = ()) -> tuple[list[int], list[dict]]:
    r"""NetAdapt's forward steps (Yang et al. 2018, section 3.2) from a ``choice`` that fits:
    for every layer not yet exhausted (nor in ``exclude``), the proposal is its next larger
    sparsity at the same bit width that lowers its cost; the proposal of the smallest
    :math:`\max(\Delta t, 0) / \Delta c` (``tiebreak`` increase, e.g. the one-layer loss
    change, per unit of cost saved; then the larger saving) is measured, kept if
    ``measure`` (the bound on validation) is within ``tolerance``, and otherwise exhausts
    its layer. At most ``max_steps`` measurements. Returns the last kept choice and every
    proposal measured (``{"choice", "measured", "cost"}``). Test:
    ``tests/optim/test_auto.py::test_grow_cuts_keeps_only_fitting_steps``."""
    costs = _check_matrix(costs, "costs")
    tiebreak = _check_matrix(tiebreak, "tiebreak", costs.shape)
    if len(options) != costs.shape[1]:
        raise ValueError(f"options must have one entry per column of costs ({costs.shape[1]}), "
                         f"got {len(options)}")
    choice, history = list(choice), []
    exhausted = set(exclude)
    while len(history) < max_steps:
        proposals = []
        for layer, k in enumerate(choice):
            if layer in exhausted:
                continue
            s, b = options[k]
            larger = [j for j, (s2, b2) in enumerate(options)
                      if b2 == b and s2 > s and costs[layer, j] < costs[layer, k]]
            if not larger:
                continue
            j = min(larger, key=lambda j: options[j][0])
            saving = costs[layer, k] - costs[layer, j]
            rank = max(tiebreak[layer, j] - tiebreak[layer, k], 0.0) / saving
            proposals.append((rank, -saving, layer, j))
        if not proposals:
            break
        _, _, layer, j = min(proposals)
        step = choice.copy()
        step[layer] = j
        measured = float(measure(step))
        history.append({"choice": step, "measured": measured,
                        "cost": float(costs[np.arange(len(step)), step].sum())})
        if measured <= tolerance:
            choice = step
        else:
            exhausted.add(layer)
    return choice, history


def search_tolerance(costs, drops, tolerance: float, measure: Callable[[list[int]], float],
                     max_steps: int = 4) -> tuple[list[int] | None, list[dict]]:
    r"""Calibrate the predictor: the one-layer sum :math:`\hat\Delta(t)` of ``allocate``'s
    choice at limit :math:`t` over- or underestimates the measured drop (fine-tuning
    recovers much of a pruning loss; layers interact), so search the limit :math:`t` instead
    of trusting :math:`t = \tau`: start at :math:`\tau`, double :math:`t` while the measured
    drop fits :math:`\tau`, halve it while it does not, and bisect between the largest
    fitting and the smallest failing :math:`t` once both are known, for at most
    ``max_steps`` measurements (a repeated choice ends the search). Returns the cheapest
    measured choice within :math:`\tau` (None if there is none) and every candidate
    measured. Test:
    ``tests/optim/test_auto.py::test_search_tolerance_finds_a_cheaper_fitting_choice``.
    """
    costs = _check_matrix(costs, "costs")
    drops = _check_matrix(drops, "drops", costs.shape)
    rows = np.arange(costs.shape[0])
    floor = float(drops.min(axis=1).sum())
    t, fits, fails, history = float(tolerance), None, None, []
    for _ in range(max_steps):
        choice = allocate(costs, drops, tolerance=max(t, floor))
        if any(item["choice"] == choice for item in history):
            break
        measured = float(measure(choice))
        history.append({"choice": choice, "limit": t,
                        "predicted": float(drops[rows, choice].sum()),
                        "measured": measured, "cost": float(costs[rows, choice].sum())})
        if measured <= tolerance:
            fits = t if fits is None else max(fits, t)
        else:
            fails = t if fails is None else min(fails, t)
        if fails is None:
            t = 2 * t if t > 0 else float(np.abs(drops).max()) / 8 or 1.0
        elif fits is None:
            t = t / 2
        else:
            t = (fits + fails) / 2
    good = [item for item in history if item["measured"] <= tolerance]
    best = min(good, key=lambda item: item["cost"])["choice"] if good else None
    return best, history


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, validation)`` sorted indices of a seeded random split of ``n`` training
    examples, ``round(fraction * n)`` of them held out for validation. Test:
    ``tests/optim/test_auto_stage.py::test_validation_split_is_disjoint_from_test``."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    held = int(round(fraction * n))
    if not 0 < held < n:
        raise ValueError(f"a validation fraction {fraction} of {n} examples leaves an empty split")
    order = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


# ---- the whole procedure ------------------------------------------------------------------

def _masked_copy(model: nn.Module, sparsities: dict[str, float], structured: bool) -> nn.Module:
    """A copy of ``model`` (pruning made permanent) whose named layers carry pruning masks
    that stay: the fraction ``sparsities[name]`` of the weights of smallest magnitude, or
    ``structured`` of the output channels of smallest L1 norm, removed on top of the zero
    weights the layer already has."""
    pruned = remove_all(copy.deepcopy(model))
    layers = quantizable_layers(pruned)
    for name, s in sparsities.items():
        w = layers[name].weight.data
        keep = w != 0
        if s > 0:
            keep &= (ln_structured_mask(w, channel_sparsity(s, w.shape[0]), n=1)
                     if structured else magnitude_mask(w, s))
        if not keep.all():
            apply_mask(layers[name], "weight", keep)
    return pruned


def _build(model: nn.Module, names: list[str], options: Sequence[Option], choice: list[int],
           fine_tune: Callable[[nn.Module, int], None] | None, index: int, calibration,
           observer: str, structured: bool) -> nn.Module:
    """The deployable candidate: each layer pruned to its sparsity (masks that stay; by
    magnitude, or ``structured`` whole output channels by L1 norm; the zero weights of
    ``model`` stay zero too), fine-tuned by ``fine_tune(model, index)`` if given, the removed
    channels cut out (``shrink``), then weights quantized at their bit widths and activations
    at 8 bits (``quantize_mixed``)."""
    sparsities = {name: options[k][0] for name, k in zip(names, choice)}
    if structured:  # the output layer's channels are the model's outputs: never cut
        sparsities[names[-1]] = 0.0
    pruned = _masked_copy(model, sparsities, structured)
    if fine_tune is not None:
        fine_tune(pruned, index)
    remove_all(pruned)
    if structured:
        pruned = shrink(pruned)
    bits = {name: options[k][1] for name, k in zip(names, choice)}
    return quantize_mixed(pruned, bits, calibration, weight_only=False, weight_observer=observer)


def _correct(model: nn.Module, data) -> np.ndarray:
    """Whether ``model`` classifies each example of ``data = (x, y)`` correctly."""
    x, y = data
    model.eval()
    with minnet.no_grad():
        logits = np.concatenate([model(minnet.Tensor(x[i:i + 500])).data
                                 for i in range(0, len(y), 500)])
    return logits.argmax(axis=1) == y


def paired_drop(reference_correct, candidate_correct) -> tuple[float, float]:
    r"""Accuracy drop in percentage points of a candidate against the reference on the same
    :math:`n` examples, and its standard error: with :math:`d_i = r_i - c_i \in \{-1, 0, 1\}`
    (correctness indicators),

    .. math:: \Delta = 100\,\bar d, \qquad
              \mathrm{SE} = \frac{100}{n}\sqrt{b + c - (b - c)^2 / n}
              = 100\,\frac{\operatorname{sd}(d)}{\sqrt n},

    :math:`b` (:math:`c`) the examples only the reference (only the candidate) gets right:
    the paired (McNemar) view, whose error counts only the discordant examples (McNemar
    1947). Test: ``tests/optim/test_auto.py::test_paired_drop_is_mean_and_standard_error``.
    """
    r = np.asarray(reference_correct, dtype=bool)
    c = np.asarray(candidate_correct, dtype=bool)
    if r.shape != c.shape or r.ndim != 1 or r.size == 0:
        raise ValueError(f"reference_correct and candidate_correct must be equal-length 1-D "
                         f"arrays, got shapes {r.shape} and {c.shape}")
    n, only_r, only_c = r.size, int(np.sum(r & ~c)), int(np.sum(c & ~r))
    se = 100.0 * math.sqrt(max(only_r + only_c - (only_r - only_c) ** 2 / n, 0.0)) / n
    return 100.0 * (only_r - only_c) / n, se


def _save_json(path: Path | None, value) -> None:
    if path is not None:
        with atomic_write(path) as f:
            f.write(json.dumps(value).encode())


def _load_json(path: Path | None):
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def compress_to_target(model: nn.Module, train, *, max_drop_pp: float, objective: str = "bytes",
                       validation=None,
                       sparsities: Sequence[float] = (0.0, 0.5, 0.75, 0.875, 0.95),
                       bits: Sequence[int] = (8, 6, 5, 4, 3, 2),
                       validation_fraction: float = 0.25, seed: int = 0,
                       fine_tune: Callable[[nn.Module, tuple, int], None] | None = None,
                       max_candidates: int = 12, calibration_images: int = 1024,
                       observer: str = "mse", confidence_z: float = 1.0,
                       size_of: Callable[[nn.Module], int] | None = None,
                       work: Path | None = None, reference: nn.Module | None = None,
                       recover: Callable[[nn.Module, tuple], None] | None = None
                       ) -> tuple[nn.Module, dict]:
    r"""The cheapest mixed sparsity/bit-width version of ``model`` whose accuracy on held-out
    validation data is at most ``max_drop_pp`` percentage points below ``reference``'s
    (default: ``model`` itself; in a pipeline, the uncompressed original, so that the
    tolerance holds against it when ``model`` is already pruned or distilled).

    ``train = (x, y)`` is split by ``validation_split`` (never the test data), unless a
    held-out ``validation = (x, y)`` is given: decisions are measured on the validation part,
    fine-tuning (``fine_tune(model, fit_data, index)``, which
    must keep pruned weights at zero) and calibration use the rest. Steps: one-layer accuracy
    drops :math:`d_{lk}` on validation (``sensitivity_table``, negative values counted as 0),
    costs by ``objective`` (``option_costs``), ``search_tolerance`` over ``allocate``'s
    limit for all but two of the ``max_candidates`` built candidates (``_build``: prune, fine-tune,
    ``quantize_mixed`` with 8-bit activations), keeping the cheapest that measures within
    ``max_drop_pp``; if none does, ``verify_and_repair`` from the least aggressive one with
    the remaining candidates (equal predicted drops ordered by the one-layer loss changes,
    measured in the same pass); if still none fits, the candidate of the smallest bound
    (drop + ``confidence_z`` standard errors; then the cheapest), and ``met_on_validation``
    is false.

    ``objective = "latency"`` prunes whole output channels and costs each option by
    ``latency_table`` on one image, timed on the integer kernels that run the returned model;
    half of the candidates go to the search and repair without cuts, the rest to
    ``grow_cuts`` from the fitting choice found (one-layer drops of cuts, each measured with
    the rest of the model intact, do not add up: joint cuts the programme predicts within
    0.5 pp measured 5-15 pp on LeNet-5). ``recover(model, fit_data)``, optional, is a short
    fine-tuning (masks kept) after which the table measures each pruned option
    (``sensitivity_table``'s ``recover``).

    ``work``: a directory where the table and every measured candidate are saved as they are
    made, so that a killed run resumes without measuring again. A candidate fits when its
    validation drop plus ``confidence_z`` standard errors (``paired_drop``) is within
    ``max_drop_pp``: the cheapest of several noisy measurements is biased low, and the test
    drop is a new sample. ``size_of(model)`` (the
    stored size of a candidate, optional) is recorded with each candidate. Returns
    ``(model, details)``
    with the layers, options, table, costs, every candidate and the chosen one.
    Tests: ``tests/optim/test_auto_stage.py``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not (isinstance(max_drop_pp, (int, float)) and max_drop_pp >= 0):
        raise ValueError(f"max_drop_pp must be a number >= 0, got {max_drop_pp!r}")
    options = make_options(sparsities, bits)
    structured = objective == "latency"
    if structured and 0 not in sparsities:
        raise ValueError(f"the latency objective needs sparsity 0.0 among the options (the "
                         f"output layer keeps its channels), got {list(sparsities)!r}")
    model = remove_all(copy.deepcopy(model)).eval()
    x, y = train
    if validation is None:
        fit_index, val_index = validation_split(len(y), validation_fraction, seed)
        fit_data, val = (x[fit_index], y[fit_index]), (x[val_index], y[val_index])
    else:
        fit_data, val = train, validation
    calibration = fit_data[0][:calibration_images]
    layers = quantizable_layers(model)
    names = list(layers)
    table_path = None if work is None else work / "auto_table.json"
    key = {"options": [list(o) for o in options], "structured": structured,
           "recovered": recover is not None}
    saved = _load_json(table_path)
    if saved is not None and all(saved.get(k) == v for k, v in key.items()) \
            and "loss_changes" in saved:
        drops, latency = np.asarray(saved["drops"]), saved["latency"]
        loss_changes = np.asarray(saved["loss_changes"])
    else:  # the measured latencies are saved too: a resumed run allocates the same
        tables = _sensitivity_tables(model, val, options, observer, structured,
                                     None if recover is None else
                                     (lambda m: recover(m, fit_data)))
        drops, loss_changes = np.maximum(tables["accuracy"], 0.0), tables["loss"]
        latency = latency_table(model, (1,) + x.shape[1:], sparsities, engine="integer") \
            if structured else None
        _save_json(table_path, {**key, "drops": drops.tolist(),
                                "loss_changes": loss_changes.tolist(), "latency": latency})
    if latency is not None:  # JSON keys are strings
        latency = {n: {float(s): t for s, t in row.items()} for n, row in latency.items()}
    if structured:  # the output layer's channels are the classes: cutting them is no option
        drops[-1] = [drops[-1, options.index((0.0, b))] if s == 0 else NOT_APPLICABLE
                     for s, b in options]
    sizes = {n: int(m.weight.data.size) for n, m in layers.items()}
    channels = {n: int(m.weight.shape[0]) for n, m in layers.items()}
    macs = layer_macs(model, (1,) + x.shape[1:])
    zeros = {n: float(np.mean(m.weight.data == 0)) for n, m in layers.items()}
    costs = option_costs(sizes, channels, macs, options, objective, latency, zeros)
    if structured:  # equally fast options: the smaller one (bytes weigh < 1 % of a layer's time)
        size = option_costs(sizes, channels, macs, options, "bytes", None, zeros)
        costs = costs + 0.01 * costs.min() / size.sum(axis=0).max() * size
    reference = _correct(model if reference is None else reference, val)

    candidates_path = None if work is None else work / "auto_candidates.json"
    measured = {tuple(c["choice"]): c for c in (_load_json(candidates_path) or [])}

    def tune(m: nn.Module, index: int) -> None:
        fine_tune(m, fit_data, index)

    built: dict[tuple, nn.Module] = {}  # the last candidate built in this process

    def build(choice: list[int]) -> nn.Module:
        key = tuple(choice)
        if key not in built:
            index = list(measured).index(key) if key in measured else len(measured)
            built.clear()
            built[key] = _build(model, names, options, choice, tune if fine_tune else None,
                                index, calibration, observer, structured)
        return built[key]

    def measure(choice: list[int]) -> float:
        key = tuple(choice)
        if key not in measured:
            candidate = build(choice)
            correct = _correct(candidate, val)
            drop, se = paired_drop(reference, correct)
            measured[key] = {"choice": list(choice), "val_accuracy": float(correct.mean()),
                             "drop_pp": drop, "se_pp": se,
                             "size": None if size_of is None else int(size_of(candidate))}
            _save_json(candidates_path, list(measured.values()))
        return measured[key]["drop_pp"] + confidence_z * measured[key]["se_pp"]

    # structured: the allocation without cuts first, then cuts one at a time (``grow_cuts``):
    # one-layer recovered drops of cuts do not add up, so the programme's joint cuts fail
    first_drops, first_budget = drops, max_candidates
    if structured:
        first_drops = drops.copy()
        first_drops[:, [k for k, (s, _) in enumerate(options) if s > 0]] = NOT_APPLICABLE
        first_budget = max(1, max_candidates // 2)
    best, searched = search_tolerance(costs, first_drops, max_drop_pp, measure,
                                      max(1, first_budget - 2))
    if best is not None:
        choice, repaired = best, []
    else:  # nothing measured fits: back off from the least aggressive candidate searched
        start = min(searched, key=lambda item: item["limit"])["choice"]
        choice, repaired = verify_and_repair(start, costs, first_drops, max_drop_pp, measure,
                                             max_steps=max(0, first_budget - len(searched)),
                                             tiebreak=loss_changes)
        repaired = repaired[1:]  # its first entry is the searched start, measured already
    history = searched + repaired
    if structured and measure(choice) <= max_drop_pp:
        choice, grown = grow_cuts(choice, options, costs, loss_changes, max_drop_pp, measure,
                                  max_steps=max_candidates - len(history),
                                  exclude=[len(names) - 1])
        rows = np.arange(len(names))
        history += [{**item, "predicted": float(drops[rows, item["choice"]].sum())}
                    for item in grown]
    if all(item["measured"] > max_drop_pp for item in history):  # none fits: the best bound
        choice = min(history, key=lambda item: (item["measured"], item["cost"]))["choice"]
    history.sort(key=lambda item: item["choice"] == choice)  # the chosen candidate last
    final = build(choice)
    for item in history:
        item.update({k: measured[tuple(item["choice"])][k]
                     for k in ("val_accuracy", "drop_pp", "se_pp", "size")})
        item["options"] = {n: list(options[k]) for n, k in zip(names, item["choice"])}
    details = {"objective": objective, "max_drop_pp": max_drop_pp, "layers": names,
               "options": [list(o) for o in options], "drops_pp": drops.tolist(),
               "costs": costs.tolist(), "validation_accuracy": float(reference.mean()),
               "confidence_z": confidence_z,
               "validation_images": int(len(val[1])), "candidates": history,
               "chosen": {n: list(options[k]) for n, k in zip(names, choice)},
               "met_on_validation": history[-1]["measured"] <= max_drop_pp}
    return final, details
