"""The compiled executor equals the reference executor and eager minnet, whatever kernel each
node runs, call after call."""
import numpy as np
import pytest
from hypothesis import given

from minnet.models import lenet5, lenet_300_100
from optim.graph import execute, trace
from optim.graph.compiled import algorithm_options, compile
from optim.graph.passes import optimize

from graph_helpers import eager, named_models, random_graphs, sample

MODELS = named_models()


def _every_choice(graph):
    """Algorithm maps cycling through each node's options, so each option is used once."""
    options = {n.output: algorithm_options(n, graph) for n in graph.nodes}
    rounds = max(len(o) for o in options.values()) if options else 1
    return [{k: o[r % len(o)] for k, o in options.items()} for r in range(rounds)]


@pytest.mark.parametrize("name,model,shape", MODELS, ids=[m[0] for m in MODELS])
def test_compiled_optimized_graph_equals_eager(name, model, shape):
    x = sample(shape, seed=5)
    graph = optimize(trace(model, x))
    want = eager(model, x)
    for algorithms in _every_choice(graph):
        compiled = compile(graph, algorithms)
        np.testing.assert_allclose(compiled(x), want, rtol=1e-5, atol=1e-5, err_msg=str(algorithms))


@given(random_graphs())
def test_compiled_equals_reference_on_random_graphs(graph):
    inputs = [sample(graph.types[k].shape, 1) for k in graph.inputs]
    want = execute(graph, *inputs)
    want = want if isinstance(want, tuple) else (want,)
    for inplace in (True, False):
        got = compile(graph, inplace=inplace)(*inputs)
        got = got if isinstance(got, tuple) else (got,)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_calls_are_independent_and_outputs_are_copies():
    graph = optimize(trace(lenet5(batch_norm=True), sample((3, 1, 28, 28))))
    compiled = compile(graph)
    x1, x2 = sample((3, 1, 28, 28), 1), sample((3, 1, 28, 28), 2)
    first = compiled(x1)
    kept = first.copy()
    first[...] = 0
    compiled(x2)
    np.testing.assert_array_equal(compiled(x1), kept)
    np.testing.assert_array_equal(x1, sample((3, 1, 28, 28), 1))  # the input is not touched


def test_untraced_graph_compiles_too():
    x = sample((2, 1, 28, 28))
    model = lenet5(batch_norm=True)
    np.testing.assert_allclose(compile(trace(model, x))(x), eager(model, x), rtol=1e-5, atol=1e-5)


def test_wrong_input_and_bad_algorithms_are_reported():
    graph = optimize(trace(lenet_300_100(), sample((2, 1, 28, 28))))
    compiled = compile(graph)
    with pytest.raises(ValueError, match=r"'input'.*\(5, 1, 28, 28\).*\(2, 1, 28, 28\)"):
        compiled(sample((5, 1, 28, 28)))
    with pytest.raises(ValueError, match="'nowhere'"):
        compile(graph, {"nowhere": "dense"})
    linear = graph.nodes[-1].output
    with pytest.raises(ValueError, match="'fft' cannot run node"):
        compile(graph, {linear: "fft"})
