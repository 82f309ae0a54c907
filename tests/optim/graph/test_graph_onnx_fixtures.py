"""Torch-exported ONNX fixtures (scripts/make_onnx_fixtures.py: five networks, each from the
TorchScript and the dynamo exporter, batch axis dynamic): every file imports with a symbolic
batch, and the reference executor and ONE compiled object agree with onnxruntime within 1e-5
at batch 1, 7 and 64; export writes the symbolic batch back and onnxruntime agrees again."""
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from optim.graph import compile, execute, from_onnx, to_onnx  # noqa: E402

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.onnx"))
NETWORKS = ("mlp", "lenet5", "resnet", "mobilenet", "mixed")


def test_every_network_comes_from_both_exporters():
    names = {p.stem for p in FIXTURES}
    assert names == {f"{n}_{e}" for n in NETWORKS for e in ("torchscript", "dynamo")}


def _session(model_bytes):
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_matches_onnxruntime_at_every_batch(path):
    graph = from_onnx(path)
    (name,) = graph.inputs
    shape = graph.types[name].shape
    assert isinstance(shape[0], str) and all(isinstance(d, int) for d in shape[1:])
    session = _session(path.read_bytes())
    run = compile(graph)
    exported = _session(to_onnx(graph).SerializeToString())
    rng = np.random.default_rng(len(path.stem))
    for batch in (1, 7, 64):
        x = rng.standard_normal((batch,) + shape[1:]).astype(np.float32)
        (want,) = session.run(None, {name: x})
        np.testing.assert_allclose(execute(graph, x), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(run(x), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(exported.run(None, {name: x})[0], want, rtol=1e-5, atol=1e-5)
    assert len(run.plans) == 3


def test_lenet_view_becomes_one_symbolic_reshape():
    graph = from_onnx(Path(__file__).parent / "fixtures" / "lenet5_torchscript.onnx")
    reshapes = [n for n in graph.nodes if n.op == "Reshape"]
    assert len(reshapes) == 1 and reshapes[0].attrs["shape"] == ("N", 400)
    assert not {"Shape", "Gather", "Concat", "Unsqueeze"} & {n.op for n in graph.nodes}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_imported_fixture_trains_as_a_graph_module(path):
    """GraphModule over the imported graph: eval output equals execute's; every weight gets a
    gradient, and a small gradient step lowers a squared error."""
    import minnet
    from optim.graph.module import GraphModule

    graph = from_onnx(path)
    module = GraphModule(graph).eval()
    shape = (5,) + graph.types[graph.inputs[0]].shape[1:]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    target = execute(graph, x) + rng.standard_normal(execute(graph, x).shape).astype(np.float32)

    def loss():
        return ((module(minnet.tensor(x)) - minnet.tensor(target)) ** 2).mean()
    np.testing.assert_allclose(module(minnet.tensor(x)).data, execute(graph, x), rtol=1e-5, atol=1e-6)
    before = loss()
    before.backward()
    params = [p for _, p in module.named_parameters()]
    assert params and all(p.grad is not None and p.grad.shape == p.shape for p in params)
    norm = sum(float((p.grad ** 2).sum()) for p in params)
    for p in params:
        p.data -= 1e-3 / max(norm, 1e-12) ** 0.5 * p.grad
    assert loss().data < before.data
