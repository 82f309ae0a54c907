"""Symbolic dimensions: arithmetic, proofs and their refusals, dynamic tracing, one compiled
object serving every batch (optim/graph/dims.py, ir.specialise, trace(dynamic_axes=),
compiled.CompiledGraph)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet.kernels.im2col import output_size
from optim.graph import compile, dims as D, execute, trace
from optim.graph.ir import Graph, GraphError, Node, as_type, specialise

from graph_helpers import eager, named_models, sample

SYMBOLS = ("N", "H", "W")


LEAVES = st.one_of(st.integers(0, 9), st.sampled_from(SYMBOLS))
TREES = st.recursive(
    LEAVES, lambda sub: st.one_of(
        st.tuples(st.sampled_from(["add", "sub", "mul"]), sub, sub),
        st.tuples(st.just("floordiv"), sub, st.integers(1, 5))), max_leaves=8)

OPS = {"add": (D.add, lambda a, b: a + b), "sub": (D.sub, lambda a, b: a - b),
       "mul": (D.mul, lambda a, b: a * b), "floordiv": (D.floordiv, lambda a, b: a // b)}


def _build(tree, env):
    """(the Dim the library builds, the value plain integer arithmetic gives)."""
    if not isinstance(tree, tuple):
        return tree, env.get(tree, tree)
    op, left, right = tree
    (a, a_value), (b, b_value) = _build(left, env), _build(right, env)
    return OPS[op][0](a, b), OPS[op][1](a_value, b_value)


@given(TREES, st.fixed_dictionaries({s: st.integers(1, 50) for s in SYMBOLS}))
def test_expression_arithmetic_evaluates_like_integer_arithmetic(tree, env):
    dim, value = _build(tree, env)
    assert D.evaluate(dim, env) == value
    assert D.check_dim(dim) == dim  # every built expression parses back


@given(st.integers(1, 64), st.integers(1, 7), st.integers(1, 4), st.integers(0, 3), st.integers(1, 3))
def test_symbolic_conv_output_size_equals_the_static_formula(h, k, s, p, d):
    if h + 2 * p < d * (k - 1) + 1:
        return
    assert D.evaluate(D.conv_out("H", k, s, p, d), {"H": h}) == output_size(h, k, s, p, d)


@given(st.integers(1, 9), st.sampled_from([(16, 5, 5), (4, 10), (3,)]))
def test_symbolic_reshape_agrees_with_numpy(n, rest):
    shape = ("N",) + rest
    for target in [("N", -1), (-1, int(np.prod(rest))), (-1,), ("N",) + rest[::-1]]:
        if np.prod(target[1:]) != np.prod(rest) and -1 not in target:
            continue
        got = D.reshape_shape(shape, target)
        want = np.empty((n,) + rest).reshape(tuple(n if d == "N" else d for d in target)).shape
        assert tuple(D.evaluate(d, {"N": n}) for d in got) == want


def test_what_cannot_be_proven_is_rejected():
    with pytest.raises(D.DimError, match="broadcast"):
        D.broadcast_shapes(("N", 4), (3, 4))  # N may be 1 or 3
    with pytest.raises(D.DimError, match="broadcast"):
        D.broadcast_shapes(("N",), ("M",))
    assert D.broadcast_shapes(("N", 1), (1, 5)) == ("N", 5)
    with pytest.raises(D.DimError, match="reshape"):
        D.reshape_shape(("N", 6), (4, -1))  # 6N need not divide by 4
    assert D.reshape_shape(("N", 6), (3, -1)) == (3, "N*2")
    with pytest.raises(D.DimError):
        D.check_dim("N; import os")
    with pytest.raises(D.DimError, match="non-negative"):
        D.check_dim(-3)
    x = as_type(("N", 4), np.float32)
    w = as_type((3, 4), np.float32)
    with pytest.raises(GraphError, match="broadcast"):
        Graph.build({"x": x, "w": w}, [Node("Add", ("x", "w"), "y")], ["y"], {})


def test_binding_checks_every_axis_and_names_it():
    expected = {"x": ("N", 1, 28, 28)}
    assert D.bind(expected, {"x": (7, 1, 28, 28)}) == {"N": 7}
    with pytest.raises(D.DimError, match="axis 1"):
        D.bind(expected, {"x": (7, 3, 28, 28)})
    with pytest.raises(D.DimError, match="at least 1"):
        D.bind(expected, {"x": (0, 1, 28, 28)})
    with pytest.raises(D.DimError, match="already"):
        D.bind({"a": ("N",), "b": ("N",)}, {"a": (2,), "b": (3,)})
    with pytest.raises(D.DimError, match="dimensions"):
        D.bind(expected, {"x": (7, 1, 28)})


@pytest.mark.parametrize("index", range(4))
def test_dynamic_trace_runs_at_every_batch_like_eager(index):
    name, model, shape = named_models()[index]
    graph = trace(model, sample(shape), dynamic_axes={0: "N"})
    assert graph.types["input"].shape[0] == "N" and not graph.static
    compiled = compile(graph)
    for batch in (1, 7, 64):
        x = sample((batch,) + shape[1:], seed=batch)
        want = eager(model, x)
        np.testing.assert_allclose(execute(graph, x), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(compiled(x), want, rtol=1e-5, atol=1e-5)
    assert len(compiled.plans) == 3


def test_plan_cache_is_bounded_and_reuses_plans():
    name, model, shape = named_models()[1]
    compiled = compile(trace(model, sample(shape), dynamic_axes={0: "N"}), cache_size=2)
    for batch in (1, 2, 3, 2):
        compiled(sample((batch,) + shape[1:]))
    assert list(compiled.plans) == [((3, 1, 28, 28),), ((2, 1, 28, 28),)]
    plan = compiled.plan_for((2, 1, 28, 28))
    assert compiled.plan_for((2, 1, 28, 28)) is plan
    with pytest.raises(ValueError, match="cache_size"):
        compile(trace(model, sample(shape)), cache_size=0)


def test_a_compiled_static_graph_rejects_another_batch_with_a_clear_error():
    name, model, shape = named_models()[1]
    compiled = compile(trace(model, sample(shape)))
    with pytest.raises(ValueError, match="axis 0"):
        compiled(sample((1,) + shape[1:]))
    dynamic = compile(trace(model, sample(shape), dynamic_axes={0: "N"}))
    with pytest.raises(ValueError, match="axis 1"):
        dynamic(sample((2, 3, 28, 28)))
    with pytest.raises(ValueError, match="symbolic shapes"):
        dynamic.algorithms  # no call yet: no plan to show


def test_specialise_equals_a_trace_at_that_shape():
    name, model, shape = named_models()[1]
    graph = trace(model, sample(shape), dynamic_axes={0: "N"})
    static = trace(model, sample((5,) + shape[1:]))
    assert specialise(graph, {"N": 5}).types == static.types


def test_dynamic_axes_are_checked():
    name, model, shape = named_models()[1]
    x = sample(shape)
    with pytest.raises(ValueError, match="out of range"):
        trace(model, x, dynamic_axes={4: "N"})
    with pytest.raises(ValueError, match="identifier"):
        trace(model, x, dynamic_axes={0: "2N"})
    with pytest.raises(ValueError):  # the flatten size follows the height: not a batch symbol
        trace(model, x, dynamic_axes={2: "H"})


def test_explain_lists_each_cached_shape_with_its_kernels():
    name, model, shape = named_models()[1]
    compiled = compile(trace(model, sample(shape), dynamic_axes={0: "N"}))
    compiled(sample((1,) + shape[1:]))
    compiled(sample((9,) + shape[1:]))
    text = compiled.explain(measure=True)
    assert "input shapes [(1, 1, 28, 28)]" in text and "input shapes [(9, 1, 28, 28)]" in text
    assert text.count("| Conv2d |") == 4


@pytest.mark.parametrize("attrs, match", [
    ({"kernel_size": (0, 2), "stride": (2, 2), "padding": (0, 0)}, "kernel_size"),
    ({"kernel_size": (2, 2), "stride": (0, 2), "padding": (0, 0)}, "stride"),
    ({"kernel_size": (2, 2), "stride": (2, 2), "padding": (-1, 0)}, "padding"),
    ({"kernel_size": (2, 2), "stride": (2, 2), "padding": (2, 2)}, "half"),
    ({"kernel_size": (1, 1), "stride": (10**9, 10**9), "padding": (100, 100)}, "half"),
    ({"kernel_size": (2, 2), "stride": (2, 2), "padding": (True, 0)}, "padding"),
])
def test_malformed_window_attributes_are_refused_where_the_node_is_made(attrs, match):
    x = as_type((1, 1, 8, 8), np.float32)
    with pytest.raises(GraphError, match=match):
        Graph.build({"x": x}, [Node("MaxPool2d", ("x",), "y", attrs)], ["y"], {})


@pytest.mark.parametrize("attrs, match", [
    ({"stride": (1, 1), "padding": (0, 0), "dilation": (0, 1), "groups": 1}, "dilation"),
    ({"stride": (0, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}, "stride"),
    ({"stride": (1, 1), "padding": (0, -2), "dilation": (1, 1), "groups": 1}, "padding"),
    ({"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 0}, "groups"),
])
def test_malformed_conv_attributes_are_refused(attrs, match):
    x, w = as_type((1, 2, 8, 8), np.float32), np.zeros((4, 2, 3, 3), np.float32)
    with pytest.raises(GraphError, match=match):
        Graph.build({"x": x}, [Node("Conv2d", ("x", "w"), "y", attrs)], ["y"], {"w": w})


def test_negative_input_dimensions_are_refused():
    with pytest.raises(GraphError, match="non-negative"):
        Graph.build({"x": ((-1, 4), np.float32)}, [Node("ReLU", ("x",), "y")], ["y"], {})


def test_one_compiled_object_chooses_kernels_per_input_shape():
    """With a cost model whose sparse kernel has no fixed cost but a slow rate, the
    90 %-sparse first layer of LeNet-300-100 runs CSR at batch 1 and dense GEMM at batch 64,
    from the same compiled object, each equal to eager."""
    from minnet.models import lenet_300_100
    from optim.graph import CostModel, optimize
    model = lenet_300_100()
    weight = model[1].weight.data
    weight[np.abs(weight) < np.quantile(np.abs(weight), 0.9)] = 0
    model_cost = CostModel(1e10, 1e10, {"linear.dense": [1e-4, 1.0, 0.0, 0.0],
                                        "linear.sparse_gather": [0.0, 20.0, 0.0, 0.0],
                                        "linear.sparse_axpy": [1.0, 20.0, 0.0, 0.0],
                                        "generic": [1e-6, 1.0, 1.0, 0.0]}, [0.0, 0.0])
    graph = optimize(trace(model, sample((2, 1, 28, 28)), dynamic_axes={0: "N"}))
    compiled = compile(graph, cost_model=model_cost)
    first = next(n.output for n in graph.nodes if n.op in ("Linear", "LinearReLU"))
    chosen = {}
    for batch in (1, 64):
        x = sample((batch, 1, 28, 28), seed=batch)
        np.testing.assert_allclose(compiled(x), eager(model, x), rtol=1e-5, atol=1e-5)
        chosen[batch] = compiled.algorithms[first]
    assert chosen == {1: "sparse_gather", 64: "dense"}
    assert "| sparse_gather |" in compiled.explain() and "| dense |" in compiled.explain()
