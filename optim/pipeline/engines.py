r"""What runs a stage's model: its *engines*, and the model views they need.

- ``minnet``: the model's own forward pass (float, pruned, weight-shared, or fake-quantized);
- ``integer``: ``optim.quant.IntegerModel``, integer-only kernels on a converted model;
- ``graph``: the model's float view (``float_view``) traced, optimized
  (``optim.graph.optimize``) and compiled (``optim.graph.compile``), one compiled graph per
  batch size;
- ``onnxruntime``: the model's ONNX file run by ONNX Runtime (optional extras ``onnx`` and
  ``onnxruntime``): ``deployed_graph``, the int8 integer graph of a converted model with 8-bit
  activations (QLinearConv / QGemm, ``optim.quant.graph_quant.to_integer_graph``), else the
  optimized float graph, with a symbolic batch; the export stage writes that file and its row
  measures the file it wrote.

Tests: ``tests/optim/pipeline/test_pipeline_report.py``.
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np

import minnet
from minnet import nn
from optim.graph import Graph, compile as compile_graph, optimize, to_onnx, trace
from optim.quant import FixedFakeQuantize, IntegerModel, QuantSequential, QuantStage
from optim.quant.graph_quant import to_integer_graph

__all__ = ["ENGINES", "float_view", "optimized_graph", "deployed_graph", "onnx_session",
           "runner"]

ENGINES = ("minnet", "integer", "graph", "onnxruntime")


def float_view(model: nn.Module) -> nn.Module:
    """A plain float copy of ``model`` computing with its effective weights: every
    parametrization (pruning mask, shared weights :math:`c[I]`, weight and bias quantizers)
    baked in, and a quantized model's activation quantizers dropped. MACs, parameter counts
    and the ``graph`` engine use it."""
    model = nn.parametrize.remove_all_parametrizations(copy.deepcopy(model))
    if not isinstance(model, QuantSequential):
        return model
    layers: list[nn.Module] = []
    for module in model:
        if isinstance(module, QuantStage):
            layers += [module.layer, nn.ReLU()] if module.relu else [module.layer]
        elif not isinstance(module, FixedFakeQuantize):
            layers.append(module)
    return nn.Sequential(*layers)


def optimized_graph(model: nn.Module, x: np.ndarray) -> Graph:
    """The optimized graph of ``model``'s float view traced on the example input ``x``."""
    return optimize(trace(float_view(model).eval(), x))


def deployed_graph(model: nn.Module, x: np.ndarray) -> tuple[Graph, str]:
    """The graph the export stage writes, with a symbolic batch, and its form: ``"int8"``, the
    integer graph of a converted model whose activations are 8-bit codes (``to_integer_graph``),
    else ``"float"``, the optimized graph of the model's float view traced on ``x[:1]``."""
    if isinstance(model, QuantSequential) and model.frozen and not model.config.weight_only:
        try:
            return to_integer_graph(model, x[:1]), "int8"
        except ValueError:  # activations of other widths, or weight codes beyond int8
            pass
    return optimize(trace(float_view(model).eval(), x[:1], dynamic_axes={0: "N"})), "float"


def onnx_session(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> output`` of the ONNX model ``data`` run by ONNX Runtime."""
    import onnxruntime
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


class _FirstShape:
    """An executable built on the first input (its graph has a symbolic batch)."""

    def __init__(self, build: Callable[[np.ndarray], Callable]):
        self.build, self.executable = build, None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.executable is None:
            self.executable = self.build(x)
        return self.executable(x)


class _PerShape:
    """Graphs are specialised to their input shape: one executable per shape seen."""

    def __init__(self, model: nn.Module, build: Callable[[Graph], Callable]):
        self.model, self.build, self.executables = model, build, {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape not in self.executables:
            self.executables[x.shape] = self.build(optimized_graph(self.model, x))
        return self.executables[x.shape](x)


def runner(model: nn.Module, engine: str) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> logits`` (ndarrays) running ``model`` with ``engine`` (see the module docstring)."""
    if engine == "minnet":
        model = model.eval()

        def run(x: np.ndarray) -> np.ndarray:
            with minnet.no_grad():
                return model(minnet.Tensor(x)).data
        return run
    if engine == "integer":
        return IntegerModel(model)
    if engine == "graph":
        return _PerShape(model, compile_graph)
    if engine == "onnxruntime":
        return _FirstShape(lambda x: onnx_session(to_onnx(deployed_graph(model, x)[0],
                                                          compact=True).SerializeToString()))
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
