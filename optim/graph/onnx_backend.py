"""An ``onnx.backend.base.Backend`` running ONNX models through ``from_onnx`` and the reference
executor, so the ONNX package's own node tests can check the importer and the kernels.

Inputs that an op needs as a static argument (a Reshape's shape, Clip's bounds, Pad's pads,
axes) are bound as constants when the model runs, since graphs have static shapes.
Requires the optional ``onnx`` package.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from optim.graph.execute import execute
from optim.graph.onnx_import import from_onnx

__all__ = ["MinnetBackend", "MinnetBackendRep"]

# ONNX op -> positions of inputs read as static arguments
_STATIC_INPUTS = {"Reshape": (1,), "Clip": (1, 2), "Pad": (1, 2, 3), "Squeeze": (1,),
                  "Unsqueeze": (1,), "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,),
                  "Dropout": (1, 2), "Gather": (1,), "Slice": (1, 2, 3, 4), "Split": (1,),
                  "Resize": (1, 2, 3), "Upsample": (1,), "Expand": (1,), "ConstantOfShape": (0,),
                  "Range": (0, 1, 2), "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2),
                  "QLinearConv": (1, 2, 4, 5, 6, 7, 8), "QLinearMatMul": (1, 2, 4, 5, 6, 7)}


class MinnetBackendRep(BackendRep):
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        static = set()
        for node in model.graph.node:
            for i in _STATIC_INPUTS.get(node.op_type, ()):
                if i < len(node.input) and node.input[i]:
                    static.add(node.input[i])
        initializers = {init.name for init in model.graph.initializer}
        self.input_names = [vi.name for vi in model.graph.input if vi.name not in initializers]
        self.static = static

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            values = dict(inputs)
        else:
            inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            values = dict(zip(self.input_names, inputs))
        bind = {k: np.asarray(v) for k, v in values.items() if k in self.static}
        graph = from_onnx(self.model, bind=bind)
        out = execute(graph, *(values[k] for k in graph.inputs))
        return out if isinstance(out, tuple) else (out,)


class MinnetBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> MinnetBackendRep:
        super().prepare(model, device, **kwargs)
        if not cls.supports_device(device):
            raise ValueError(f"device {device!r} is not supported; only 'CPU'")
        return MinnetBackendRep(model)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"
