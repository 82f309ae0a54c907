r"""Data-free quantization (Nagel et al. 2019): cross-layer equalization and bias correction.

* ``equalization_scales`` / ``equalize_pair``: rescale output channel :math:`i` of one layer
  by :math:`1/s_i` and input channel :math:`i` of the next by :math:`s_i`, which leaves a
  network with a ReLU (or max pooling, flattening) between them unchanged, so that both
  channels get the same range — per-tensor quantization then wastes less of its range;
* ``equalize_model``: the same for every such pair of a ``nn.Sequential`` model, iterated;
* ``bias_correction`` / ``relu_gaussian_mean`` / ``bn_input_means`` / ``bias_correct``: remove
  the mean output error :math:`E[\tilde W x] - E[W x] = \varepsilon E[x]` that quantizing
  the weights adds, with :math:`E[x]` from BatchNorm statistics or from data.
"""
from __future__ import annotations

import copy

import numpy as np
from scipy import stats

import minnet
from minnet import nn
from minnet.tensor import as_tensor

from ._checks import as_float_array, check_count
from ._layers import LAYERS, flat_modules, fold_batchnorms
from .fake_quant import QuantSequential, QuantStage

# Modules between two layers that commute with a positive per-channel scaling.
POSITIVE_HOMOGENEOUS = (nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout)


def _input_channels(w2: np.ndarray, channels: int) -> np.ndarray:
    """``w2`` viewed as (out, channels, k): a conv's input channel or the block of a Linear's
    inputs that one channel of a flattened (C, H, W) feature map becomes."""
    if w2.ndim == 2:
        if w2.shape[1] % channels:
            raise ValueError(f"a Linear with {w2.shape[1]} inputs cannot follow {channels} "
                             "channels")
        return w2.reshape(w2.shape[0], channels, -1)
    if w2.shape[1] != channels:
        raise ValueError(f"w2 has {w2.shape[1]} input channels, w1 has {channels} outputs")
    return w2.reshape(w2.shape[0], channels, -1)


def equalization_scales(w1: object, w2: object) -> np.ndarray:
    r"""Cross-layer equalization scales for layer 1 (output channels along axis 0) followed by
    layer 2 (input channels along axis 1, or blocks of a Linear's inputs after flattening):

    .. math:: s_i = \frac{1}{r_i^{(2)}} \sqrt{r_i^{(1)} r_i^{(2)}}, \qquad
              r_i^{(1)} = \max |W^{(1)}_{i,\cdot}|, \quad r_i^{(2)} = \max |W^{(2)}_{\cdot,i}|

    so that after ``equalize_pair`` both ranges equal :math:`\sqrt{r_i^{(1)} r_i^{(2)}}`
    (the maximiser of :math:`\sum_i p_i^{(1)} p_i^{(2)}`, the precision of each channel
    relative to its tensor's range). :math:`s_i = 1` where a range is 0.

    Source: Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
    Correction" (ICCV), section 4.1, eq. (10)-(11).
    Checked by ``tests/optim/quant/test_quant_equalize.py::test_equalized_ranges_are_the_geometric_mean``.
    """
    w1, w2 = as_float_array(w1, "w1"), as_float_array(w2, "w2")
    r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1).astype(np.float64)
    r2 = np.abs(_input_channels(w2, w1.shape[0])).max(axis=(0, 2)).astype(np.float64)
    ok = (r1 > 0) & (r2 > 0)
    return np.where(ok, np.sqrt(r1 * r2) / np.where(ok, r2, 1), 1.0)


def equalize_pair(w1: object, b1: object | None, w2: object,
                  scales: object | None = None) -> tuple[np.ndarray, np.ndarray | None,
                                                         np.ndarray]:
    r""":math:`W^{(1)}_{i,\cdot} / s_i`, :math:`b^{(1)}_i / s_i`, :math:`W^{(2)}_{\cdot,i}\, s_i`
    (``scales`` default ``equalization_scales(w1, w2)``). Since
    :math:`\operatorname{ReLU}(x / s) = \operatorname{ReLU}(x) / s` for :math:`s > 0`, the
    two layers with a ReLU between them compute the same function.

    Source: Nagel et al. 2019, section 4.1, eq. (3)-(5).
    Checked by ``tests/optim/quant/test_quant_equalize.py::test_equalize_pair_keeps_the_function``.
    """
    w1, w2 = as_float_array(w1, "w1"), as_float_array(w2, "w2")
    s = equalization_scales(w1, w2) if scales is None else np.asarray(scales, np.float64)
    if s.shape != (w1.shape[0],) or not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError(f"scales must be {w1.shape[0]} positive finite numbers, got {s!r}")
    shape1 = (-1,) + (1,) * (w1.ndim - 1)
    new_w1 = (w1 / s.reshape(shape1)).astype(w1.dtype)
    new_b1 = None if b1 is None else (np.asarray(b1) / s).astype(w1.dtype)
    view = _input_channels(w2, w1.shape[0])
    new_w2 = (view * s.reshape(1, -1, 1)).reshape(w2.shape).astype(w2.dtype)
    return new_w1, new_b1, new_w2


def _pairs(modules: list[nn.Module]) -> list[tuple[int, int]]:
    """Indices (i, j) of consecutive layers separated only by positive-homogeneous modules."""
    layers = [i for i, m in enumerate(modules) if isinstance(m, LAYERS)]
    return [(i, j) for i, j in zip(layers, layers[1:])
            if all(isinstance(m, POSITIVE_HOMOGENEOUS) for m in modules[i + 1:j])
            and not any(getattr(modules[k], "groups", 1) != 1 for k in (i, j))]


def equalize_model(model: nn.Module, iterations: int = 20, tol: float = 1e-6) -> nn.Sequential:
    """A copy of ``model`` (a ``nn.Sequential`` of Linear/Conv2d layers, BatchNorm folded into
    the layer before it first) with every pair of consecutive layers equalized by
    ``equalize_pair``, sweeping over the pairs until no scale differs from 1 by more than
    ``tol`` or ``iterations`` sweeps are done (the paper iterates until convergence). The
    copy computes the same function as ``model`` in eval mode.

    Source: Nagel et al. 2019, section 4.1.
    Checked by ``tests/optim/quant/test_quant_equalize.py::test_equalize_model_keeps_lenet5_outputs``.
    """
    iterations = check_count(iterations, "iterations")
    modules = fold_batchnorms(flat_modules(model))
    pairs = _pairs(modules)
    for _ in range(iterations):
        largest = 0.0
        for i, j in pairs:
            a, b = modules[i], modules[j]
            s = equalization_scales(a.weight.data, b.weight.data)
            largest = max(largest, float(np.max(np.abs(np.log(s)))))
            w1, b1, w2 = equalize_pair(a.weight.data, None if a.bias is None else a.bias.data,
                                       b.weight.data, s)
            nn.parametrize.original(a, "weight").data = w1
            nn.parametrize.original(b, "weight").data = w2
            if b1 is not None:
                nn.parametrize.original(a, "bias").data = b1
        if largest <= tol:
            break
    return nn.Sequential(*modules).eval()


def relu_gaussian_mean(beta: object, gamma: object) -> np.ndarray:
    r"""Mean of :math:`\operatorname{ReLU}(z)` for :math:`z \sim N(\beta, \gamma^2)` (a
    BatchNorm output with shift :math:`\beta` and scale :math:`\gamma`, taken as Gaussian):

    .. math:: E[\operatorname{ReLU}(z)] = \gamma\, \varphi(-\beta/\gamma)
              + \beta\, [1 - \Phi(-\beta/\gamma)]

    with :math:`\varphi`, :math:`\Phi` the standard normal density and distribution function
    (:math:`\max(\beta, 0)` when :math:`\gamma = 0`).

    Source: Nagel et al. 2019, section 4.2, eq. (16)-(17).
    Checked by ``tests/optim/quant/test_quant_equalize.py::test_relu_gaussian_mean_matches_monte_carlo``.
    """
    beta = np.asarray(beta, dtype=np.float64)
    gamma = np.abs(np.asarray(gamma, dtype=np.float64))
    safe = np.where(gamma > 0, gamma, 1.0)
    t = -beta / safe
    mean = gamma * stats.norm.pdf(t) + beta * stats.norm.sf(t)
    return np.where(gamma > 0, mean, np.maximum(beta, 0.0))


def bias_correction(w: object, w_q: object, input_mean: object) -> np.ndarray:
    r"""The change of a layer's expected output that quantizing its weights causes,
    :math:`E[\tilde W x] - E[W x] = \varepsilon\, E[x]`, :math:`\varepsilon = \tilde W - W`,
    per output channel; subtract it from the bias. For a Linear layer ``input_mean`` is
    :math:`E[x]` per input feature; for a convolution it is per input channel and
    :math:`\varepsilon` is summed over the kernel window (exact away from zero padding).

    Source: Nagel et al. 2019, section 4.2, eq. (13)-(14).
    Checked by ``tests/optim/quant/test_quant_equalize.py::test_bias_correction_removes_the_mean_error``.
    """
    w, w_q = as_float_array(w, "w"), as_float_array(w_q, "w_q")
    if w.shape != w_q.shape:
        raise ValueError(f"w_q must have w's shape {w.shape}, got {w_q.shape}")
    mean = np.asarray(input_mean, dtype=np.float64)
    error = (w_q.astype(np.float64) - w).reshape(w.shape[0], w.shape[1], -1).sum(axis=2)
    if mean.shape != (w.shape[1],):
        raise ValueError(f"input_mean must have shape ({w.shape[1]},), got {mean.shape}")
    return error @ mean


def _stage_input_means(model: QuantSequential, x: np.ndarray, batch_size: int) -> list:
    """Per stage, the mean of its input per channel/feature over ``x`` (hooks on the layers)."""
    stages = [m for m in model if isinstance(m, QuantStage)]
    sums = [None] * len(stages)
    handles = []
    for k, stage in enumerate(stages):
        def hook(module, args, k=k):
            a = as_tensor(args[0]).data
            axes = (0,) if a.ndim == 2 else (0, 2, 3)
            total = a.astype(np.float64).sum(axis=axes) / (a.size / a.shape[1])
            sums[k] = total * len(a) if sums[k] is None else sums[k] + total * len(a)
        handles.append(stage.register_forward_pre_hook(hook))
    try:
        with minnet.no_grad():
            for i in range(0, len(x), batch_size):
                model(minnet.Tensor(x[i:i + batch_size]))
    finally:
        for h in handles:
            h.remove()
    return [s / len(x) for s in sums]


def bn_input_means(model: nn.Module) -> list[np.ndarray | None]:
    r"""For each Linear/Conv2d of a float ``nn.Sequential`` model, in order, the expected input
    :math:`E[x]` predicted from the BatchNorm before it, when only a ReLU (and a Flatten)
    separates them: ``relu_gaussian_mean(β, γ)`` per channel (repeated over the flattened
    positions); None where no such BatchNorm exists (the first layer, or pooling in between,
    which changes the mean).

    Source: Nagel et al. 2019, section 4.2 (analytic bias correction from BN statistics).
    Checked by ``tests/optim/quant/test_quant_equalize.py::test_bn_input_means_match_the_data``.
    """
    modules = flat_modules(model)
    means: list[np.ndarray | None] = []
    pending, relu = None, False
    for module in modules:
        if isinstance(module, LAYERS):
            if pending is not None and relu:
                in_features = module.weight.shape[1]
                repeat = in_features // pending.size if isinstance(module, nn.Linear) else 1
                means.append(np.repeat(pending, repeat))  # channel-major flattening
            else:
                means.append(None)
            pending, relu = None, False
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            gamma = np.ones(module.num_features) if module.weight is None else module.weight.data
            beta = np.zeros(module.num_features) if module.bias is None else module.bias.data
            pending, relu = relu_gaussian_mean(beta, gamma), False
        elif isinstance(module, nn.ReLU):
            relu = pending is not None
        elif not isinstance(module, (nn.Flatten, nn.Identity, nn.Dropout)):
            pending = None
    return means


def bias_correct(model: QuantSequential, x: object | None = None,
                 input_means: list | None = None, batch_size: int = 256) -> QuantSequential:
    """A copy of a converted model whose layer biases absorb ``bias_correction``.

    :math:`E[x]` comes from data ``x``, measured at each layer's input in the quantized model
    (the empirical variant), layer by layer so that each correction sees the corrected
    layers before it; or from ``input_means``, one array (or None: leave the layer alone) per
    layer, such as ``bn_input_means`` of the float model (the analytic variant). A layer
    without a bias gets one.

    Source: Nagel et al. 2019, section 4.2.
    Checked by ``tests/optim/quant/test_quant_equalize.py::test_bias_correct_recovers_the_mean_output``
    and ``::test_bn_input_means_match_the_data``.
    """
    if not isinstance(model, QuantSequential) or not model.frozen:
        raise TypeError("bias_correct needs a frozen QuantSequential (the output of convert)")
    if (x is None) == (input_means is None):
        raise ValueError("pass exactly one of x (data) and input_means (e.g. bn_input_means)")
    model = copy.deepcopy(model).eval()
    stages = [m for m in model if isinstance(m, QuantStage)]
    if x is not None:
        x = np.asarray(x, dtype=np.float32)
        if len(x) == 0:
            raise ValueError("x must hold at least one sample")
    elif len(input_means) != len(stages):
        raise ValueError(f"input_means must have one entry per layer ({len(stages)}), got "
                         f"{len(input_means)}")
    for k, stage in enumerate(stages):
        mean = (_stage_input_means(model, x, batch_size)[k] if x is not None
                else input_means[k])
        if mean is None:
            continue
        layer = stage.layer
        w = stage.float_weight()
        w_q = stage.weight_quant(minnet.Tensor(w)).data
        shift = bias_correction(w, w_q, mean).astype(w.dtype)
        if layer.bias is None:
            layer.bias = nn.Parameter(-shift)
        else:
            nn.parametrize.original(layer, "bias").data = stage.float_bias() - shift
    return model
