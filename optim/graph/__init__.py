"""optim.graph: graph-level optimization of traced minnet models.

- ``trace(model, example_input, dynamic_axes=None) -> Graph``: record one forward pass (``ir``,
  ``ops``, ``trace``), with symbolic dimensions (``dims``) where asked;
- ``GraphModule(graph)``: any graph as a trainable minnet Module (``module``);
- ``execute(graph, *inputs)``: the reference executor on minnet's own kernels;
- ``optimize(graph)``: the default pass pipeline to a fixed point (``passes``); the shared
  ``fold_batchnorm`` formula (``fold``);
- ``compile(graph, cost_model=...)``: the fast executor with a planned arena (``compiled``,
  ``memory``, ``kernels``);
- ``CostModel`` / ``calibrate``: the calibrated per-node cost and algorithm choice (``cost``);
  ``greedy`` / ``backtracking``: rewrite search minimising Σ C(v_i) (``search``);
- ``compile_training(model, example)``: forward, loss and backward as one planned graph, the
  step ``fit(train_step=...)`` runs (``training``, ``grad_ops``);
- ``to_onnx`` / ``from_onnx``: ONNX export and import (optional ``onnx`` extra; ``onnx_backend``
  runs the ONNX node tests).
"""
from optim.graph.compiled import CompiledGraph, compile
from optim.graph.cost import CostModel, calibrate
from optim.graph.execute import execute
from optim.graph.fold import fold_batchnorm
from optim.graph.ir import Graph, GraphError, Node, TensorType, validate
from optim.graph.memory import MemoryPlan, plan_memory
from optim.graph.module import GraphModule
from optim.graph.onnx_export import to_onnx
from optim.graph.onnx_import import from_onnx
from optim.graph.passes import optimize
from optim.graph.search import backtracking, greedy
from optim.graph.trace import trace
from optim.graph.training import compile_training

__all__ = ["trace", "execute", "optimize", "compile", "CompiledGraph", "CostModel", "calibrate",
           "fold_batchnorm", "Graph", "GraphError", "Node", "TensorType", "validate",
           "MemoryPlan", "plan_memory", "to_onnx", "from_onnx", "greedy", "backtracking",
           "GraphModule", "compile_training"]
