r"""Post-training quantization: ``prepare`` → ``calibrate`` → ``convert``.

``prepare(model)`` copies a float model built from ``nn.Sequential`` containers, folds every
BatchNorm into the layer before it, fuses each Linear/Conv2d with the ReLU right after it, and
attaches observers with forward hooks: one on the model input, one on the output of each
(fused) layer; each layer's weight is observed once, per output channel. ``calibrate`` runs
data through it; ``convert`` freezes the observed ranges into a ``QuantSequential`` of
``FixedFakeQuantize`` s, the simulated quantized model; for codes of up to 8 bits every bias
is quantized to int32 at scale :math:`s_{in} s_w` as integer inference stores it
(``IntegerModel`` runs the result with integer kernels). The same ``convert`` freezes a QAT
model from ``prepare_qat``.

Follows ``torch.ao.quantization``'s eager mode (``prepare`` / ``convert``, observers as
forward hooks, conv-bn-relu fusion) and Jacob et al. 2018, section 3.2 (BN folding) and
section 2.4 (int32 bias, fused activation).
"""
from __future__ import annotations

import copy

import numpy as np

import minnet
from minnet import nn
from minnet.data import DataLoader
from minnet.tensor import as_tensor

from ._checks import check_count
from ._layers import Stage, flat_modules, fold_batchnorms, plan_stages
from .fake_quant import (
    QUANTIZERS,
    FixedFakeQuantize,
    QuantSequential,
    QuantStage,
)
from .int_linear import MAX_INTEGER_BITS
from .qconfig import QConfig
from .requant import INT32_MAX, INT32_MIN


class PreparedModel(nn.Module):
    """A BN-folded copy of a float model with observers on forward hooks (``prepare``'s output).

    ``model`` is the flat ``nn.Sequential``; ``plan`` lists each ``Stage`` (layer index,
    fused ReLU index) or the index of a module passed through; ``weight_observers`` has one
    observer per stage, ``activation_observers`` the input's first, then one per stage.
    """

    def __init__(self, modules: list[nn.Module], config: QConfig):
        super().__init__()
        self.model = nn.Sequential(*modules)
        self.config = config
        self.plan = plan_stages(modules)
        stages = [p for p in self.plan if isinstance(p, Stage)]
        self.weight_observers = []
        for stage in stages:
            observer = config.weight_observer_instance()
            observer(modules[stage.layer].weight.data)
            self.weight_observers.append(observer)
        self.activation_observers = []
        if not config.weight_only:
            self._observe_input(config.activation_observer_instance())
            for stage in stages:
                self._observe_output(modules[stage.output], config.activation_observer_instance())

    def _observe_input(self, observer) -> None:
        def hook(module, args):
            observer(as_tensor(args[0]).data)

        self.activation_observers.append(observer)
        self.model.register_forward_pre_hook(hook)

    def _observe_output(self, module: nn.Module, observer) -> None:
        def hook(module, args, output):
            observer(output.data)

        self.activation_observers.append(observer)
        module.register_forward_hook(hook)

    def forward(self, x):
        return self.model(x)


def prepare(model: nn.Module, config: QConfig | None = None, **options) -> PreparedModel:
    """A copy of ``model`` ready for calibration: BatchNorm folded, layers fused with their
    ReLU, observers attached by forward hooks. ``config`` is a ``QConfig``, or its fields are
    given as keywords (``prepare(model, weight_bits=4, weight_only=True)``).

    Checked by ``tests/optim/quant/test_quant_ptq.py``.
    """
    if config is None:
        config = QConfig(**options)
    elif options:
        raise TypeError(f"pass either config or keyword options, got both ({sorted(options)})")
    return PreparedModel(fold_batchnorms(flat_modules(model)), config)


def calibrate(model: nn.Module, x: object, batch_size: int = 64,
              max_batches: int | None = None) -> nn.Module:
    """Run ``model`` (in eval mode, without a graph) over ``x`` in batches, at most
    ``max_batches`` of them, so that its observers see the data. Returns ``model``."""
    x = np.asarray(x)
    batch_size = check_count(batch_size, "batch_size")
    if max_batches is not None:
        max_batches = check_count(max_batches, "max_batches")
    if len(x) == 0:
        raise ValueError("x must hold at least one sample")
    was_training = model.training
    model.eval()
    try:
        with minnet.no_grad():
            for i, (xb,) in enumerate(DataLoader(x, batch_size=batch_size)):
                if max_batches is not None and i >= max_batches:
                    break
                model(minnet.Tensor(xb))
    finally:
        model.train(was_training)
    return model


def convert(model: nn.Module) -> QuantSequential:
    """The quantized model with frozen qparams, from ``prepare`` + ``calibrate`` or from
    ``prepare_qat`` + training. Returns a new ``QuantSequential`` in eval mode. With weights
    and activations of at most 8 bits (integer inference's regime) the bias of each layer
    whose input is quantized is fake-quantized to int32 at scale :math:`s_{in} s_w` (zero
    point 0); wider codes make that scale so fine that int32 would saturate, and the bias
    stays in float. ValueError if an activation observer has seen no data.

    Checked by ``tests/optim/quant/test_quant_ptq.py::test_convert_before_calibration_raises``
    and ``::test_16_bit_ptq_is_close_to_float``.
    """
    if isinstance(model, PreparedModel):
        modules = _frozen_from_observers(model)
        config = model.config
    elif isinstance(model, QuantSequential):
        modules = [_frozen_module(m) for m in model]
        config = model.config
    else:
        raise TypeError(f"convert expects a PreparedModel (from prepare) or a QuantSequential "
                        f"(from prepare_qat), got {type(model).__name__}")
    if max(config.weight_bits, config.activation_bits) <= MAX_INTEGER_BITS:
        modules = _with_bias_quant(modules)
    return QuantSequential(*modules, config=config).eval()


def _qparams(observer, what: str):
    if observer.channels is None:
        raise ValueError(f"convert() before calibration: the {what} observer has seen no data; "
                         "run calibrate(prepared, x) first")
    return observer.calculate_qparams()


def _frozen_from_observers(prepared: PreparedModel) -> list[nn.Module]:
    config, modules = prepared.config, list(prepared.model)
    activations = iter(prepared.activation_observers)
    weights = iter(prepared.weight_observers)
    out: list[nn.Module] = []
    a_range = config.activation_range
    if not config.weight_only:
        out.append(FixedFakeQuantize(*_qparams(next(activations), "input"), *a_range))
    for item in prepared.plan:
        if not isinstance(item, Stage):
            out.append(copy.deepcopy(modules[item]))
            continue
        layer = copy.deepcopy(modules[item.layer])
        weight_quant = FixedFakeQuantize(*_qparams(next(weights), "weight"), *config.weight_range,
                                         axis=0)
        output_quant = None
        if not config.weight_only:
            output_quant = FixedFakeQuantize(*_qparams(next(activations), "activation"), *a_range)
        out.append(QuantStage(layer, item.relu is not None, weight_quant, output_quant))
    return out


def _frozen_module(module: nn.Module) -> nn.Module:
    """A deep copy with each trainable quantizer replaced by its ``frozen()`` version."""
    module = copy.deepcopy(module)
    if hasattr(module, "folded_stage"):  # a stage training with BatchNorm: fold it now
        module = module.folded_stage()
    if isinstance(module, QUANTIZERS):
        return module.frozen()
    if isinstance(module, QuantStage):
        if getattr(module.weight_quant, "track_current", False):
            module.weight_quant(minnet.Tensor(module.float_weight()))  # the final weights' range
        for name in ("weight_quant", "output_quant"):
            quantizer = getattr(module, name)
            if quantizer is not None:
                setattr(module, name, quantizer.frozen())
    return module


def _with_bias_quant(modules: list[nn.Module]) -> list[nn.Module]:
    """Give each stage whose input scale is known a bias quantizer at scale s_in · s_w."""
    input_scale = None
    for module in modules:
        if isinstance(module, FixedFakeQuantize):
            input_scale = module.scale
        elif isinstance(module, QuantStage):
            if input_scale is not None and module.float_bias() is not None:
                scale = input_scale.astype(np.float64) * module.weight_quant.scale
                module.bias_quant = FixedFakeQuantize(scale, np.zeros(scale.shape, np.int64),
                                                      INT32_MIN, INT32_MAX, axis=0)
            out = module.output_quant
            input_scale = None if out is None else out.scale
    return modules
