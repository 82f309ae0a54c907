"""The ONNX package's own node tests, run through ``optim.graph.onnx_backend``: every test
whose ops the importer supports passes, except the listed unsupported variants, which must be
refused with a clear error rather than computed wrongly."""
import re

import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, numpy_helper  # noqa: E402
from onnx.backend.test.loader import load_model_tests  # noqa: E402
from onnx.backend.test.runner import Runner  # noqa: E402

from optim.graph.onnx_backend import MinnetBackend  # noqa: E402
from optim.graph.onnx_io import IMPORTERS  # noqa: E402

UNSUPPORTED = {
    r"test_(average|max)pool_[13]d": "only 2-D pooling",
    r"test_(average|max)pool_2d_(ceil|dilations)": "ceil_mode and dilated pooling",
    r"test_averagepool_2d_(pads|precomputed_pads|same_upper|same_lower|precomputed_same_upper)$":
        "average pooling that excludes padding (count_include_pad=0)",
    r"test_maxpool_with_argmax": "pooling indices",
    r"training|test_dropout_default_mask": "training-mode ops and dropout masks",
    r"test_div_u?int": "integer division",
    r"test_pow_types_(float32_u?int|int\d+_float)": "mixed-dtype Pow",
    r"test_(edge|reflect|wrap)_pad": "non-constant padding modes",
    r"test_identity_(sequence|opt)": "sequence and optional values",
    r"test_reduce_max_empty_set": "the maximum of an empty set",
}

CASES = [c for c in load_model_tests(kind="node")
         if {n.op_type for n in c.model.graph.node} <= set(IMPORTERS)]
EXCLUDED = [c for c in CASES if any(re.search(p, c.name) for p in UNSUPPORTED)]
SUPPORTED = [c for c in CASES if c not in EXCLUDED]


def _array(t):
    return numpy_helper.to_array(t) if isinstance(t, TensorProto) else t


def _run(case):
    rep = MinnetBackend.prepare(case.model, "CPU")
    for inputs, refs in case.data_sets:
        outputs = rep.run([_array(i) for i in inputs])
        Runner.assert_similar_outputs([_array(r) for r in refs], outputs, case.rtol, case.atol)


@pytest.mark.parametrize("case", SUPPORTED, ids=lambda c: c.name)
def test_onnx_node_test_passes(case):
    _run(case)


@pytest.mark.parametrize("case", EXCLUDED, ids=lambda c: c.name)
def test_unsupported_variant_is_refused(case):
    with pytest.raises((NotImplementedError, ValueError)):
        _run(case)


def test_every_imported_op_has_node_tests():
    tested = {n.op_type for c in SUPPORTED for n in c.model.graph.node}
    assert tested == set(IMPORTERS)
    assert len(SUPPORTED) >= 290


def test_backend_device_check():
    assert MinnetBackend.supports_device("CPU") and not MinnetBackend.supports_device("CUDA")
    with pytest.raises(ValueError, match="CUDA"):
        MinnetBackend.prepare(SUPPORTED[0].model, "CUDA")
