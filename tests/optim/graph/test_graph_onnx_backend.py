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
from optim.graph.onnx_import import SHAPE_OPS  # noqa: E402
from optim.graph.ops import ONNX_IMPORT  # noqa: E402

IMPORTED = set(ONNX_IMPORT) | SHAPE_OPS | {"Constant"}

UNSUPPORTED = {
    r"test_(average|max)pool_[13]d": "only 2-D pooling",
    r"test_(average|max)pool_2d_dilations": "dilated pooling",
    r"test_maxpool_with_argmax": "pooling indices",
    r"training": "training-mode ops",
    r"test_div_u?int": "integer division",
    r"test_pow_types_(float32_u?int|int\d+_float)": "mixed-dtype Pow",
    r"test_(edge|reflect|wrap)_pad": "non-constant padding modes",
    r"test_identity_(sequence|opt)": "sequence and optional values",
    r"test_reduce_max_empty_set": "the maximum of an empty set",
    r"BFLOAT16|FLOAT8|FLOAT4|[IU]INT[24]|INT[24]|e8m0|e4m3|e5m2|_u?int[24]$|float4|_blocked":
        "sub-byte, float8 and bfloat16 types, blocked quantization",
    r"test_gelu_tanh": "the tanh approximation of Gelu",
    r"test_layer_normalization": "LayerNormalization's mean and inverse deviation outputs",
    r"test_resize_.*(cubic|antialias|_axes_|tf_crop|not_larger|not_smaller|half_pixel_symmetric)"
    r"|test_resize_downsample_scales_linear_align_corners":
        "cubic, antialiased, axes-restricted, cropping and aspect-preserving Resize, "
        "align_corners with a fractional output length",
    r"center_crop|causal_conv": "ops built on data-dependent values",
}

CASES = [c for c in load_model_tests(kind="node")
         if {n.op_type for n in c.model.graph.node} <= IMPORTED]
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
    # every LayerNormalization node test also asks for the mean and inverse-deviation outputs;
    # the op itself is checked against onnxruntime in test_graph_onnx_ops.py; the
    # com.microsoft ops have no ONNX node tests (checked in tests/optim/quant/test_graph_quant_ops.py)
    contrib = {"QGemm", "QLinearAdd", "QLinearConcat", "QLinearGlobalAveragePool"}
    assert tested == IMPORTED - {"LayerNormalization"} - contrib
    assert len(SUPPORTED) >= 290


def test_backend_device_check():
    assert MinnetBackend.supports_device("CPU") and not MinnetBackend.supports_device("CUDA")
    with pytest.raises(ValueError, match="CUDA"):
        MinnetBackend.prepare(SUPPORTED[0].model, "CUDA")


def test_coverage_counts_every_case_of_a_kind():
    """coverage() runs each case once: its totals are the loader's, and a kind's passing count
    covers at least the cases that this file checks one by one."""
    from optim.graph.onnx_backend import coverage

    counts = coverage(("simple", "pytorch-operator", "node"))
    for kind, (passing, total) in counts.items():
        assert 0 <= passing <= total == len(load_model_tests(kind=kind))
    assert counts["node"][0] >= len(SUPPORTED)
