r"""AdaRound (Nagel et al. 2020): learn, per weight, whether to round down or up, by
minimising the layer's output reconstruction error on calibration data.

The rounding of :math:`W/s` is relaxed to :math:`\lfloor W/s \rfloor + h(V)` with a rectified
sigmoid :math:`h`; :math:`V` is optimised with minnet's autograd and Adam under a regulariser
that pushes :math:`h(V)` to 0 or 1, then rounded: up where :math:`h(V) \ge \tfrac12`.
"""
from __future__ import annotations

import copy

import numpy as np

import minnet
from minnet import functional as F
from minnet import nn, optimizers
from minnet.tensor import Tensor

from ._checks import as_float_array, channel_param, check_count, n_channels
from ._layers import LAYERS, layer_forward
from .fake_quant import FixedFakeQuantize, QuantSequential, QuantStage

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: object, zeta: float = ZETA, gamma: float = GAMMA):
    r""":math:`h(V) = \operatorname{clip}(\sigma(V)(\zeta - \gamma) + \gamma,\ 0,\ 1)` with
    :math:`\zeta = 1.1`, :math:`\gamma = -0.1`: a sigmoid stretched beyond [0, 1] and clipped,
    so that 0 and 1 are reached at finite :math:`V` and the gradient there is not vanishing.
    On a Tensor it returns a differentiable Tensor, on an array an array.

    Source: Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training
    Quantization" (ICML), eq. (23) (after Louizos et al. 2018).
    Checked by ``tests/optim/quant/test_quant_adaround.py::test_rectified_sigmoid_and_inverse``.
    """
    if isinstance(v, Tensor):
        return F.clip(F.sigmoid(v) * (zeta - gamma) + gamma, 0.0, 1.0)
    v = as_float_array(v, "v")
    return np.clip(1 / (1 + np.exp(-v)) * (zeta - gamma) + gamma, 0, 1).astype(v.dtype)


def adaround_init(w: object, scale: object, axis: int | None = 0) -> np.ndarray:
    r"""Initial :math:`V` with :math:`h(V) = W/s - \lfloor W/s \rfloor` (the fractional part,
    so the relaxed weights start at :math:`W`, clipping aside):
    :math:`V = -\log\big((\zeta - \gamma)/(r - \gamma) - 1\big)`, :math:`r` the fractional part.

    Source: Nagel et al. 2020, section 5 (initialisation of V, as in the authors' AIMET).
    Checked by ``tests/optim/quant/test_quant_adaround.py::test_rectified_sigmoid_and_inverse``.
    """
    w = as_float_array(w, "w")
    axis, channels = n_channels(w, axis)
    s = channel_param(scale, "scale", w.ndim, axis, channels).astype(np.float64)
    u = w / s
    rest = u - np.floor(u)
    return -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)


def adaround_regularizer(v, beta: float):
    r""":math:`f_{reg}(V) = \sum_{i} 1 - |2 h(V_i) - 1|^{\beta}`: zero exactly when every
    :math:`h(V_i)` is 0 or 1; a large :math:`\beta` leaves :math:`h` free except near
    :math:`\tfrac12`, a small one pulls everything to 0 or 1. Tensor in, Tensor out (or arrays).

    Source: Nagel et al. 2020, eq. (24).
    Checked by ``tests/optim/quant/test_quant_adaround.py::test_regularizer_vanishes_at_binary_h``.
    """
    h = rectified_sigmoid(v)
    if isinstance(h, Tensor):
        return (1 - F.abs(2 * h - 1) ** beta).sum()
    return float(np.sum(1 - np.abs(2 * h - 1) ** beta))


def beta_schedule(step: int, steps: int, warmup: float = 0.2, start: float = 20.0,
                  end: float = 2.0) -> float:
    r""":math:`\beta` annealed linearly from ``start`` (20) to ``end`` (2) after the warm-up
    fraction ``warmup`` of the steps (in which the regulariser is off).

    Source: Nagel et al. 2020, section 5 (β annealing, 20 to 2, warm start).
    Checked by ``tests/optim/quant/test_quant_adaround.py::test_beta_schedule``.
    """
    first = int(warmup * steps)
    if step < first:
        return start
    return end + (start - end) * max(0.0, 1 - (step - first) / max(steps - first, 1))


def adaround_weights(w: object, scale: object, qmin: int, qmax: int, v: object,
                     axis: int | None = 0, hard: bool = False):
    r""":math:`\tilde W = s \cdot \operatorname{clip}(\lfloor W/s \rfloor + h(V),\ q_{min},\
    q_{max})` (zero point 0), with :math:`h(V)` replaced by :math:`1[h(V) \ge \tfrac12]` when
    ``hard``. Differentiable in ``v`` when it is a Tensor.

    Source: Nagel et al. 2020, eq. (22).
    Checked by ``tests/optim/quant/test_quant_adaround.py::test_hard_adaround_weights_are_a_rounding``.
    """
    w = as_float_array(w, "w")
    axis, channels = n_channels(w, axis)
    s = channel_param(scale, "scale", w.ndim, axis, channels).astype(w.dtype)
    floor = np.floor(w / s)
    h = rectified_sigmoid(v)
    if hard:
        h = (np.asarray(h.data if isinstance(h, Tensor) else h) >= 0.5).astype(w.dtype)
    if isinstance(h, Tensor):
        return F.clip(h + floor, qmin, qmax) * s
    return (np.clip(floor + h, qmin, qmax) * s).astype(w.dtype)


def adaround_layer(layer: nn.Module, x: object, scale: object, qmin: int, qmax: int,
                   axis: int | None = 0, *, steps: int = 1000, lr: float = 1e-2,
                   reg_weight: float = 0.01, batch_size: int = 32,
                   seed: int = 0) -> np.ndarray:
    r"""AdaRound one Linear/Conv2d layer: minimise over :math:`V`

    .. math:: \lVert W x - \tilde W(V) x \rVert_F^2 / N + \lambda f_{reg}(V)

    on calibration inputs ``x`` (mini-batches of ``batch_size``, ``steps`` Adam steps at
    ``lr``, :math:`\lambda` = ``reg_weight``, :math:`\beta` by ``beta_schedule``, regulariser
    off during the warm-up), then round: :math:`\tilde W = s\,
    \operatorname{clip}(\lfloor W/s\rfloor + 1[h(V) \ge \tfrac12])`.

    Returns the quantized weights :math:`\tilde W` (the layer is not changed).

    Source: Nagel et al. 2020, eq. (21)-(25) (layer-wise local loss, without the activation
    function), section 5 (hyperparameters).
    Checked by ``tests/optim/quant/test_quant_adaround.py::test_adaround_beats_nearest_on_reconstruction``.
    """
    if not isinstance(layer, LAYERS):
        raise TypeError(f"layer must be Linear or Conv2d, got {type(layer).__name__}")
    steps, batch_size = check_count(steps, "steps"), check_count(batch_size, "batch_size")
    x = np.asarray(x, dtype=layer.weight.dtype)
    if len(x) == 0:
        raise ValueError("x must hold at least one sample")
    w = layer.weight.data
    v = nn.Parameter(adaround_init(w, scale, axis).astype(w.dtype))
    optimizer = optimizers.Adam([v], lr=lr)
    rng = np.random.default_rng(seed)
    with minnet.no_grad():
        target_all = layer_forward(layer, minnet.Tensor(x), layer.weight, None).data
    for step in range(steps):
        idx = rng.choice(len(x), size=min(batch_size, len(x)), replace=False)
        xb = minnet.Tensor(x[idx])
        w_soft = adaround_weights(w, scale, qmin, qmax, v, axis)
        out = layer_forward(layer, xb, w_soft, None)
        loss = ((out - target_all[idx]) ** 2).sum() / len(idx)
        if step >= int(0.2 * steps):
            loss = loss + reg_weight * adaround_regularizer(v, beta_schedule(step, steps))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return adaround_weights(w, scale, qmin, qmax, v.data, axis, hard=True)


def _stage_inputs(model, stage, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The inputs that ``stage`` of ``model`` receives when ``model`` runs on ``x``."""
    seen: list[np.ndarray] = []
    handle = stage.register_forward_pre_hook(lambda m, args: seen.append(args[0].data.copy()))
    try:
        with minnet.no_grad():
            for i in range(0, len(x), batch_size):
                model(minnet.Tensor(x[i:i + batch_size]))
    finally:
        handle.remove()
    return np.concatenate(seen)


def adaround_model(model, x: object, **options):
    """A copy of a converted model (``convert``'s ``QuantSequential``, weight quantizers with a
    zero point of 0, as ``QConfig``'s symmetric weights) whose layer weights are replaced by
    ``adaround_layer``'s, layer by layer in order; each layer is fitted on the inputs it
    receives in the quantized model with the layers before it already rounded. The new
    weights lie on their quantizer's grid, so the quantizer leaves them unchanged.
    ``options`` go to ``adaround_layer``.

    Source: Nagel et al. 2020, section 5 (layer by layer, on the quantized network's inputs).
    Checked by ``tests/optim/quant/test_quant_adaround.py::test_adaround_model_weights_on_grid_and_error_not_worse``.
    """
    if not isinstance(model, QuantSequential) or not model.frozen:
        raise TypeError("adaround_model needs a frozen QuantSequential (the output of convert)")
    x = np.asarray(x, dtype=np.float32)
    model = copy.deepcopy(model).eval()
    for stage in (m for m in model if isinstance(m, QuantStage)):
        wq = stage.weight_quant
        if not isinstance(wq, FixedFakeQuantize) or np.any(wq.zero_point != 0):
            raise ValueError("adaround_model needs affine weight quantizers with zero point 0")
        inputs = _stage_inputs(model, stage, x)
        rounded = adaround_layer(stage.float_layer(), inputs, wq.scale, wq.qmin, wq.qmax,
                                 wq.axis, **options)
        nn.parametrize.original(stage.layer, "weight").data = rounded
    return model
