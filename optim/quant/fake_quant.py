r"""Fake-quantization modules and the quantized layer they wrap.

* ``FixedFakeQuantize``: frozen ``(scale, zero_point)``; what ``convert`` produces;
* ``FakeQuantize``: an observer sets the qparams while training (``torch.ao.quantization``'s
  ``FakeQuantize``), the clipped STE passes gradients;
* ``LSQFakeQuantize``: a learned step size (Esser et al. 2020);
* ``PACTFakeQuantize``: a learned clipping level for activations (Choi et al. 2018);
* ``DoReFaActivationQuantize``: k-bit activations on [0, 1] (Zhou et al. 2016);
* ``BinaryFakeQuantize`` (BinaryConnect / XNOR-Net binary or TWN ternary weights) and
  ``DoReFaWeightQuantize``: weight quantizers whose codes and scale are a function of the
  weight alone, so they stay as they are when frozen and run on the integer engine;
* ``QuantStage``: a Linear/Conv2d with a fake-quantized weight (and bias), an optional fused
  ReLU and a fake-quantized output, the unit that integer inference runs as one kernel.

Every quantizer maps a Tensor to a Tensor and has ``frozen()``, the ``FixedFakeQuantize`` with
its current qparams (or, for the weight-rule quantizers, a copy of itself). A weight quantizer
also has ``codes_and_scale(w)``: the integer codes (zero point 0) and per-channel scale that
integer inference stores.
"""
from __future__ import annotations

import copy

import numpy as np

from minnet import functional as F
from minnet import nn
from minnet.tensor import Tensor, no_grad

from .affine import quantize
from .binary import binarize, binary_connect, binary_connect_mask, ternarize
from .dorefa import dorefa_activation_ste, dorefa_weight_codes, dorefa_weight_ste
from .observers import Observer
from .pact import pact_fake_quantize
from .ranges import int_range
from .ste import (fake_quantize_ste, lsq_fake_quantize, lsq_grad_scale, lsq_initial_step,
                  straight_through)


class FixedFakeQuantize(nn.Module):
    """``fake_quantize_ste`` with constant qparams (buffers ``scale`` and ``zero_point``, scalars
    or per-channel along ``axis``)."""

    def __init__(self, scale, zero_point, qmin: int, qmax: int, axis: int | None = None):
        super().__init__()
        self.register_buffer("scale", np.array(scale, dtype=np.float32))
        self.register_buffer("zero_point", np.array(zero_point, dtype=np.int64))
        self.qmin, self.qmax, self.axis = int(qmin), int(qmax), axis

    def forward(self, x: Tensor) -> Tensor:
        return fake_quantize_ste(x, self.scale, self.zero_point, self.qmin, self.qmax, self.axis)

    def frozen(self) -> FixedFakeQuantize:
        return FixedFakeQuantize(self.scale, self.zero_point, self.qmin, self.qmax, self.axis)

    def codes_and_scale(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``quantize(w)`` with these qparams, and the scale."""
        return (quantize(w, self.scale, self.zero_point, self.qmin, self.qmax, self.axis),
                self.scale)

    def extra_repr(self) -> str:
        return f"qmin={self.qmin}, qmax={self.qmax}, axis={self.axis}"


class FakeQuantize(nn.Module):
    """Observer-driven fake quantization: in training mode ``observer`` sees each input and
    the qparams are recomputed from it; in eval mode the last qparams are used (the first
    input initialises them). With ``track_current`` the observer is reset before every input,
    in either mode, so the range is always the current tensor's (for weights, which change at
    every step).

    State (as ``torch.ao.quantization.FakeQuantize``'s buffers): resizable buffers ``scale``,
    ``zero_point`` and ``observer_<key>`` for each of the observer's ``state_keys``
    (``observer_min``, ``observer_max`` for the min-max observers), None until data is seen.
    The observer's statistics are mirrored into them after each observation and pushed back
    into it by ``load_state_dict``, so a loaded model evaluates with the saved qparams and
    trains on from the saved running range. Histogram and MSE observers are calibration-only:
    after a load they start afresh (the saved qparams are still used in eval mode).
    Checked by ``tests/optim/quant/test_quant_qat.py::test_loaded_qat_model_evaluates_and_trains_on_exactly``
    and ``::test_fit_resumed_after_epoch_one_equals_an_uninterrupted_qat_run``.
    """

    def __init__(self, observer: Observer, track_current: bool = False):
        super().__init__()
        if not isinstance(observer, Observer):
            raise TypeError(f"observer must be an Observer, got {type(observer).__name__}")
        self.observer, self.track_current = observer, bool(track_current)
        for name in ("scale", "zero_point", *self._observer_buffers()):
            self.register_buffer(name, None, resizable=True)

    def _observer_buffers(self) -> dict[str, str]:
        """Buffer name -> observer state key."""
        return {f"observer_{key}": key for key in self.observer.state_keys}

    def forward(self, x: Tensor) -> Tensor:
        obs = self.observer
        if self.training or self.track_current or self.scale is None:
            if self.track_current:
                obs.reset()
            obs(x.data)
            self.scale, self.zero_point = obs.calculate_qparams()
            state = obs.state_dict()
            for name, key in self._observer_buffers().items():
                setattr(self, name, state[key])
        return fake_quantize_ste(x, self.scale, self.zero_point, obs.qmin, obs.qmax, obs.axis)

    def _load_state_dict_post(self) -> None:
        buffers = self._observer_buffers()
        if buffers and all(getattr(self, name) is not None for name in buffers):
            self.observer.load_state_dict({key: getattr(self, name)
                                           for name, key in buffers.items()})

    def frozen(self) -> FixedFakeQuantize:
        if self.scale is None:
            raise ValueError(f"{type(self).__name__} has seen no data: run the model on data "
                             "(calibrate or train) before convert()")
        obs = self.observer
        return FixedFakeQuantize(self.scale, self.zero_point, obs.qmin, obs.qmax, obs.axis)

    def extra_repr(self) -> str:
        return f"observer={type(self.observer).__name__}, bits={self.observer.bits}"


class LSQFakeQuantize(nn.Module):
    r"""Learned step size quantization: ``lsq_fake_quantize`` with a Parameter ``step``
    (per tensor, or one per channel along axis 0 when ``channels`` is given), initialised on
    the first input by ``lsq_initial_step``. The step's gradient is scaled by
    :math:`g = 1/\sqrt{N Q_P}`, :math:`N` the elements per channel, or per sample when
    ``per_sample`` (activations: the features of one sample)."""

    def __init__(self, bits: int, *, signed: bool = True, restricted: bool = False,
                 channels: int | None = None, per_sample: bool = False):
        super().__init__()
        self.qmin, self.qmax = int_range(bits, signed, restricted)
        self.bits, self.per_sample = bits, bool(per_sample)
        self.axis = None if channels is None else 0
        shape = () if channels is None else (int(channels),)
        self.step = nn.Parameter(np.ones(shape, dtype=np.float32))
        self.register_buffer("initialized", np.array(False))

    def forward(self, x: Tensor) -> Tensor:
        if not self.initialized:
            self.step.data[...] = lsq_initial_step(x.data, self.qmax, self.axis)
            self.initialized = np.array(True)
        # an optimizer step can push s to 0 or below; project it back onto s >= eps
        np.maximum(self.step.data, np.finfo(self.step.dtype).eps, out=self.step.data)
        n = x.size // (x.shape[0] if self.per_sample else 1) // self.step.size
        return lsq_fake_quantize(x, self.step, self.qmin, self.qmax,
                                 lsq_grad_scale(n, self.qmax), self.axis)

    def frozen(self) -> FixedFakeQuantize:
        if not self.initialized:
            raise ValueError("LSQFakeQuantize has seen no data: run the model on data before "
                             "convert()")
        zero = np.zeros(self.step.shape, dtype=np.int64)
        return FixedFakeQuantize(self.step.data, zero, self.qmin, self.qmax, self.axis)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, qmin={self.qmin}, qmax={self.qmax}, axis={self.axis}"


class PACTFakeQuantize(nn.Module):
    r"""PACT activations: ``pact_fake_quantize`` with a Parameter :math:`\alpha` (initialised
    to ``alpha``, 10 in the paper) and its L2 regularisation :math:`\lambda_\alpha`
    (``alpha_decay``) applied in the backward pass. Codes are unsigned, :math:`[0, 2^k - 1]`;
    ``frozen()`` is the affine quantizer with scale :math:`\alpha / (2^k - 1)`, zero point 0.
    Checked by ``tests/optim/quant/test_quant_pact.py::test_pact_qat_converts_to_an_equal_affine_quantizer``.
    """

    def __init__(self, bits: int, alpha: float = 10.0, alpha_decay: float = 1e-4):
        super().__init__()
        if not (np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be positive and finite, got {alpha}")
        if not (np.isfinite(alpha_decay) and alpha_decay >= 0):
            raise ValueError(f"alpha_decay must be finite and >= 0, got {alpha_decay}")
        self.qmin, self.qmax = int_range(bits, signed=False)
        self.bits, self.alpha_decay = bits, float(alpha_decay)
        self.alpha = nn.Parameter(np.array(alpha, dtype=np.float32))

    def forward(self, x: Tensor) -> Tensor:
        # an optimizer step can push alpha to 0 or below; project it back onto alpha >= eps
        np.maximum(self.alpha.data, np.finfo(self.alpha.dtype).eps, out=self.alpha.data)
        return pact_fake_quantize(x, self.alpha, self.bits, self.alpha_decay)

    def frozen(self) -> FixedFakeQuantize:
        scale = self.alpha.data / self.alpha.dtype.type(self.qmax)
        return FixedFakeQuantize(scale, 0, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, alpha_decay={self.alpha_decay}"


class DoReFaActivationQuantize(nn.Module):
    r"""DoReFa activations ``dorefa_activation_ste``: :math:`\operatorname{quantize}_k(\operatorname
    {clip}(x, 0, 1))`; ``frozen()`` is the affine quantizer with scale :math:`1/(2^k - 1)`,
    zero point 0, codes :math:`[0, 2^k - 1]`.
    Checked by ``tests/optim/quant/test_quant_dorefa.py::test_dorefa_qat_trains_converts_and_runs_as_integers``.
    """

    def __init__(self, bits: int):
        super().__init__()
        self.qmin, self.qmax = int_range(bits, signed=False)
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        return dorefa_activation_ste(x, self.bits)

    def frozen(self) -> FixedFakeQuantize:
        return FixedFakeQuantize(1.0 / self.qmax, 0, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class _WeightRule(nn.Module):
    """A weight quantizer whose codes and scale are a function of the weight alone (no
    learned state): frozen, it is a copy of itself. ``scale`` (a resizable buffer, shape
    ``(C_out,)``) is the last weight's; integer inference reads ``codes_and_scale``."""

    track_current = True  # convert() re-runs it on the final weights

    def __init__(self, qmin: int, qmax: int):
        super().__init__()
        self.qmin, self.qmax, self.axis = qmin, qmax, 0
        self.register_buffer("scale", None, resizable=True)

    def codes_and_scale(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def frozen(self) -> _WeightRule:
        return copy.deepcopy(self).eval()


class BinaryFakeQuantize(_WeightRule):
    r"""Binary or ternary weights for QAT.

    * ``ternary=False``: BinaryConnect, :math:`w_b = \alpha_o \operatorname{sign}(w)`
      (``binary_connect``), with :math:`\alpha_o = \lVert W_o\rVert_1 / n` per output channel
      when ``scaled`` (XNOR-Net's binary-weight scale, ``binarize``) and :math:`\alpha = 1`
      otherwise (the paper's pure ±1 weights, meant for networks with BatchNorm);
    * ``ternary=True``: TWN, :math:`w_t = \alpha_o T` (``ternarize`` per output channel).

    The gradient is the clipped STE :math:`1[|w| \le 1]` (``binary_connect_mask``), and in
    training mode the real-valued weights are clipped to :math:`[-1, 1]` in place before each
    forward pass, BinaryConnect's clip after every update (the tensor given is clipped: the
    layer's weight Parameter in a ``QuantStage``, the folded weight in a ``BnFoldQuantStage``). Codes are int8 in
    :math:`\{-1, 0, +1\}`.

    Source: Courbariaux et al. 2015, algorithm 1; Rastegari et al. 2016, section 3.1;
    Li & Liu 2016, section 2.
    Checked by ``tests/optim/quant/test_quant_binary_qat.py::test_binary_connect_gradient_is_clipped_ste``
    and ``::test_binary_and_ternary_qat_run_as_integers``.
    """

    def __init__(self, ternary: bool = False, scaled: bool = True):
        super().__init__(-1, 1)
        self.ternary, self.scaled = bool(ternary), bool(scaled)

    def codes_and_scale(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.ternary:
            codes, alpha, _ = ternarize(w, axis=0)
        else:
            codes, alpha = binary_connect(w).astype(np.int8), binarize(w, axis=0)[1]
        return codes, (alpha if self.scaled else np.ones_like(alpha))

    def forward(self, w: Tensor) -> Tensor:
        if self.training:
            np.clip(w.data, -1, 1, out=w.data)
        codes, alpha = self.codes_and_scale(w.data)
        self.scale = alpha
        values = codes * alpha.reshape((-1,) + (1,) * (w.ndim - 1))
        return straight_through(w, values, binary_connect_mask(w.data))

    def extra_repr(self) -> str:
        return f"ternary={self.ternary}, scaled={self.scaled}"


class DoReFaWeightQuantize(_WeightRule):
    r"""DoReFa k-bit weights (``dorefa_weight_ste``): values
    :math:`c / (2^k - 1)` with odd codes :math:`|c| \le 2^k - 1`, one scale for the tensor
    (repeated per output channel). Integer inference needs :math:`2^k - 1 \le 127`, k ≤ 7.
    Checked by ``tests/optim/quant/test_quant_dorefa.py::test_dorefa_qat_trains_converts_and_runs_as_integers``.
    """

    def __init__(self, bits: int):
        n = 2 ** bits - 1
        super().__init__(-n, n)
        self.bits = bits

    def codes_and_scale(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes, scale = dorefa_weight_codes(w, self.bits)
        return codes, np.full(w.shape[0], scale, dtype=w.dtype)

    def forward(self, w: Tensor) -> Tensor:
        self.scale = self.codes_and_scale(w.data)[1]
        return dorefa_weight_ste(w, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class QuantStage(nn.Module):
    r"""One quantized layer,
    :math:`y = q_{out}(\operatorname{act}(\operatorname{layer}(x;\ q_w(W),\ q_b(b))))`, with
    ``act`` a fused ReLU or the identity and each quantizer optional (None: float).

    The weight and bias quantizers are parametrizations of the layer's parameters
    (``minnet.nn.parametrize``, registered last, after any pruning mask), so ``layer.weight``
    is the fake-quantized weight and they compose with masks and sharing; ``weight_quant`` and
    ``bias_quant`` name them, ``float_weight()`` is the weight that enters ``weight_quant``."""

    def __init__(self, layer: nn.Module, relu: bool = False, weight_quant: nn.Module | None = None,
                 output_quant: nn.Module | None = None, bias_quant: nn.Module | None = None):
        super().__init__()
        self.layer, self.relu = layer, bool(relu)
        self.output_quant = output_quant
        for name, quantizer in (("weight", weight_quant), ("bias", bias_quant)):
            if quantizer is not None:  # None keeps what the layer has
                _set_quantizer(layer, name, quantizer)

    @property
    def weight_quant(self) -> nn.Module | None:
        """The quantizer parametrizing ``layer.weight`` (None: float weights)."""
        return _quantizer(self.layer, "weight")

    @weight_quant.setter
    def weight_quant(self, quantizer: nn.Module | None) -> None:
        _set_quantizer(self.layer, "weight", quantizer)

    @property
    def bias_quant(self) -> nn.Module | None:
        """The quantizer parametrizing ``layer.bias`` (None: float bias)."""
        return _quantizer(self.layer, "bias")

    @bias_quant.setter
    def bias_quant(self, quantizer: nn.Module | None) -> None:
        _set_quantizer(self.layer, "bias", quantizer)

    def float_weight(self) -> np.ndarray:
        """The weight before its quantizer (after any mask or sharing before it)."""
        return _value_before_quantizer(self.layer, "weight")

    def float_bias(self) -> np.ndarray | None:
        """The bias before its quantizer (None if the layer has no bias)."""
        return _value_before_quantizer(self.layer, "bias")

    def float_layer(self) -> nn.Module:
        """A copy of ``layer`` computing with ``float_weight()`` and ``float_bias()``, plain
        Parameters (no parametrization)."""
        layer = nn.parametrize.remove_all_parametrizations(copy.deepcopy(self.layer), False)
        layer.weight.data = self.float_weight()
        if layer.bias is not None:
            layer.bias.data = self.float_bias()
        return layer

    def forward(self, x: Tensor) -> Tensor:
        y = self.layer(x)
        if self.relu:
            y = F.relu(y)
        return y if self.output_quant is None else self.output_quant(y)

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


def _quantizer(layer: nn.Module, name: str) -> nn.Module | None:
    chain = nn.parametrize.parametrizations_of(layer, name)
    return chain[-1] if chain and isinstance(chain[-1], WEIGHT_QUANTIZERS) else None


def _set_quantizer(layer: nn.Module, name: str, quantizer: nn.Module | None) -> None:
    """Replace the quantizer at the end of ``name``'s chain by ``quantizer`` (None: none)."""
    if _quantizer(layer, name) is not None:
        chain = layer.parametrizations._modules[name]
        chain.pop(len(chain) - 1)
        if not len(chain):
            nn.parametrize.remove_parametrizations(layer, name, leave_parametrized=False)
    if quantizer is not None:
        if not isinstance(quantizer, nn.Module):
            raise TypeError(f"a {name} quantizer must be a minnet Module or None, got "
                            f"{type(quantizer).__name__}")
        # unsafe: a quantizer keeps the shape, and calling it here would move its observer
        nn.parametrize.register_parametrization(layer, name, quantizer, unsafe=True)


def _value_before_quantizer(layer: nn.Module, name: str) -> np.ndarray | None:
    if nn.parametrize.is_parametrized(layer, name):
        chain = layer.parametrizations._modules[name]
        value = chain.original
        with no_grad():
            for parametrization in chain[:len(chain) - (_quantizer(layer, name) is not None)]:
                value = parametrization(value)
        return value.data
    param = getattr(layer, name)
    return None if param is None else param.data


TRAINABLE_QUANTIZERS = (FakeQuantize, LSQFakeQuantize, PACTFakeQuantize, DoReFaActivationQuantize)
QUANTIZERS = (FixedFakeQuantize, *TRAINABLE_QUANTIZERS)
WEIGHT_QUANTIZERS = (*QUANTIZERS, _WeightRule)


class QuantSequential(nn.Sequential):
    """A quantized model: an input quantizer (unless weight-only), ``QuantStage`` s and the
    modules between them, with the ``QConfig`` it was made with. Made by ``prepare_qat``
    (trainable quantizers) and ``convert`` (frozen ones)."""

    def __init__(self, *modules: nn.Module, config=None):
        super().__init__(*modules)
        self.config = config

    @property
    def frozen(self) -> bool:
        """True when every quantizer has constant qparams (``convert``'s output)."""
        return not any(isinstance(m, TRAINABLE_QUANTIZERS) for m in self.modules())
