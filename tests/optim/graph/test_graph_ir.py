"""The IR: shape inference agrees with the kernels, validation catches malformed graphs."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minnet.models import lenet_300_100
from optim.graph import trace
from optim.graph.ir import Graph, GraphError, Node, TensorType, as_type, topological_order, validate
from optim.graph.grad_ops import GRADIENT_OPS
from optim.graph.ops import OPS, infer_node, run_node

from graph_helpers import sample

small = st.integers(1, 5)


def _conv_case(draw, op):
    groups = draw(st.sampled_from([1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    stride, padding, dilation = draw(small), draw(st.integers(0, 2)), draw(st.integers(1, 2))
    size = dilation * (k - 1) + 1 + draw(st.integers(0, 4))
    shapes = [(draw(st.integers(1, 2)), c_in, size, size + 1), (c_out, c_in // groups, k, k)]
    if draw(st.booleans()):
        shapes.append((c_out,))
    attrs = dict(stride=(stride, 1), padding=(padding, 0), dilation=(dilation, 1), groups=groups)
    return shapes, attrs


def _pool_case(draw, op):
    k = draw(st.integers(1, 3))
    return [(1, 2, k + draw(st.integers(0, 4)), k + 2)], dict(
        kernel_size=(k, k), stride=(draw(small), 1), padding=(draw(st.integers(0, k // 2)), 0))


def _linear_case(draw, op):
    n_in, n_out = draw(small), draw(small)
    lead = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=3))
    shapes = [lead + (n_in,), (n_out, n_in)] + ([(n_out,)] if draw(st.booleans()) else [])
    return shapes, {}


def _matmul_case(draw, op):
    k = draw(small)
    a = draw(st.sampled_from([(k,), (2, k), (3, 2, k)]))
    b = draw(st.sampled_from([(k,), (k, 2), (1, k, 4)]))
    return [a, b], {}


def _binary_case(draw, op):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3)).input_shapes
    return list(shapes), {}


def _unary_case(draw, op):
    attrs = {"Clip": dict(min=-0.5, max=0.5), "LeakyReLU": dict(negative_slope=0.1)}.get(op, {})
    return [draw(hnp.array_shapes(max_dims=3, max_side=4))], attrs


def _reduce_case(draw, op):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    axis = draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    attrs = dict(axis=axis, keepdims=draw(st.booleans()))
    if op in ("Softmax", "LogSoftmax"):
        attrs = dict(axis=-1 if axis is None else axis)
    return [shape], attrs


def _movement_case(draw, op):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    if op == "Reshape":
        target = (-1,) + shape[1:] if draw(st.booleans()) else (int(np.prod(shape)),)
        return [shape], dict(shape=target)
    if op == "Transpose":
        return [shape], dict(axes=tuple(draw(st.permutations(range(len(shape))))))
    if op == "GetItem":
        return [shape], dict(index=(slice(0, 1),) + (np.array([0, 0]),) * (len(shape) > 1))
    if op == "Pad":
        return [shape], dict(pad_width=tuple((draw(st.integers(0, 2)), 1) for _ in shape), value=1.5)
    if op in ("Concatenate", "Stack"):
        k = draw(st.integers(1, 3))
        if op == "Stack":
            return [shape] * k, dict(axis=draw(st.integers(0, len(shape))))
        return [shape[:-1] + (draw(small),) for _ in range(k)], dict(axis=-1)
    return [shape], {}


def _bn_case(draw, op):
    x = (2, draw(small)) + (draw(small),) * draw(st.integers(0, 2))
    c = x[1]
    training = draw(st.booleans())
    return [x, (c,), (c,), (c,), (c,)], dict(eps=1e-5, training=training)


def _adaptive_case(draw, op):
    return [(1, 2, draw(small), draw(small))], dict(output_size=(draw(small), draw(small)))


CASES = {
    "Conv2d": _conv_case, "Conv2dReLU": _conv_case, "MaxPool2d": _pool_case,
    "AvgPool2d": _pool_case, "AdaptiveAvgPool2d": _adaptive_case, "Linear": _linear_case,
    "LinearReLU": _linear_case, "MatMul": _matmul_case, "BatchNorm": _bn_case,
    **{op: _binary_case for op in ("Add", "Sub", "Mul", "Div", "Pow", "Maximum", "Minimum",
                                   "AddReLU")},
    **{op: _unary_case for op in ("Neg", "Exp", "Log", "Sqrt", "Abs", "Clip", "ReLU", "LeakyReLU",
                                  "Sigmoid", "Tanh", "GELU", "Identity", "Dropout")},
    **{op: _reduce_case for op in ("Sum", "Mean", "Max", "Var", "Softmax", "LogSoftmax")},
    **{op: _movement_case for op in ("Reshape", "Transpose", "GetItem", "Pad", "Concatenate",
                                     "Stack")},
    "Where": lambda draw, op: ([(3, 1), (1, 2), (3, 2)], {}),
}


# ops that only ONNX models bring, checked against onnxruntime in test_graph_onnx_ops.py
ONNX_ONLY = {"HardSigmoid", "HardSwish", "Erf", "Cast", "LocalResponseNorm", "LayerNorm", "Resize",
             "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeScale",
             "DynamicQuantizeZeroPoint", "QLinearConv", "QLinearMatMul", "ConvInteger",
             "MatMulInteger", "Full"}
# onnxruntime's com.microsoft quantized ops, checked against it in
# tests/optim/quant/test_graph_quant_ops.py
CONTRIB_OPS = {"QGemm", "QLinearAdd", "QLinearConcat", "QLinearAveragePool",
               "QLinearGlobalAveragePool"}


def test_every_op_has_a_shape_case():
    assert set(CASES) == set(OPS) - ONNX_ONLY - CONTRIB_OPS - set(GRADIENT_OPS)


@st.composite
def op_cases(draw):
    op = draw(st.sampled_from(sorted(CASES)))
    shapes, attrs = CASES[op](draw, op)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    arrays = [np.abs(rng.standard_normal(s)).astype(dtype) + 0.5 for s in shapes]
    if op == "Where":
        arrays[0] = arrays[0] > 1
    return Node(op, tuple(f"x{i}" for i in range(len(arrays))), "y", attrs), arrays


@given(op_cases())
def test_inferred_type_is_the_kernels_output_type(case):
    node, arrays = case
    inferred = infer_node(node, [as_type(a.shape, a.dtype) for a in arrays])
    out = run_node(node, arrays)
    assert inferred == as_type(out.shape, out.dtype)


def _graph():
    return trace(lenet_300_100(), sample((2, 1, 28, 28)))


def test_build_sorts_nodes_topologically():
    g = _graph()
    shuffled = Graph.build(g.input_types, reversed(g.nodes), g.outputs, g.constants)
    assert [n.output for n in shuffled.nodes] == [n.output for n in g.nodes]
    assert validate(shuffled) is shuffled


def test_cycle_is_reported_with_its_nodes():
    t = as_type((2, 3), np.float32)
    nodes = [Node("ReLU", ("b",), "a"), Node("Tanh", ("a",), "b"), Node("Neg", ("x",), "c")]
    with pytest.raises(GraphError, match="cycle through (a -> b -> a|b -> a -> b)"):
        topological_order(nodes, ["x"])
    g = Graph(("x",), ("a",), tuple(nodes), {}, {"x": t, "a": t, "b": t, "c": t})
    with pytest.raises(GraphError, match="cycle"):
        validate(g)


def test_dangling_and_duplicate_values():
    t = {"x": as_type((2,), np.float32)}
    with pytest.raises(GraphError, match="'ghost'.*dangling"):
        Graph.build(t, [Node("ReLU", ("ghost",), "y")], ["y"], {})
    with pytest.raises(GraphError, match="more than once"):
        Graph.build(t, [Node("ReLU", ("x",), "y"), Node("Tanh", ("x",), "y")], ["y"], {})
    with pytest.raises(GraphError, match="output 'z'"):
        Graph.build(t, [Node("ReLU", ("x",), "y")], ["z"], {})


def test_ill_shaped_graphs_name_the_node():
    t = {"x": as_type((2, 5), np.float32)}
    with pytest.raises(GraphError, match=r"node 'fc' \(Linear\).*\(2, 5\).*\(3, 4\)"):
        Graph.build(t, [Node("Linear", ("x", "w"), "fc")], ["fc"], {"w": np.zeros((3, 4), np.float32)})
    with pytest.raises(GraphError, match="unknown op 'Frobnicate'"):
        Graph.build(t, [Node("Frobnicate", ("x",), "y")], ["y"], {})
    with pytest.raises(GraphError, match="needs 2..3 inputs"):
        Graph.build(t, [Node("Linear", ("x",), "y")], ["y"], {})


def test_validate_catches_a_wrong_recorded_shape():
    g = _graph()
    types = dict(g.types)
    types["2.relu"] = TensorType((2, 299), np.dtype(np.float32))
    with pytest.raises(GraphError, match="'2.relu'.*shape mismatch"):
        validate(Graph(g.inputs, g.outputs, g.nodes, g.constants, types))


def test_validate_catches_misordered_nodes():
    g = _graph()
    nodes = (g.nodes[1], g.nodes[0]) + g.nodes[2:]
    with pytest.raises(GraphError, match="topological order"):
        validate(Graph(g.inputs, g.outputs, nodes, g.constants, g.types))


def test_dump_lists_every_value_with_its_type():
    g = _graph()
    text = g.dump()
    for name, t in g.types.items():
        assert name in text and str(t) in text
    assert text.splitlines()[-1] == "  return %5.linear"


def test_signature_sees_constant_values():
    g = _graph()
    changed = g.replace(constants={**g.constants, "5.bias": g.constants["5.bias"] + 1})
    assert g.signature(data=False) == changed.signature(data=False)
    assert g.signature() != changed.signature()
