"""The compress-any chain on a small ResNet (``optim.graph.zoo.resnet_mnist``, 8 convolutions with
BatchNorm, 3 residual adds, one projection shortcut): dependency-group pruning shrinks the graph
to the masked model's function, the shrunk graph quantizes as a whole (every add a QLinearAdd),
and onnxruntime (optional oracle) runs its compact QOperator and QDQ files like the integer
engine at batch 1 and 5, both smaller than the float file of the same pruned graph."""
import numpy as np
import pytest

import minnet
from optim.graph import execute, optimize, to_onnx, trace
from optim.graph.zoo import randomize_batchnorm, resnet_mnist
from optim.prune.dependency import (dependency_groups, mask_channels, remove_channels,
                                    select_channels)
from optim.quant.graph_quant import quantize_graph, to_qdq


def test_prune_then_quantize_a_residual_network():
    minnet.manual_seed(0)
    model = randomize_batchnorm(resnet_mnist(width=8), np.random.default_rng(0)).eval()
    x = np.random.default_rng(1).standard_normal((40, 1, 28, 28)).astype(np.float32)
    graph = optimize(trace(model, x[:2], dynamic_axes={0: "N"}))
    assert sum(n.op.startswith("Conv2d") for n in graph.nodes) == 8
    groups = dependency_groups(graph)
    removed = select_channels(graph, groups, 0.5)
    pruned = remove_channels(graph, groups, removed)
    np.testing.assert_allclose(execute(pruned, x), execute(mask_channels(graph, groups, removed), x),
                               atol=1e-5)
    assert sum(v.size for v in pruned.constants.values()) < \
        0.4 * sum(v.size for v in graph.constants.values())
    integer = quantize_graph(pruned, x[:32])
    assert [n.op for n in integer.nodes].count("QLinearAdd") == 3
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    step = float(integer.constants[integer.nodes[-1].inputs[1]])
    float_bytes = len(to_onnx(pruned, compact=True).SerializeToString())
    for form in (integer, to_qdq(integer)):
        data = to_onnx(form, compact=True).SerializeToString()
        assert len(data) < float_bytes
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        for n in (1, 5):
            theirs = session.run(None, {session.get_inputs()[0].name: x[32:32 + n]})[0]
            assert np.abs(theirs - execute(integer, x[32:32 + n])).max() <= step * 1.0001
