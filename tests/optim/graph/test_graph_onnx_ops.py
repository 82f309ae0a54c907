"""The ops that ONNX models bring (LRN, LayerNormalization, HardSigmoid, HardSwish, Erf, Gelu,
Resize, Upsample, Split, opset-11 Softmax, batched MatMul, pooling with ceil_mode and
count_include_pad=0, Dropout's mask, and the integer ops of quantized models): each imported
node agrees with onnxruntime on random inputs, and so does its re-export; LRN also agrees with
a brute-force sum."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from optim.graph import compile, execute, from_onnx, to_onnx  # noqa: E402


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _ort(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _agree(model, feeds, rtol=1e-5, atol=1e-6, exact=False):
    """The imported graph (executed) and its re-export (run by onnxruntime) both compute what
    onnxruntime computes on the original model."""
    graph = from_onnx(model)
    want = _ort(model, feeds)
    got = execute(graph, *(feeds[k] for k in graph.inputs))
    got = got if isinstance(got, tuple) else (got,)
    again = _ort(to_onnx(graph), {k: feeds[k] for k in graph.inputs})
    for results in (got, again):
        for g, w in zip(results, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            if exact:
                np.testing.assert_array_equal(g, w)
            else:
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return graph


def _x(shape, seed=0, scale=2.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_lrn_matches_brute_force(size):
    """ONNX's window [c − ⌊(n−1)/2⌋, c + ⌈(n−1)/2⌉] (PyTorch's differs for even n)."""
    x = _x((2, 6, 3, 3), size).astype(np.float64)
    alpha, beta, bias = 2.0 ** -7, 0.75, 2.0  # exact in the float32 attributes
    want = np.empty_like(x)
    for c in range(6):
        lo, hi = max(0, c - (size - 1) // 2), min(5, c + size // 2)
        s = (x[:, lo:hi + 1] ** 2).sum(axis=1)
        want[:, c] = x[:, c] / (bias + alpha / size * s) ** beta
    m = _model([helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)],
               [_info("x", [2, 6, 3, 3], TensorProto.DOUBLE)], [_info("y", None, TensorProto.DOUBLE)])
    np.testing.assert_allclose(execute(from_onnx(m), x), want, rtol=1e-12)
    if size % 2 == 0:
        return  # onnxruntime's LRN takes odd sizes only
    m = _model([helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)],
               [_info("x", [2, 6, 3, 3])], [_info("y", [2, 6, 3, 3])])
    _agree(m, {"x": x.astype(np.float32)})


@pytest.mark.parametrize("op,attrs", [("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
                                      ("HardSwish", {}), ("Erf", {})])
def test_elementwise_ops_match_onnxruntime(op, attrs):
    m = _model([helper.make_node(op, ["x"], ["y"], **attrs)], [_info("x", ["N", 7])],
               [_info("y", ["N", 7])])
    for n in (1, 5):
        _agree(m, {"x": _x((n, 7), n)})


def test_gelu_opset20_matches_onnxruntime():
    m = _model([helper.make_node("Gelu", ["x"], ["y"])], [_info("x", [3, 4])], [_info("y", [3, 4])],
               opset=20)
    _agree(m, {"x": _x((3, 4))})


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_layer_norm_matches_onnxruntime(axis):
    shape = [2, 3, 4]
    w = numpy_helper.from_array(_x(shape[axis:], 1), "w")
    b = numpy_helper.from_array(_x(shape[axis:], 2), "b")
    m = _model([helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], axis=axis)],
               [_info("x", shape)], [_info("y", shape)], [w, b])
    graph = _agree(m, {"x": _x(shape)}, atol=1e-5)
    back = to_onnx(graph)
    np.testing.assert_allclose(_ort(back, {"x": _x(shape)})[0], _ort(m, {"x": _x(shape)})[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 0), (11, 2), (13, 1)])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_old_opsets_flatten(op, opset, axis):
    m = _model([helper.make_node(op, ["x"], ["y"], axis=axis)], [_info("x", [2, 3, 4])],
               [_info("y", [2, 3, 4])], opset=opset)
    _agree(m, {"x": _x((2, 3, 4))})


def test_batched_matmul_with_broadcast():
    w = numpy_helper.from_array(_x((4, 5), 1), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_info("x", ["N", 3, 4])],
               [_info("y", ["N", 3, 5])], [w])
    graph = _agree(m, {"x": _x((2, 3, 4))})
    run = compile(graph)
    for n in (1, 6):
        np.testing.assert_allclose(run(_x((n, 3, 4), n)), _ort(m, {"x": _x((n, 3, 4), n)})[0],
                                   rtol=1e-5, atol=1e-5)


@settings(deadline=None)
@given(k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), h=st.integers(4, 9),
       ceil=st.booleans(), include=st.booleans(), op=st.sampled_from(["MaxPool", "AveragePool"]))
def test_pooling_ceil_mode_and_count_include_pad(k, s, p, h, ceil, include, op):
    p = min(p, k // 2)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=int(ceil))
    if op == "AveragePool":
        attrs["count_include_pad"] = int(include)
    m = _model([helper.make_node(op, ["x"], ["y"], **attrs)], [_info("x", [1, 2, h, h])],
               [_info("y", None)])
    _agree(m, {"x": _x((1, 2, h, h))})


@pytest.mark.parametrize("mode,coordinates,nearest", [
    ("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_floor"),
    ("linear", "half_pixel", "round_prefer_floor"), ("linear", "align_corners", "floor"),
    ("linear", "pytorch_half_pixel", "floor"), ("linear", "asymmetric", "floor")])
def test_resize_matches_onnxruntime(mode, coordinates, nearest):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 3], np.float32), "scales")
    m = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode,
                                 coordinate_transformation_mode=coordinates, nearest_mode=nearest)],
               [_info("x", ["N", 2, 3, 4])], [_info("y", None)], [scales], opset=13)
    graph = _agree(m, {"x": _x((2, 2, 3, 4))})
    assert graph.types[graph.outputs[0]].shape == ("N", 2, 6, 12)
    sizes = numpy_helper.from_array(np.array([1, 2, 5, 7], np.int64), "sizes")
    m = _model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode=mode,
                                 coordinate_transformation_mode=coordinates, nearest_mode=nearest)],
               [_info("x", [1, 2, 3, 4])], [_info("y", None)], [sizes], opset=13)
    _agree(m, {"x": _x((1, 2, 3, 4))})


def test_upsample_opset9():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    m = _model([helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")],
               [_info("x", [1, 2, 3, 4])], [_info("y", None)], [scales], opset=9)
    _agree(m, {"x": _x((1, 2, 3, 4))})


def test_split_into_slices():
    split = numpy_helper.from_array(np.array([1, 3, 2], np.int64), "split")
    m = _model([helper.make_node("Split", ["x", "split"], ["a", "b", "c"], axis=1)],
               [_info("x", ["N", 6])], [_info(k, None) for k in "abc"], [split])
    _agree(m, {"x": _x((3, 6))})


def test_dropout_mask_is_all_true_or_refused_when_symbolic():
    m = _model([helper.make_node("Dropout", ["x"], ["y", "mask"])], [_info("x", [2, 3])],
               [_info("y", [2, 3]), _info("mask", [2, 3], TensorProto.BOOL)], opset=13)
    _agree(m, {"x": _x((2, 3))}, exact=True)
    m = _model([helper.make_node("Dropout", ["x"], ["y", "mask"], name="drop")],
               [_info("x", ["N", 3])],
               [_info("y", ["N", 3]), _info("mask", ["N", 3], TensorProto.BOOL)], opset=13)
    with pytest.raises(NotImplementedError, match="mask of a Dropout"):
        from_onnx(m)
    m.graph.output.pop()
    assert from_onnx(m).outputs == ("y",)


def _qparams(name, scale, zero, dtype=TensorProto.UINT8):
    return [helper.make_tensor(f"{name}_s", TensorProto.FLOAT, [], [scale]),
            helper.make_tensor(f"{name}_z", dtype, [], [zero])]


def test_quantize_dequantize_round_trip_exact():
    inits = _qparams("q", 0.05, 128)
    m = _model([helper.make_node("QuantizeLinear", ["x", "q_s", "q_z"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "q_s", "q_z"], ["y"])],
               [_info("x", ["N", 16])], [_info("q", None, TensorProto.UINT8), _info("y", None)], inits)
    _agree(m, {"x": _x((5, 16), scale=4)}, exact=True)


def test_dynamic_quantize_matches_onnxruntime():
    m = _model([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
               [_info("x", ["N", 10])],
               [_info("y", None, TensorProto.UINT8), _info("s", None), _info("z", None, TensorProto.UINT8)])
    for seed in range(3):
        _agree(m, {"x": _x((4, 10), seed) + seed}, exact=True)
    _agree(m, {"x": np.zeros((2, 10), np.float32)}, exact=True)


def test_qlinear_ops_match_onnxruntime():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), "w")
    b = numpy_helper.from_array(rng.integers(-500, 500, 4).astype(np.int32), "b")
    ws = numpy_helper.from_array(np.array([0.01, 0.02, 0.015, 0.03], np.float32), "w_s")
    wz = numpy_helper.from_array(np.zeros(4, np.int8), "w_z")
    inits = _qparams("x", 0.04, 120) + _qparams("y", 0.3, 100) + [w, b, ws, wz]
    conv = helper.make_node("QLinearConv", ["x", "x_s", "x_z", "w", "w_s", "w_z", "y_s", "y_z", "b"],
                            ["y"], pads=[1, 0, 1, 2], strides=[1, 2])
    m = _model([conv], [_info("x", ["N", 3, 6, 7], TensorProto.UINT8)],
               [_info("y", None, TensorProto.UINT8)], inits)
    x = rng.integers(0, 256, (2, 3, 6, 7)).astype(np.uint8)
    _agree(m, {"x": x}, exact=True)
    bm = numpy_helper.from_array(rng.integers(0, 256, (7, 5)).astype(np.uint8), "bm")
    inits = _qparams("a", 0.05, 3) + _qparams("b", 0.02, 130) + _qparams("y", 0.4, 9) + [bm]
    mm = helper.make_node("QLinearMatMul", ["a", "a_s", "a_z", "bm", "b_s", "b_z", "y_s", "y_z"], ["y"])
    m = _model([mm], [_info("a", ["N", 7], TensorProto.UINT8)], [_info("y", None, TensorProto.UINT8)], inits)
    _agree(m, {"a": rng.integers(0, 256, (3, 7)).astype(np.uint8)}, exact=True)


class _Calibration:
    def __init__(self, batches):
        self.batches = iter(batches)

    def get_next(self):
        return next(self.batches, None)


@pytest.mark.parametrize("how", ["dynamic", "static QDQ", "static QOperator"])
def test_onnxruntime_quantized_model_imports_and_runs(how, tmp_path):
    """A small CNN quantized by onnxruntime.quantization (dynamic: DynamicQuantizeLinear,
    ConvInteger, MatMulInteger; static: Q/DQ pairs or QLinearConv/QLinearMatMul) imports with a
    symbolic batch and computes what onnxruntime computes."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    w1 = numpy_helper.from_array(_x((8, 3, 3, 3), 1, 0.3), "w1")
    w2 = numpy_helper.from_array(_x((8 * 4 * 4, 5), 2, 0.1), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "w2"], ["y"])]
    model = _model(nodes, [_info("x", ["N", 3, 8, 8])], [_info("y", ["N", 5])], [w1, w2], opset=13)
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(src))
    if how == "dynamic":
        quantization.quantize_dynamic(str(src), str(dst), weight_type=quantization.QuantType.QUInt8)
        expected = {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    else:
        qdq = how.endswith("QDQ")
        reader = _Calibration([{"x": _x((2, 3, 8, 8), k)} for k in range(4)])
        quantization.quantize_static(str(src), str(dst), reader, quant_format=(
            quantization.QuantFormat.QDQ if qdq else quantization.QuantFormat.QOperator))
        expected = {"QuantizeLinear", "DequantizeLinear"} | (set() if qdq else {"QLinearConv",
                                                                                "QLinearMatMul"})
    quantized = onnx.load(str(dst))
    assert expected <= {n.op_type for n in quantized.graph.node}
    graph = from_onnx(quantized)
    run = compile(graph)
    # the re-export holds the dequantized weights as floats: onnxruntime then rounds the float
    # convolution's activations, whose summation order may move one value across a
    # quantization boundary: allow one step of the last DequantizeLinear
    exported = to_onnx(graph)
    last = quantized.graph.node[-1]
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    step = float(inits[last.input[1]]) if last.op_type == "DequantizeLinear" else 0.0
    for batch in (1, 6):
        x = _x((batch, 3, 8, 8), batch)
        want = _ort(quantized, {"x": x})[0]
        np.testing.assert_allclose(execute(graph, x), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(run(x), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_ort(exported, {"x": x})[0], want, rtol=1e-5,
                                   atol=1.001 * step + 1e-6)
