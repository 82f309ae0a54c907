r"""Quantization-aware training: ``prepare_qat`` turns a trained float model into a
``QuantSequential`` whose weights and activations pass through trainable fake quantizers;
train it with ``minnet.train.fit`` and freeze it with ``convert``.

Weights: ``"lsq"`` (a learned per-channel step, Esser et al. 2020) or ``"ste"`` (the current
per-channel range from the weight observer, clipped STE). Activations: ``"ste"`` (a
moving-average min-max observer, as ``torch.ao.quantization``'s default QAT configuration) or
``"lsq"``. BatchNorm is folded with its running statistics before training (Jacob et al.
2018, section 3.2, simplified: the statistics are frozen).
"""
from __future__ import annotations

from minnet import nn

from ._layers import Stage, flat_modules, fold_batchnorms, plan_stages
from .fake_quant import FakeQuantize, LSQFakeQuantize, QuantSequential, QuantStage
from .qconfig import QConfig

METHODS = ("lsq", "ste")


def _check_method(value: str, name: str) -> str:
    if value not in METHODS:
        raise ValueError(f"{name} must be one of {METHODS}, got {value!r}")
    return value


def _weight_quantizer(config: QConfig, method: str, weight) -> nn.Module:
    if method == "lsq":
        return LSQFakeQuantize(config.weight_bits, signed=True,
                               restricted=config.restricted_weights, channels=weight.shape[0])
    return FakeQuantize(config.weight_observer_instance(), track_current=True)


def _activation_quantizer(config: QConfig, method: str) -> nn.Module:
    if method == "lsq":
        return LSQFakeQuantize(config.activation_bits, signed=config.signed_activations,
                               per_sample=True)
    return FakeQuantize(config.activation_observer_instance("moving_average"))


def prepare_qat(model: nn.Module, config: QConfig | None = None, *, weight_method: str = "lsq",
                activation_method: str = "ste", **options) -> QuantSequential:
    """A trainable fake-quantized copy of a float ``model`` (in training mode).

    ``config`` is a ``QConfig`` or its fields as keywords (``weight_bits=2``); its
    ``weight_observer`` is used by ``weight_method="ste"``; activations with ``"ste"`` always
    use a moving-average min-max observer. ``weight_only`` keeps activations in float.
    The model's Parameters include every LSQ step, so an optimizer built on
    ``qat_model.parameters()`` learns them.

    Checked by ``tests/optim/quant/test_quant_qat.py``.
    """
    if config is None:
        config = QConfig(**options)
    elif options:
        raise TypeError(f"pass either config or keyword options, got both ({sorted(options)})")
    weight_method = _check_method(weight_method, "weight_method")
    activation_method = _check_method(activation_method, "activation_method")
    modules = fold_batchnorms(flat_modules(model))
    out: list[nn.Module] = []
    if not config.weight_only:
        out.append(_activation_quantizer(config, activation_method))
    for item in plan_stages(modules):
        if not isinstance(item, Stage):
            out.append(modules[item])
            continue
        layer = modules[item.layer]
        output_quant = None if config.weight_only else _activation_quantizer(config,
                                                                             activation_method)
        out.append(QuantStage(layer, item.relu is not None,
                              _weight_quantizer(config, weight_method, layer.weight.data),
                              output_quant))
    return QuantSequential(*out, config=config).train()
