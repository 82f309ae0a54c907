r"""Fake-quantization modules and the quantized layer they wrap.

* ``FixedFakeQuantize``: frozen ``(scale, zero_point)``; what ``convert`` produces;
* ``FakeQuantize``: an observer sets the qparams while training (``torch.ao.quantization``'s
  ``FakeQuantize``), the clipped STE passes gradients;
* ``LSQFakeQuantize``: a learned step size (Esser et al. 2020);
* ``QuantStage``: a Linear/Conv2d with a fake-quantized weight (and bias), an optional fused
  ReLU and a fake-quantized output, the unit that integer inference runs as one kernel.

Every quantizer maps a Tensor to a Tensor and has ``frozen()``, the ``FixedFakeQuantize`` with
its current qparams.
"""
from __future__ import annotations

import numpy as np

from minnet import functional as F
from minnet import nn
from minnet.tensor import Tensor

from ._layers import layer_forward
from .observers import Observer
from .ranges import int_range
from .ste import fake_quantize_ste, lsq_fake_quantize, lsq_grad_scale, lsq_initial_step


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


class QuantStage(nn.Module):
    r"""One quantized layer,
    :math:`y = q_{out}(\operatorname{act}(\operatorname{layer}(x;\ q_w(W),\ q_b(b))))`, with
    ``act`` a fused ReLU or the identity and each quantizer optional (None: float)."""

    def __init__(self, layer: nn.Module, relu: bool = False, weight_quant: nn.Module | None = None,
                 output_quant: nn.Module | None = None, bias_quant: nn.Module | None = None):
        super().__init__()
        self.layer, self.relu = layer, bool(relu)
        self.weight_quant, self.output_quant = weight_quant, output_quant
        self.bias_quant = bias_quant

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.layer.weight, self.layer.bias
        if self.weight_quant is not None:
            weight = self.weight_quant(weight)
        if bias is not None and self.bias_quant is not None:
            bias = self.bias_quant(bias)
        y = layer_forward(self.layer, x, weight, bias)
        if self.relu:
            y = F.relu(y)
        return y if self.output_quant is None else self.output_quant(y)

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


TRAINABLE_QUANTIZERS = (FakeQuantize, LSQFakeQuantize)
QUANTIZERS = (FixedFakeQuantize, *TRAINABLE_QUANTIZERS)


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
