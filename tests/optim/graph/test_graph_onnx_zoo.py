"""The nine "light" model-zoo networks shipped inside the onnx package
(onnx/backend/test/data/light: AlexNet, DenseNet-121, Inception v1 and v2, ResNet-50,
ShuffleNet, SqueezeNet, VGG-19, ZFNet-512 at 224x224): each imports and its output on onnx's
own input (arange(n)/n, as onnx's backend runner makes it) matches the expected output stored
beside it, within the per-model tolerances of onnx's runner (rtol 1e-3, 2e-3 for DenseNet-121;
atol 1e-7)."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import numpy_helper  # noqa: E402
from onnx.backend.test.case.model import collect_testcases  # noqa: E402
from onnx.backend.test.runner import Runner  # noqa: E402

from optim.graph import execute, from_onnx  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
CASES = [c for c in collect_testcases() if c.url and "/light/" in c.url]


def test_all_nine_networks_are_collected():
    assert len(CASES) == 9


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.model_name)
def test_light_model_matches_expected_output(case):
    path = os.path.join(LIGHT, f"light_{case.model_name}.onnx")
    graph = from_onnx(path)
    (name,) = graph.inputs
    shape = graph.types[name].shape
    n = int(np.prod(shape))
    x = (np.arange(n).reshape(shape) / n).astype(np.float32)  # onnx's generate_dummy_data
    want = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT, f"light_{case.model_name}_output_0.pb")))
    Runner.assert_similar_outputs([want], [execute(graph, x)], case.rtol, case.atol)
