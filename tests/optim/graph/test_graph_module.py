"""GraphModule: a traced or imported graph as a trainable minnet Module
(optim/graph/module.py)."""
import pathlib

import numpy as np
import pytest

import minnet
from minnet import nn
from minnet.models import lenet5
from optim.graph import execute, trace
from optim.graph.ir import Graph, Node, as_type
from optim.graph.module import GraphModule, weight_positions

from graph_helpers import eager, named_models, sample


def _train_mode_output(model, x):
    was = model.training
    model.train()
    try:
        return model(minnet.Tensor(x))
    finally:
        model.train(was)


@pytest.mark.parametrize("index", range(8))
def test_graph_module_equals_the_model_and_retraces_to_the_same_outputs(index):
    name, model, shape = named_models()[index]
    x = sample(shape)
    module = GraphModule(trace(model, x, dynamic_axes={0: "N"}))
    for batch in (1, shape[0] + 3):
        xb = sample((batch,) + shape[1:], seed=batch)
        np.testing.assert_allclose(eager(module, xb), eager(model, xb), rtol=1e-5, atol=1e-6)
    again = trace(module, x)
    np.testing.assert_allclose(execute(again, x), eager(model, x), rtol=1e-5, atol=1e-6)


def test_state_dict_keys_are_the_graph_names_and_load_the_original_weights():
    model = lenet5(batch_norm=True)
    x = sample((2, 1, 28, 28))
    module = GraphModule(trace(model, x))
    original = model.state_dict()
    assert set(module.state_dict()) == {k for k in original if "num_batches_tracked" not in k}
    assert {n for n, _ in module.named_parameters()} == {n for n, _ in model.named_parameters()}
    minnet.manual_seed(5)
    other = lenet5(batch_norm=True)
    module.load_state_dict(other.state_dict(), strict=False)
    np.testing.assert_allclose(eager(module, x), eager(other, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(module.to_graph().constants["0.weight"], other[0].weight.data)


def test_training_mode_uses_batch_statistics_and_gradients_match_eager():
    name, model, shape = named_models()[2]  # lenet5 with BatchNorm
    x = sample((6,) + shape[1:])
    module = GraphModule(trace(model, x))
    reference = _train_mode_output(model, x)
    module.train()
    out = module(minnet.Tensor(x))
    np.testing.assert_allclose(out.data, reference.data, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(module.state_dict()["1.running_mean"],
                               model.state_dict()["1.running_mean"], rtol=1e-6)
    weights = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
    (out * minnet.Tensor(weights)).sum().backward()
    (reference * minnet.Tensor(weights)).sum().backward()
    eager_grads = dict(model.named_parameters())
    for name, param in module.named_parameters():
        np.testing.assert_allclose(param.grad, eager_grads[name].grad, rtol=1e-4, atol=1e-5)


def test_dropout_nodes_follow_the_mode():
    x = as_type(("N", 100), np.float32)
    graph = Graph.build({"x": x}, [Node("Dropout", ("x",), "y", {"p": 0.5})], ["y"], {})
    module = GraphModule(graph)
    ones = np.ones((4, 100), np.float32)
    np.testing.assert_array_equal(eager(module, ones), ones)
    minnet.manual_seed(0)
    module.train()
    dropped = module(minnet.Tensor(ones)).data
    assert set(np.unique(dropped)) == {0.0, 2.0}


def test_constant_choice_is_checked_and_scalars_are_not_weights():
    x = as_type(("N", 3), np.float32)
    graph = Graph.build({"x": x}, [Node("Mul", ("x", "half"), "y"), Node("Add", ("y", "b"), "z")],
                        ["z"], {"half": np.float32(0.5), "b": np.ones(3, np.float32)})
    assert weight_positions(graph) == ["b"]
    with pytest.raises(ValueError, match="not constants"):
        GraphModule(graph, parameters=["nope"])
    with pytest.raises(TypeError, match="Graph"):
        GraphModule(nn.Linear(2, 2))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_torch_exported_lenet5_trains_as_a_graph_module(exporter):
    """The torch-exported LeNet-5 fixture (dynamic batch, view(x.size(0), -1)) imports as a
    trainable module: one epoch trains it; a perturbed copy recovers by one epoch of
    fine-tuning; gradients reach every imported weight."""
    pytest.importorskip("onnx")
    from minnet import optimizers
    from minnet.data import load_mnist
    from minnet.train import evaluate, fit
    from optim.graph import from_onnx
    path = pathlib.Path(__file__).parent / "fixtures" / f"lenet5_{exporter}.onnx"
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    train = (x_train[:2000], y_train[:2000])
    module = GraphModule(from_onnx(path))
    assert {n for n, _ in module.named_parameters()} >= {"conv1.weight", "fc1.weight"}
    untrained = evaluate(module, (x_test, y_test))["accuracy"]
    fit(module, optimizers.Adam(module.parameters(), lr=2e-3), train, epochs=1, progress=False)
    assert evaluate(module, (x_test, y_test))["accuracy"] > untrained + 0.2
    trained = module.to_graph()
    rng = np.random.default_rng(0)
    perturbed = {k: v + rng.normal(0, 0.3 * v.std(), v.shape).astype(v.dtype)
                 for k, v in trained.constants.items()}
    copy = GraphModule(trained.replace(constants=perturbed))
    before = evaluate(copy, (x_test, y_test))["accuracy"]
    fit(copy, optimizers.Adam(copy.parameters(), lr=1e-3), train, epochs=1, progress=False)
    after = evaluate(copy, (x_test, y_test))["accuracy"]
    assert after > before + 0.05, (before, after)
