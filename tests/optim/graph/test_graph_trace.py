"""Tracing and the reference executor: a traced graph computes exactly what eager minnet does."""
import numpy as np
import pytest

import minnet
from minnet import functional as F
from minnet import nn
from minnet.models import lenet5, lenet_300_100
from optim.graph import execute, trace
from optim.graph.ir import GraphError

from graph_helpers import eager, named_models, sample

MODELS = named_models()


@pytest.mark.parametrize("name,model,shape", MODELS, ids=[m[0] for m in MODELS])
def test_traced_graph_equals_eager(name, model, shape):
    # the graph runs the same Function.forward kernels in the same order: bitwise equal
    x = sample(shape, seed=1)
    graph = trace(model, x)
    np.testing.assert_array_equal(execute(graph, x), eager(model, x))
    other = sample(shape, seed=2)  # not the example input: the graph holds no activations
    np.testing.assert_array_equal(execute(graph, other), eager(model, other))


def test_every_parameter_and_buffer_becomes_a_named_constant():
    model = lenet5(batch_norm=True)
    graph = trace(model, sample((2, 1, 28, 28)))
    state = model.state_dict()
    used = {k for k in state if not k.endswith("num_batches_tracked")}
    assert set(graph.constants) == used
    for key in used:
        np.testing.assert_array_equal(graph.constants[key], state[key])
        assert not graph.constants[key].flags.writeable


def test_constants_are_snapshots_of_the_parameters():
    model = lenet_300_100()
    x = sample((2, 1, 28, 28))
    graph = trace(model, x)
    before = execute(graph, x)
    model[1].weight.data[...] = 0
    np.testing.assert_array_equal(execute(graph, x), before)


def test_trace_restores_mode_and_removes_its_hooks():
    model = lenet5(batch_norm=True)
    model.train()
    trace(model, sample((2, 1, 28, 28)))
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_batchnorm_running_statistics_are_untouched():
    model = lenet5(batch_norm=True)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    trace(model, sample((2, 1, 28, 28)))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_node_names_follow_module_names():
    graph = trace(lenet_300_100(), sample((2, 1, 28, 28)))
    assert [n.output for n in graph.nodes] == ["0.reshape", "1.linear", "2.relu", "3.linear",
                                               "4.relu", "5.linear"]


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return self.fc(F.relu(self.fc(x))) * 0.5, x.sum(axis=1)


def test_shared_parameters_captured_scalars_and_several_outputs():
    model = _Shared()
    x = sample((3, 6))
    graph = trace(model, x)
    assert sorted(graph.constants) == ["const", "fc.bias", "fc.weight"]
    out, total = execute(graph, x)
    want_out, want_total = model(minnet.Tensor(x))
    np.testing.assert_array_equal(out, want_out.data)
    np.testing.assert_array_equal(total, want_total.data)


def test_float64_models_trace_to_float64_graphs():
    model = lenet_300_100().double()
    x = sample((2, 1, 28, 28), dtype=np.float64)
    graph = trace(model, x)
    assert {t.dtype for t in graph.types.values()} == {np.dtype(np.float64)}
    np.testing.assert_array_equal(execute(graph, x), eager(model, x))


class _WithLoss(nn.Module):
    def forward(self, x):
        return F.cross_entropy(x, np.zeros(len(x.data), dtype=np.int64))


def test_unknown_op_is_named():
    with pytest.raises(NotImplementedError, match="CrossEntropy"):
        trace(_WithLoss(), sample((2, 3)))


def test_bad_arguments():
    with pytest.raises(TypeError, match="Module"):
        trace(lambda x: x, sample((2, 3)))
    with pytest.raises(TypeError, match="floating"):
        trace(lenet_300_100(), np.zeros((2, 784), dtype=np.int64))


def test_execute_names_the_input_and_both_shapes():
    graph = trace(lenet_300_100(), sample((2, 1, 28, 28)))
    with pytest.raises(ValueError, match=r"'input'.*\(3, 1, 28, 28\).*\(2, 1, 28, 28\)"):
        execute(graph, sample((3, 1, 28, 28)))
    with pytest.raises(ValueError, match="1 input"):
        execute(graph)
    with pytest.raises(TypeError, match="dtype"):
        execute(graph, np.zeros((2, 1, 28, 28), dtype=np.int32))


def test_execute_rejects_a_malformed_graph():
    graph = trace(lenet_300_100(), sample((2, 1, 28, 28)))
    broken = type(graph)(graph.inputs, graph.outputs, graph.nodes[1:], graph.constants, graph.types)
    with pytest.raises(GraphError, match="dangling"):
        execute(broken, sample((2, 1, 28, 28)))
