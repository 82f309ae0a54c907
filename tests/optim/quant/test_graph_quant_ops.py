"""The integer ops of quantized graphs (``optim.graph.qops``): the fast u8·s8 accumulators equal
the exact reference and an int64 brute force; QLinearAdd follows its formula on a hand-worked
case; every com.microsoft op, written by its own ONNX export handler, agrees with onnxruntime
(optional oracle) within one code, most codes exactly."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from minnet.kernels.backend import HAVE_NUMBA, use_backend
from optim.graph import Graph, Node, execute
from optim.graph.qops import (integer_conv, integer_conv_reference, integer_gemm,
                              integer_matmul, qlinear_add)

needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="the fast paths need Numba")


@needs_numba
@given(m=st.integers(1, 9), k=st.integers(1, 40), o=st.integers(1, 70),
       signed=st.booleans(), zero=st.integers(-128, 255), seed=st.integers(0, 2**16))
def test_fast_accumulators_equal_reference(m, k, o, signed, zero, seed):
    """Σ (a − z_a) w over the VNNI / BLAS-block route equals an int64 brute force, for uint8 and
    int8 activation codes, in a GEMM, a MatMul and a convolution of drawn geometry."""
    rng = np.random.default_rng(seed)
    dtype, low = (np.int8, -128) if signed else (np.uint8, 0)
    zero = int(np.clip(zero, low, low + 255))
    a = rng.integers(low, low + 256, (m, k)).astype(dtype)
    w = rng.integers(-128, 128, (o, k)).astype(np.int8)
    brute = (a.astype(np.int64) - zero) @ w.astype(np.int64).T
    with use_backend("numba"):
        np.testing.assert_array_equal(integer_gemm(a, dtype(zero), w, None), brute)
        np.testing.assert_array_equal(integer_matmul(a, dtype(zero), w.T.copy(), np.int8(0)), brute)
        x = rng.integers(low, low + 256, (2, 1 + k % 4, 4 + m, 3 + o % 5)).astype(dtype)
        kernel = rng.integers(-128, 128, (1 + o % 6, x.shape[1], 1 + m % 3, 1 + k % 3)).astype(np.int8)
        attrs = dict(pads=(m % 2, k % 2, o % 3 // 2, 1), stride=(1 + k % 2, 1 + m % 2),
                     dilation=(1 + o % 2, 1), groups=1)
        fast = integer_conv(x, dtype(zero), kernel, None, attrs)
    np.testing.assert_array_equal(fast, integer_conv_reference(x, dtype(zero), kernel, None, attrs))


def test_qlinear_add_hand_worked():
    """s_a = 0.5, z_a = 10; s_b = 0.25, z_b = 100; s_y = 0.5, z_y = 5 (uint8): real values
    a → (a − 10)/2, b → (b − 100)/4; e.g. a = 20, b = 140: 5 + 10 = 15 → 15/0.5 + 5 = 35;
    a = 0, b = 255: −5 + 38.75 = 33.75 → 67.5 → 68 (half to even) + 5 = 73; a = 11, b = 100:
    0.5 → 1 + 5 = 6; a = b = 255: 161.25 → 322.5 → saturates at 255; a = b = 0: −30 → −60 + 5
    → saturates at 0."""
    a = np.array([10, 20, 0, 11, 255, 0], np.uint8)
    b = np.array([100, 140, 255, 100, 255, 0], np.uint8)
    y = qlinear_add(a, 0.5, np.uint8(10), b, 0.25, np.uint8(100), 0.5, np.uint8(5))
    np.testing.assert_array_equal(y, [5, 35, 73, 6, 255, 0])
    assert y.dtype == np.uint8


# ---- onnxruntime as an oracle on the com.microsoft ops ------------------------------------


def _scalar(value, dtype):
    return np.asarray(value, dtype)


def _one_node(op, x_inputs, constants, attrs, dtype):
    """A graph with graph inputs ``x_inputs`` (name -> array) and one ``op`` node."""
    names = list(x_inputs) + list(constants)
    node = Node(op, tuple(n for n in attrs.pop("order", names)), "y", attrs)
    graph = Graph.build({k: (v.shape, v.dtype) for k, v in x_inputs.items()}, [node], ["y"],
                        constants)
    return graph


def _onnxruntime(graph, feeds):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper, numpy_helper

    from optim.graph.onnx_export import Exporter, _value_info
    ex = Exporter(graph, helper, numpy_helper)
    ex.initializers += [numpy_helper.from_array(np.array(v, order="C"), k)
                        for k, v in graph.constants.items()]
    for node in graph.nodes:
        ex.export(node)
    onnx_graph = helper.make_graph(
        ex.nodes, "g", [_value_info(helper, k, graph.types[k]) for k in graph.inputs],
        [_value_info(helper, k, graph.types[k]) for k in graph.outputs], ex.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 17),
                                                         helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _agree_within_one_code(graph, feeds):
    want = _onnxruntime(graph, feeds)
    got = execute(graph, *(feeds[k] for k in graph.inputs))
    assert got.dtype == want.dtype and got.shape == want.shape
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.95, (diff.max(), (diff == 0).mean())


def _codes(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_contrib_ops_match_onnxruntime(dtype):
    rng = np.random.default_rng(int(np.dtype(dtype).kind == "i"))
    z = (lambda v: _scalar(v if dtype == np.uint8 else v - 128, dtype))
    f = (lambda v: _scalar(v, np.float32))
    a, b = _codes(rng, (2, 3, 5, 5), dtype), _codes(rng, (2, 3, 5, 5), dtype)
    add = _one_node("QLinearAdd", {"a": a, "b": b},
                    {"a_s": f(0.05), "a_z": z(120), "b_s": f(0.11), "b_z": z(90), "y_s": f(0.13),
                     "y_z": z(100)},
                    {"order": ["a", "a_s", "a_z", "b", "b_s", "b_z", "y_s", "y_z"]}, dtype)
    _agree_within_one_code(add, {"a": a, "b": b})
    concat = _one_node("QLinearConcat", {"a": a, "b": b},
                       {"y_s": f(0.13), "y_z": z(100), "a_s": f(0.05), "a_z": z(120),
                        "b_s": f(0.13), "b_z": z(100)},
                       {"order": ["y_s", "y_z", "a", "a_s", "a_z", "b", "b_s", "b_z"], "axis": 1},
                       dtype)
    _agree_within_one_code(concat, {"a": a, "b": b})
    gap = _one_node("QLinearGlobalAveragePool", {"a": a},
                    {"a_s": f(0.05), "a_z": z(120), "y_s": f(0.02), "y_z": z(110)},
                    {"order": ["a", "a_s", "a_z", "y_s", "y_z"]}, dtype)
    _agree_within_one_code(gap, {"a": a})
    for window in (dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)),
                   dict(kernel_size=(3, 3), stride=(1, 2), padding=(1, 1), count_include_pad=False)):
        pool = _one_node("QLinearAveragePool", {"a": a},
                         {"a_s": f(0.05), "a_z": z(120), "y_s": f(0.04), "y_z": z(128)},
                         {"order": ["a", "a_s", "a_z", "y_s", "y_z"], **window}, dtype)
        _agree_within_one_code(pool, {"a": a})
    x = _codes(rng, (6, 20), dtype)
    w = _codes(rng, (7, 20), np.int8)
    gemm = _one_node("QGemm", {"x": x},
                     {"x_s": f(0.05), "x_z": z(120), "w": w,
                      "w_s": (rng.random(7) * 0.01 + 0.005).astype(np.float32),
                      "w_z": np.zeros(7, np.int8), "c": rng.integers(-3000, 3000, 7).astype(np.int32),
                      "y_s": f(1.5), "y_z": z(100)},
                     {"order": ["x", "x_s", "x_z", "w", "w_s", "w_z", "c", "y_s", "y_z"],
                      "trans_b": True}, dtype)
    _agree_within_one_code(gemm, {"x": x})
