r"""Integer-only inference of a converted model (Jacob et al. 2018).

``IntegerModel(converted)`` turns a frozen ``QuantSequential`` into a list of integer
operations: the input is quantized once (the only floating-point step besides reading the
logits out), each ``QuantStage`` becomes one ``quantized_linear`` / ``quantized_conv2d`` call
(int8 weights, int32 bias at scale :math:`s_{in} s_w`, fixed-point requantization by
:math:`M = s_{in} s_w / s_{out}`, ReLU fused as a clamp), max pooling and flattening act on the
codes directly (both commute with a monotone affine map), and the last codes are dequantized.
Weights are whatever int8 codes and per-channel scale their quantizer stores
(``codes_and_scale``): affine codes, binary or ternary codes with a scale :math:`\alpha`
(BinaryConnect / XNOR-Net / TWN) or DoReFa's odd codes with scale :math:`1/(2^k - 1)`.
"""
from __future__ import annotations

import numpy as np

from minnet import nn
from minnet.kernels.pool_values import max_pool2d_values
from minnet.ops.conv import int_pair

from ._layers import PASSTHROUGH
from .affine import quantize
from .fake_quant import FixedFakeQuantize, QuantSequential, QuantStage
from .int_conv import conv2d_kernel
from .int_linear import MAX_INTEGER_BITS, check_operands, linear_kernel
from .ranges import quant_dtype
from .requant import quantize_bias, quantize_multiplier


def max_pool2d_codes(q: np.ndarray, kernel_size, stride=None, padding=0) -> np.ndarray:
    r"""Max pooling of codes (N, C, H, W): :math:`\max` commutes with the increasing map
    :math:`q \mapsto (q - z) s`, so pooling codes equals quantizing the pooled real values.
    Padding never wins (it is the dtype's smallest value). Geometry as ``nn.MaxPool2d``; runs
    ``minnet.kernels.pool_values.max_pool2d_values`` (the active backend's kernel).

    Checked by ``tests/optim/quant/test_quant_integer_model.py::test_max_pool_codes_commutes``.
    """
    kh, kw = int_pair("kernel_size", kernel_size, 1)
    sh, sw = int_pair("stride", (kh, kw) if stride is None else stride, 1)
    ph, pw = int_pair("padding", padding, 0)
    return max_pool2d_values(q, (kh, kw), (sh, sw), (ph, pw))


class _Layer:
    """One fused integer layer: codes in, codes out."""

    def __init__(self, stage: QuantStage, in_scale: float, in_zero_point: int, in_dtype):
        layer, wq, out = stage.layer, stage.weight_quant, stage.output_quant
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            raise ValueError(f"integer conv supports groups=1, got groups={layer.groups}")
        weight = stage.float_weight()
        w_q, w_scale = wq.codes_and_scale(weight)
        w_scale = np.broadcast_to(np.asarray(w_scale, np.float64), (weight.shape[0],))
        int8 = np.iinfo(np.int8)
        if w_q.min() < int8.min or w_q.max() > int8.max:
            raise ValueError(f"weight codes must fit int8, got [{w_q.min()}, {w_q.max()}] "
                             f"from {type(wq).__name__}")
        self.w_q = w_q.astype(np.int8)
        self.w_q.flags.writeable = False  # frozen: int_gemm may keep a packed copy
        bias = np.zeros(w_scale.shape) if layer.bias is None else stage.float_bias()
        self.bias_q = quantize_bias(bias, in_scale, w_scale, axis=0)
        self.M0, self.shift = quantize_multiplier(in_scale * w_scale / float(out.scale))
        self.in_zero_point, self.out_zero_point = in_zero_point, int(out.zero_point)
        self.qmin, self.qmax, self.relu = out.qmin, out.qmax, stage.relu
        check_operands(in_dtype, in_zero_point, self.w_q, self.bias_q, self.M0, self.shift,
                       self.out_zero_point, self.qmin, self.qmax)
        self.conv = None
        if isinstance(layer, nn.Conv2d):
            self.conv = (int_pair("stride", layer.stride, 1), int_pair("padding", layer.padding, 0),
                         int_pair("dilation", layer.dilation, 1))

    def __call__(self, q: np.ndarray) -> np.ndarray:
        args = (q, self.in_zero_point, self.w_q, self.bias_q, self.M0, self.shift,
                self.out_zero_point, self.qmin, self.qmax, self.relu)
        return linear_kernel(*args) if self.conv is None else conv2d_kernel(*args, *self.conv)


class IntegerModel:
    """Integer-only inference of a frozen, fully quantized ``QuantSequential`` (``convert``'s
    output with activations quantized, weights and activations of at most 8 bits).

    ``model(x)`` takes float inputs and returns float logits; ``forward_codes`` maps input
    codes to output codes. The kernels follow ``MINNET_BACKEND`` (NumPy reference or Numba).
    """

    def __init__(self, model: QuantSequential):
        if not isinstance(model, QuantSequential) or not model.frozen:
            raise TypeError("IntegerModel needs a frozen QuantSequential (the output of convert)")
        config = model.config
        if config.weight_only:
            raise ValueError("IntegerModel needs quantized activations; the model is weight-only")
        if max(config.weight_bits, config.activation_bits) > MAX_INTEGER_BITS:
            raise ValueError(f"integer inference supports up to {MAX_INTEGER_BITS}-bit weights "
                             f"and activations (int32 accumulation), got "
                             f"{config.weight_bits} and {config.activation_bits}")
        modules = list(model)
        head = modules[0]
        if not isinstance(head, FixedFakeQuantize):
            raise ValueError("the model must start with its input quantizer")
        self.input_qparams = (float(head.scale), int(head.zero_point), head.qmin, head.qmax)
        quantize(np.zeros(1, np.float32), *self.input_qparams)  # validates the qparams once
        self.input_dtype = quant_dtype(head.qmin, head.qmax)
        scale, zero_point, dtype = self.input_qparams[0], self.input_qparams[1], self.input_dtype
        self.ops = []
        for module in modules[1:]:
            if isinstance(module, QuantStage):
                self.ops.append(_Layer(module, scale, zero_point, dtype))
                out = module.output_quant
                scale, zero_point = float(out.scale), int(out.zero_point)
                dtype = quant_dtype(out.qmin, out.qmax)
            elif isinstance(module, nn.MaxPool2d) and not module.ceil_mode:
                self.ops.append(lambda q, m=module: max_pool2d_codes(q, m.kernel_size, m.stride,
                                                                      m.padding))
            elif isinstance(module, nn.Flatten):
                self.ops.append(lambda q, m=module: _flatten(q, m.start_dim, m.end_dim))
            elif isinstance(module, nn.ReLU):
                self.ops.append(lambda q, z=zero_point: np.maximum(q, np.asarray(z, q.dtype)))
            elif not isinstance(module, PASSTHROUGH):
                raise TypeError(f"cannot run {type(module).__name__} on integer codes")
        self.output_qparams = (scale, zero_point)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Input codes :math:`\\operatorname{clamp}(\\operatorname{round}(x/s) + z)`:
        ``quantize`` with its qparams validated once, when the model was built (per call only
        NaN is rejected), since this runs on every inference."""
        x = np.asarray(x, dtype=np.float32)
        if np.isnan(x).any():
            raise ValueError("x must not contain NaN")
        scale, zero_point, qmin, qmax = self.input_qparams
        with np.errstate(over="ignore"):  # huge |x| / s overflows to +-inf, then saturates
            codes = np.rint(x / np.float32(scale)) + np.float32(zero_point)
        return np.clip(codes, qmin, qmax).astype(self.input_dtype)

    def forward_codes(self, q: np.ndarray) -> np.ndarray:
        """Integer operations only, input codes to output codes."""
        for op in self.ops:
            q = op(q)
        return q

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Float outputs :math:`(q_{out} - z_{out})\\, s_{out}` (``dequantize``, float32) of
        float inputs ``x``."""
        scale, zero_point = self.output_qparams
        codes = self.forward_codes(self.quantize_input(x))
        return (codes.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class indices (argmax of the output codes), in batches."""
        x = np.asarray(x)
        return np.concatenate([self.forward_codes(self.quantize_input(x[i:i + batch_size]))
                               .argmax(axis=1) for i in range(0, len(x), batch_size)])


def _flatten(q: np.ndarray, start_dim: int, end_dim: int) -> np.ndarray:
    start, end = start_dim % q.ndim, end_dim % q.ndim
    return q.reshape(q.shape[:start] + (-1,) + q.shape[end + 1:])
