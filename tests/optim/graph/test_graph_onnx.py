"""ONNX export/import: exports pass the checker, minnet -> ONNX -> minnet is the identity on
outputs, onnxruntime agrees with the reference executor, and bad models get clear errors."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402

from minnet import nn  # noqa: E402
from optim.graph import execute, trace  # noqa: E402
from optim.graph.onnx_io import from_onnx, to_onnx  # noqa: E402
from optim.graph.passes import optimize  # noqa: E402

from graph_helpers import named_models, sample  # noqa: E402

MODELS = [m for m in named_models() if not any(
    n.op == "GELU" for n in trace(m[1], sample(m[2])).nodes)]


def _graphs(model, shape):
    x = sample(shape, 6)
    graph = trace(model, x)
    return x, [("traced", graph), ("optimized", optimize(graph))]


@pytest.mark.parametrize("name,model,shape", MODELS, ids=[m[0] for m in MODELS])
def test_round_trip_and_onnxruntime(name, model, shape, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x, graphs = _graphs(model, shape)
    for kind, graph in graphs:
        path = tmp_path / f"{kind}.onnx"
        proto = to_onnx(graph, path)
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        want = execute(graph, x)
        back = from_onnx(path)
        np.testing.assert_allclose(execute(back, x), want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(execute(optimize(back), x), want, rtol=1e-5, atol=1e-5)
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {graph.inputs[0]: x})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=kind)


def test_round_trip_keeps_names_and_shapes():
    x, graphs = _graphs(*named_models()[2][1:])
    graph = graphs[0][1]
    back = from_onnx(to_onnx(graph))
    assert back.inputs == graph.inputs and back.outputs == graph.outputs
    assert set(graph.constants) <= set(back.constants)
    assert [back.types[k] for k in back.outputs] == [graph.types[k] for k in graph.outputs]


def test_export_refuses_ops_onnx_cannot_express():
    model = nn.Sequential(nn.Linear(3, 4), nn.GELU())
    with pytest.raises(NotImplementedError, match="'GELU'.*'1.gelu'"):
        to_onnx(trace(model, sample((2, 3))))


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_unsupported_op_names_the_op_and_the_node():
    m = _model([helper.make_node("Hardmax", ["x"], ["y"], name="hm")], [_info("x", [2, 3])],
               [_info("y", [2, 3])])
    with pytest.raises(NotImplementedError, match=r"'Hardmax'.*'hm'"):
        from_onnx(m)


def test_missing_initializer_is_named():
    m = _model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], [_info("x", [2, 3])],
               [_info("y", [2, 4])])
    with pytest.raises(ValueError, match=r"fc.*'w'.*missing initializer"):
        from_onnx(m)


def test_dynamic_shape_arguments_need_binding():
    m = _model([helper.make_node("Reshape", ["x", "s"], ["y"])],
               [_info("x", [2, 3]), _info("s", [1], TensorProto.INT64)], [_info("y", [6])])
    with pytest.raises(ValueError, match="bind"):
        from_onnx(m)
    graph = from_onnx(m, bind={"s": np.array([6])})
    np.testing.assert_array_equal(execute(graph, np.arange(6.0).reshape(2, 3).astype(np.float32)),
                                  np.arange(6.0))


def test_symbolic_dimensions_are_refused():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_info("x", ["batch", 3])],
               [_info("y", ["batch", 3])])
    with pytest.raises(ValueError, match="symbolic dimension 'batch'"):
        from_onnx(m)


def test_asymmetric_padding_becomes_a_pad_node():
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], np.ones(9, np.float32))
    m = _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 2, 1])],
               [_info("x", [1, 1, 4, 4])], [_info("y", [1, 1, 4, 4])], [w])
    graph = from_onnx(m)
    assert [n.op for n in graph.nodes] == ["Pad", "Conv2d"]
    ort = pytest.importorskip("onnxruntime")
    x = sample((1, 1, 4, 4))
    (want,) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(execute(graph, x), want, rtol=1e-5, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(TypeError, match="ModelProto"):
        from_onnx(42)
    with pytest.raises(TypeError, match="Graph"):
        to_onnx("graph")
