r"""Quantization-aware training: ``prepare_qat`` turns a trained float model into a
``QuantSequential`` whose weights and activations pass through trainable fake quantizers;
train it with ``minnet.train.fit`` and freeze it with ``convert``.

Weights: ``"lsq"`` (a learned per-channel step, Esser et al. 2020), ``"ste"`` (the current
per-channel range from the weight observer, clipped STE), ``"binary"`` (BinaryConnect's sign
with XNOR-Net's per-channel scale), ``"binary_connect"`` (pure ±1, Courbariaux et al. 2015),
``"ternary"`` (TWN, Li & Liu 2016) or ``"dorefa"`` (Zhou et al. 2016, ``weight_bits`` bits).
Activations: ``"ste"`` (a moving-average min-max observer, as ``torch.ao.quantization``'s
default QAT configuration), ``"lsq"``, ``"pact"`` (a learned clipping level, Choi et al. 2018)
or ``"dorefa"`` (the fixed range [0, 1]); PACT and DoReFa clip at 0, so they quantize only the
outputs of fused ReLUs, and the model input and the outputs without a ReLU use ``"ste"``.

BatchNorm is folded with its running statistics before training (``batchnorm="fold"``:
Jacob et al. 2018, section 3.2, simplified, the statistics are frozen), or trained folded
with batch statistics and the σ/σ_B correction (``batchnorm="batch_stats"``:
``BnFoldQuantStage``, Krishnamoorthi 2018 section 3.2), folded for good by ``convert``.
"""
from __future__ import annotations

import copy

from minnet import nn

from ._layers import BATCHNORMS, LAYERS, Stage, flat_modules, fold_batchnorms, plan_stages
from .bn_fold_qat import BnFoldQuantStage
from .fake_quant import (
    BinaryFakeQuantize,
    DoReFaActivationQuantize,
    DoReFaWeightQuantize,
    FakeQuantize,
    LSQFakeQuantize,
    PACTFakeQuantize,
    QuantSequential,
    QuantStage,
)
from .qconfig import QConfig

WEIGHT_METHODS = ("lsq", "ste", "binary", "binary_connect", "ternary", "dorefa")
ACTIVATION_METHODS = ("lsq", "ste", "pact", "dorefa")
CLIPPING_AT_ZERO = ("pact", "dorefa")
BATCHNORM_MODES = ("fold", "batch_stats")


def _check_method(value: str, name: str, methods: tuple[str, ...]) -> str:
    if value not in methods:
        raise ValueError(f"{name} must be one of {methods}, got {value!r}")
    return value


def _weight_quantizer(config: QConfig, method: str, weight) -> nn.Module:
    if method == "lsq":
        return LSQFakeQuantize(config.weight_bits, signed=True,
                               restricted=config.restricted_weights, channels=weight.shape[0])
    if method in ("binary", "binary_connect", "ternary"):
        return BinaryFakeQuantize(ternary=method == "ternary", scaled=method != "binary_connect")
    if method == "dorefa":
        return DoReFaWeightQuantize(config.weight_bits)
    return FakeQuantize(config.weight_observer_instance(), track_current=True)


def _activation_quantizer(config: QConfig, method: str, after_relu: bool) -> nn.Module:
    if method == "lsq":
        return LSQFakeQuantize(config.activation_bits, signed=config.signed_activations,
                               per_sample=True)
    if method == "pact" and after_relu:
        return PACTFakeQuantize(config.activation_bits)
    if method == "dorefa" and after_relu:
        return DoReFaActivationQuantize(config.activation_bits)
    return FakeQuantize(config.activation_observer_instance("moving_average"))


def _split_batchnorms(modules: list[nn.Module]) -> tuple[list[nn.Module], list]:
    """Copies of ``modules`` without their BatchNorms, and for each kept module the BatchNorm
    that followed it (None if none). A BatchNorm after anything but a layer is a TypeError."""
    kept: list[nn.Module] = []
    bns: list = []
    for module in modules:
        if isinstance(module, BATCHNORMS):
            if not kept or not isinstance(kept[-1], LAYERS) or bns[-1] is not None:
                raise TypeError("a BatchNorm must follow a Linear or Conv2d to be folded, got "
                                f"{type(kept[-1]).__name__ if kept else 'nothing'} before it")
            bns[-1] = copy.deepcopy(module)
        else:
            kept.append(copy.deepcopy(module))
            bns.append(None)
    return kept, bns


def prepare_qat(model: nn.Module, config: QConfig | None = None, *, weight_method: str = "lsq",
                activation_method: str = "ste", batchnorm: str = "fold",
                **options) -> QuantSequential:
    """A trainable fake-quantized copy of a float ``model`` (in training mode).

    ``config`` is a ``QConfig`` or its fields as keywords (``weight_bits=2``); its
    ``weight_observer`` is used by ``weight_method="ste"``; activations with ``"ste"`` always
    use a moving-average min-max observer. ``weight_only`` keeps activations in float.
    The model's Parameters include every LSQ step, so an optimizer built on
    ``qat_model.parameters()`` learns them. ``batchnorm`` is ``"fold"`` (running statistics,
    before training) or ``"batch_stats"`` (``BnFoldQuantStage`` for each layer followed by a
    BatchNorm).

    Checked by ``tests/optim/quant/test_quant_qat.py`` and
    ``tests/optim/quant/test_quant_bn_fold_qat.py::test_prepare_qat_with_batch_stats_trains_and_converts``.
    """
    if config is None:
        config = QConfig(**options)
    elif options:
        raise TypeError(f"pass either config or keyword options, got both ({sorted(options)})")
    weight_method = _check_method(weight_method, "weight_method", WEIGHT_METHODS)
    activation_method = _check_method(activation_method, "activation_method", ACTIVATION_METHODS)
    if activation_method in CLIPPING_AT_ZERO and config.signed_activations:
        raise ValueError(f"activation_method={activation_method!r} gives unsigned codes; it "
                         "needs signed_activations=False")
    batchnorm = _check_method(batchnorm, "batchnorm", BATCHNORM_MODES)
    if batchnorm == "fold":
        modules = fold_batchnorms(flat_modules(model))
        bns = [None] * len(modules)
    else:
        modules, bns = _split_batchnorms(flat_modules(model))
    out: list[nn.Module] = []
    if not config.weight_only:
        out.append(_activation_quantizer(config, activation_method, after_relu=False))
    for item in plan_stages(modules):
        if not isinstance(item, Stage):
            out.append(modules[item])
            continue
        layer = modules[item.layer]
        output_quant = None
        if not config.weight_only:
            output_quant = _activation_quantizer(config, activation_method, item.relu is not None)
        weight_quant = _weight_quantizer(config, weight_method, layer.weight.data)
        if bns[item.layer] is None:
            out.append(QuantStage(layer, item.relu is not None, weight_quant, output_quant))
        else:
            out.append(BnFoldQuantStage(layer, bns[item.layer], item.relu is not None,
                                        weight_quant, output_quant))
    return QuantSequential(*out, config=config).train()
