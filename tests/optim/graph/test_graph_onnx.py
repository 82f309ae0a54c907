"""ONNX export/import: exports pass the checker, minnet -> ONNX -> minnet is the identity on
outputs, onnxruntime agrees with the reference executor, and bad models get clear errors."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402

from minnet import nn  # noqa: E402
from optim.graph import Graph, Node, compile, execute, trace  # noqa: E402
from optim.graph.onnx_import import dim_symbols  # noqa: E402
from optim.graph import from_onnx, to_onnx  # noqa: E402
from optim.graph.passes import optimize  # noqa: E402

from graph_helpers import named_models, sample  # noqa: E402

MODELS = named_models()


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
    graph = Graph.build({"x": ((2, 3), np.float32)}, [Node("Var", ("x",), "v", {"axis": 1})],
                        ["v"], {})
    with pytest.raises(NotImplementedError, match="'Var'.*'v'"):
        to_onnx(graph)


def test_gelu_exports_as_erf_and_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    x = sample((5, 3), 2)
    graph = trace(nn.Sequential(nn.Linear(3, 4), nn.GELU()), x)
    proto = to_onnx(graph)
    assert "Erf" in {n.op_type for n in proto.graph.node}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {graph.inputs[0]: x})[0], execute(graph, x),
                               rtol=1e-5, atol=1e-6)


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


def test_symbolic_dimensions_are_kept_sanitised_and_written_back():
    x_info = _info("x", ["batch size", 3, None])
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [x_info], [_info("y", ["batch size", 3, None])])
    assert dim_symbols(m) == {("x", 0): "batch_size", ("x", 2): "x_2"}
    graph = from_onnx(m)
    assert graph.types["x"].shape == ("batch_size", 3, "x_2")
    for n, k in ((1, 2), (5, 4)):
        x = sample((n, 3, k), n)
        np.testing.assert_array_equal(execute(graph, x), np.maximum(x, 0))
    dims = to_onnx(graph).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch_size", 3, "x_2"]


def test_view_subgraph_keeps_the_batch_symbolic():
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])): torch's x.view(x.size(0), -1)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["i"], value_int=0),
             helper.make_node("Gather", ["s", "i"], ["n"], axis=0),
             helper.make_node("Constant", [], ["ax"], value_ints=[0]),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Constant", [], ["m1"], value_ints=[-1]),
             helper.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    m = _model(nodes, [_info("x", ["N", 2, 3])], [_info("y", ["N", 6])])
    graph = from_onnx(m)
    assert [n.op for n in graph.nodes] == ["Reshape"] and graph.nodes[0].attrs["shape"] == ("N", 6)
    x = sample((4, 2, 3))
    np.testing.assert_array_equal(execute(graph, x), x.reshape(4, 6))
    back = to_onnx(graph)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(back.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        x = sample((n, 2, 3), n)
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], x.reshape(n, 6))


def test_shape_value_read_as_data_is_refused():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["f"], to=1),
             helper.make_node("Relu", ["f"], ["y"], name="uses_shape")]
    m = _model(nodes, [_info("x", ["N", 2])], [_info("y", [2])])
    with pytest.raises(ValueError, match="'f'.*symbolic input dimension"):
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


def test_dynamic_trace_exports_a_dim_param_that_onnxruntime_honours():
    ort = pytest.importorskip("onnxruntime")
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(3 * 3 * 3, 4))
    x = sample((2, 1, 8, 8))
    graph = trace(model, x, dynamic_axes={0: "N"})
    proto = to_onnx(graph)
    for value in (proto.graph.input[0], proto.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "N"
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    back = from_onnx(proto)
    assert back.types[back.inputs[0]].shape[0] == "N"
    for n in (1, 5):
        x = sample((n, 1, 8, 8), n)
        (got,) = session.run(None, {graph.inputs[0]: x})
        np.testing.assert_allclose(got, execute(graph, x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(execute(back, x), got, rtol=1e-5, atol=1e-6)


def test_constant_of_symbolic_shape_and_expand_stay_symbolic():
    """zeros(x.size(0), 4) + 1 and x.expand(x.size(0), 3, 2): ConstantOfShape and Expand of a
    symbolic shape value become Full nodes; execution and the re-export agree with onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["start"], value_ints=[0]),
             helper.make_node("Constant", [], ["end"], value_ints=[1]),
             helper.make_node("Slice", ["s", "start", "end"], ["n"]),
             helper.make_node("Constant", [], ["four"], value_ints=[4]),
             helper.make_node("Concat", ["n", "four"], ["shape"], axis=0),
             helper.make_node("ConstantOfShape", ["shape"], ["zeros"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.5])),
             helper.make_node("Constant", [], ["rest"], value_ints=[3, 2]),
             helper.make_node("Concat", ["n", "rest"], ["target"], axis=0),
             helper.make_node("Expand", ["b", "target"], ["e"])]
    m = _model(nodes, [_info("x", ["N", 2]), _info("b", [1, 3, 1])],
               [_info("zeros", ["N", 4]), _info("e", ["N", 3, 2])])
    graph = from_onnx(m)
    assert "Full" in {n.op for n in graph.nodes}
    assert graph.types["zeros"].shape == ("N", 4) and graph.types["e"].shape == ("N", 3, 2)
    back = to_onnx(graph)
    run = compile(graph)
    for n in (1, 6):
        feeds = {"x": sample((n, 2), n), "b": sample((1, 3, 1), 9)}
        want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        again = ort.InferenceSession(back.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        for results in (execute(graph, feeds["x"], feeds["b"]), run(feeds["x"], feeds["b"]), again):
            for g, w in zip(results, want):
                np.testing.assert_array_equal(g, w)


def test_reshape_with_two_symbolic_dimensions_exports_a_computed_shape():
    ort = pytest.importorskip("onnxruntime")
    graph = Graph.build({"x": (("N", "T", 6), np.float32)},
                        [Node("Reshape", ("x",), "y", {"shape": ("T", "N", 2, 3)})], ["y"], {})
    session = ort.InferenceSession(to_onnx(graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    for n, t in ((1, 4), (3, 2)):
        x = sample((n, t, 6), n)
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], x.reshape(t, n, 2, 3))
        np.testing.assert_array_equal(execute(graph, x), x.reshape(t, n, 2, 3))


def test_traced_new_modules_export_and_match_eager():
    """LocalResponseNorm, Hardswish, Upsample (bilinear), Hardsigmoid and LayerNorm traced with a
    dynamic batch: onnxruntime on the export and the re-imported graph both match eager minnet."""
    ort = pytest.importorskip("onnxruntime")
    import minnet

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LocalResponseNorm(3), nn.Hardswish(),
                          nn.Upsample(scale_factor=2, mode="bilinear"), nn.Hardsigmoid(),
                          nn.LayerNorm([8, 8]))
    graph = trace(model, sample((2, 3, 4, 4)), dynamic_axes={0: "N"})
    proto = to_onnx(graph)
    assert {"LRN", "HardSwish", "Resize", "HardSigmoid", "LayerNormalization"} <= {
        n.op_type for n in proto.graph.node}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    back = from_onnx(proto)
    for n in (1, 3):
        x = sample((n, 3, 4, 4), n)
        eager = model(minnet.tensor(x)).data
        np.testing.assert_allclose(session.run(None, {graph.inputs[0]: x})[0], eager, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(execute(back, x), eager, rtol=1e-6, atol=1e-6)
