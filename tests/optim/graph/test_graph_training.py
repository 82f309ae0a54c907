"""Plans with inputs bound by reference (external buffers): a graph input such as a model
parameter is read where it lives, never copied into or written by the arena."""
import numpy as np
import pytest
from hypothesis import given

from optim.graph import execute, plan_memory
from optim.graph.compiled import Plan, _choose, precompute_constants

from graph_helpers import random_graphs, sample


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


@given(random_graphs())
def test_external_input_is_read_by_reference_and_never_written(graph):
    graph = precompute_constants(graph)
    name = graph.inputs[0]
    inputs = [sample(graph.types[k].shape, i + 1) for i, k in enumerate(graph.inputs)]
    bound = inputs[0].copy()
    memory = plan_memory(graph, external=[name])
    plan = Plan(graph, memory, _choose(graph, {}, None), external={name: bound})
    assert name not in memory.buffer
    assert memory.arena_bytes <= plan_memory(graph).arena_bytes
    for seed in (7, 8):
        got = _outputs(plan.run(inputs[1:]))
        np.testing.assert_array_equal(bound, inputs[0])  # the plan never writes it
        want = _outputs(execute(graph, *inputs))
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        inputs[0] = sample(bound.shape, seed)
        bound[...] = inputs[0]  # an in-place change is seen by the next run


def test_external_binding_rejects_bad_arrays():
    from optim.graph import trace
    from minnet.models import lenet_300_100
    graph = precompute_constants(trace(lenet_300_100(), sample((2, 1, 28, 28))))
    name = graph.inputs[0]
    t = graph.types[name]
    memory = plan_memory(graph, external=[name])
    algorithms = _choose(graph, {}, None)
    with pytest.raises(ValueError, match="external must name graph inputs"):
        plan_memory(graph, external=["no_such_input"])
    with pytest.raises(ValueError, match=repr(name)):
        Plan(graph, memory, algorithms, external={name: np.zeros(t.shape, np.float64)})
    with pytest.raises(ValueError, match=repr(name)):
        Plan(graph, memory, algorithms,
             external={name: np.zeros(tuple(t.shape)[::-1], t.dtype).T})
    with pytest.raises(ValueError, match="no array given"):
        Plan(graph, memory, algorithms)
