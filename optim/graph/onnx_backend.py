"""An ``onnx.backend.base.Backend`` running ONNX models through ``from_onnx`` and the reference
executor, so the ONNX package's own node tests can check the importer and the kernels.

Inputs that an op needs as a static argument (a Reshape's shape, Clip's bounds, Pad's pads,
axes, Resize's scales, zero points) are bound as constants when the model runs: the IR holds
them as attributes. ``coverage()`` (``python -m optim.graph.onnx_backend``) counts the backend
test cases of each kind that pass. Requires the optional ``onnx`` package.
Tests: ``tests/optim/graph/test_graph_onnx_backend.py``.
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


# ---- coverage counts ---------------------------------------------------------------------------

KINDS = ("node", "pytorch-converted", "pytorch-operator", "simple", "light")


def _light_cases():
    """The light model-zoo cases with onnx's own input (arange(n)/n) and expected output."""
    import os

    from onnx import numpy_helper
    from onnx.backend.test.case.model import collect_testcases

    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    for case in collect_testcases():
        if not case.url or "/light/" not in case.url:
            continue
        model = onnx.load(os.path.join(light, f"light_{case.model_name}.onnx"))
        (vi,) = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        x = (np.arange(np.prod(shape)).reshape(shape) / np.prod(shape)).astype(np.float32)
        want = numpy_helper.to_array(onnx.load_tensor(
            os.path.join(light, f"light_{case.model_name}_output_0.pb")))
        yield case.name, model, [([x], [want])], case.rtol, case.atol


def _cases(kind: str):
    import glob
    import os

    from onnx import TensorProto, numpy_helper
    from onnx.backend.test.loader import load_model_tests

    if kind == "light":
        yield from _light_cases()
        return

    def array(t):
        return numpy_helper.to_array(t) if isinstance(t, TensorProto) else t
    for case in load_model_tests(kind=kind):
        if case.model is not None:
            sets = [([array(i) for i in ins], [array(r) for r in refs]) for ins, refs in case.data_sets]
            yield case.name, case.model, sets, case.rtol, case.atol
            continue
        model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
        sets = []
        for data in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set*"))):
            read = [[numpy_helper.to_array(onnx.load_tensor(f))
                     for f in sorted(glob.glob(os.path.join(data, f"{kind_}_*.pb")),
                                     key=lambda f: int(f.rsplit("_", 1)[1][:-3]))]
                    for kind_ in ("input", "output")]
            sets.append(tuple(read))
        yield case.name, model, sets, case.rtol, case.atol


def coverage(kinds=KINDS) -> dict[str, tuple[int, int]]:
    """kind -> (passing, total) of the ONNX package's backend test cases run through
    ``MinnetBackend``: a case passes when every output matches onnx's expected output within
    the case's tolerances (``Runner.assert_similar_outputs``)."""
    from onnx.backend.test.runner import Runner

    counts = {}
    for kind in kinds:
        passing = total = 0
        for _, model, sets, rtol, atol in _cases(kind):
            total += 1
            try:
                rep = MinnetBackend.prepare(model, "CPU")
                for inputs, refs in sets:
                    Runner.assert_similar_outputs(refs, list(rep.run(inputs)), rtol, atol)
            except Exception:  # any failure (refusal or mismatch) counts as not passing
                continue
            passing += 1
        counts[kind] = (passing, total)
    return counts


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    for kind, (passing, total) in coverage().items():
        print(f"{kind:18s} {passing:4d} / {total}")
