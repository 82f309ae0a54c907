r"""Quantization-aware training with BatchNorm folded, using batch statistics and the
:math:`\sigma / \sigma_B` correction (Krishnamoorthi 2018, section 3.2; Jacob et al. 2018,
section 3.2), as PyTorch's fused ``ConvBn`` QAT modules compute it.

With :math:`\sigma = \sqrt{\sigma^2_{run} + \varepsilon}` from the running variance, the
weight that inference will use, :math:`W_{fold} = W \gamma / \sigma`, is the one that is
fake-quantized in training; the layer output is mapped back to the unfolded scale and
normalised with the batch's statistics:

.. math::
    y = \operatorname{layer}(x;\ q(W \gamma/\sigma)), \qquad
    z = y \frac{\sigma}{\gamma} + b, \qquad
    \operatorname{out} = \gamma \frac{z - \mu_B}{\sigma_B} + \beta
        = \frac{\sigma}{\sigma_B}\, y + \beta + \gamma \frac{b - \mu_B}{\sigma_B}

(:math:`\mu_B, \sigma_B` of :math:`z` per channel; the running statistics are updated from
them). In eval mode :math:`\mu_B, \sigma_B` are the running ones and the output is exactly the
BN-folded layer :math:`\operatorname{layer}(x; q(W_{fold})) + b_{fold}`, which is what
``folded_stage`` returns for ``convert`` and integer inference.
"""
from __future__ import annotations

import copy

import numpy as np

from minnet import functional as F
from minnet import nn
from minnet.tensor import Tensor
from optim.graph.fold import fold_batchnorm

from ._layers import LAYERS, layer_forward
from .fake_quant import QuantStage


def _channel_shape(ndim: int) -> tuple[int, ...]:
    return (1, -1) + (1,) * (ndim - 2)


class BnFoldQuantStage(QuantStage):
    r"""A Linear/Conv2d followed by its BatchNorm (and optionally a fused ReLU), trained with
    the BN folded into the fake-quantized weight as the module docstring states. ``layer``
    and ``bn`` keep their own parameters and running statistics; ``freeze_bn_stats`` makes
    training use (and stop updating) the running statistics, as PyTorch's
    ``freeze_bn_stats`` late in QAT.

    Source: Krishnamoorthi 2018, "Quantizing deep convolutional networks for efficient
    inference: A whitepaper", section 3.2 and figure 8; PyTorch ``torch.ao.nn.intrinsic.qat``
    ``ConvBn2d`` (``_forward_approximate``).
    Checked by ``tests/optim/quant/test_quant_bn_fold_qat.py::test_training_forward_is_conv_then_batch_norm``,
    ``::test_eval_forward_is_the_folded_layer`` and ``::test_matches_torch_conv_bn_qat_module``.
    """

    def __init__(self, layer: nn.Module, bn: nn.Module, relu: bool = False,
                 weight_quant: nn.Module | None = None, output_quant: nn.Module | None = None):
        if not isinstance(layer, LAYERS):
            raise TypeError(f"layer must be Linear or Conv2d, got {type(layer).__name__}")
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or bn.running_var is None:
            raise TypeError(f"bn must be a BatchNorm with running statistics, got "
                            f"{type(bn).__name__}")
        if bn.num_features != layer.weight.shape[0]:
            raise ValueError(f"bn has {bn.num_features} features, the layer "
                             f"{layer.weight.shape[0]} outputs")
        super().__init__(layer, relu, None, output_quant)
        self.bn = bn
        self.register_module("weight_quant", weight_quant)
        self.freeze_bn_stats = False

    @property
    def weight_quant(self) -> nn.Module | None:
        """The quantizer of the folded weight :math:`W\\gamma/\\sigma_B`: computed in
        ``forward``, not a parameter, so a submodule rather than a parametrization."""
        return self._modules.get("weight_quant")

    def _gamma(self):
        bn = self.bn
        return bn.weight if bn.weight is not None else np.ones(bn.num_features, np.float32)

    def _folded_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``fold_batchnorm`` of the layer and the BatchNorm's running statistics."""
        layer, bn = self.layer, self.bn
        return fold_batchnorm(
            layer.weight.data, None if layer.bias is None else layer.bias.data,
            bn.running_mean, bn.running_var, None if bn.weight is None else bn.weight.data,
            None if bn.bias is None else bn.bias.data, bn.eps)

    def forward(self, x: Tensor) -> Tensor:
        layer, bn = self.layer, self.bn
        sigma = np.sqrt(bn.running_var + bn.eps).astype(layer.weight.dtype)
        scale = self._gamma() / sigma                      # gamma / sigma, per channel
        w = layer.weight * F.reshape(scale, (-1,) + (1,) * (layer.weight.ndim - 1))
        # the value as fold_batchnorm computes it (float64, then cast), so that training,
        # eval and the converted model quantize bit-identical folded weights; the constant
        # correction (a few ulps) leaves the gradient alone
        exact, _ = self._folded_arrays()
        w = w + (exact - w.data)
        if self.weight_quant is not None:
            w = self.weight_quant(w)
        y = layer_forward(layer, x, w, None)
        z = y / F.reshape(scale, _channel_shape(y.ndim))
        if layer.bias is not None:
            z = z + F.reshape(layer.bias, _channel_shape(y.ndim))
        out = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                           training=self.training and not self.freeze_bn_stats,
                           momentum=bn.momentum, eps=bn.eps)
        if self.relu:
            out = F.relu(out)
        return out if self.output_quant is None else self.output_quant(out)

    def folded_stage(self) -> QuantStage:
        """A ``QuantStage`` whose layer is a copy of ``layer`` with the BatchNorm folded in by
        its running statistics (``fold_batchnorm``) and with these quantizers (copied): in
        eval mode it computes what this stage computes."""
        layer = copy.deepcopy(self.layer)
        weight, bias = self._folded_arrays()
        nn.parametrize.original(layer, "weight").data = weight  # masks, if any, still apply
        if layer.bias is None:
            layer.bias = nn.Parameter(bias)
        else:
            nn.parametrize.original(layer, "bias").data = bias
        return QuantStage(layer, self.relu, copy.deepcopy(self.weight_quant),
                          copy.deepcopy(self.output_quant))

    def extra_repr(self) -> str:
        return f"relu={self.relu}, freeze_bn_stats={self.freeze_bn_stats}"
