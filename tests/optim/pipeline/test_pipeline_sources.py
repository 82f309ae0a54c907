"""Bring your own model and data: an .npz data set gives the run the built-in name gives for the
same arrays, bad .npz files are refused with their reason, models come from ONNX files (as a
minnet Sequential computing the imported graph) or from "package.module:function"."""
from pathlib import Path

import numpy as np
import pytest

from minnet import nn
from minnet.data import load_mnist
from optim.graph import execute, from_onnx
from optim.pipeline import run_pipeline
from optim.pipeline.config import ConfigError, parse_config
from optim.pipeline.sources import (build_model, dataset_problem, load_dataset, model_problem,
                                    sequential_from_graph)

FIXTURES = Path(__file__).resolve().parents[1] / "graph" / "fixtures"
TINY = """
[run]
dataset = "{dataset}"
limit = 300
test_limit = 200
latency_repeats = 1
[[stage]]
type = "baseline"
epochs = 1
[[stage]]
type = "quantize"
"""


def _mnist_npz(path: Path, dtype=np.float32) -> Path:
    (x, y), (xt, yt) = load_mnist("train"), load_mnist("test")
    if dtype == np.uint8:
        x, xt = (np.rint(a[:, 0] * 255).astype(np.uint8) for a in (x, xt))
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def test_an_npz_data_set_gives_the_built_in_run(tmp_path):
    """MNIST-5k re-saved as an .npz: the same accuracies at every stage as ``mnist-5k``."""
    rows = []
    for name, dataset in (("builtin", "mnist-5k"), ("npz", str(_mnist_npz(tmp_path / "d.npz")))):
        config = parse_config(TINY.format(dataset=dataset))
        report = run_pipeline(config, tmp_path / name, progress=False)
        rows.append([(r["stage"], r["accuracy"]) for r in report["rows"]])
    assert rows[0] == rows[1]


def test_uint8_images_without_channels_are_scaled_and_given_one(tmp_path):
    (x, y), (xt, _) = load_dataset(str(_mnist_npz(tmp_path / "u8.npz", np.uint8)))
    reference, _ = load_mnist("train")
    assert x.shape == reference.shape and x.dtype == np.float32 and len(xt) == 1000
    np.testing.assert_allclose(x, reference, atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize("arrays,reason", [
    ({"x_train": np.zeros((2, 4)), "y_train": np.zeros(2, int)}, "missing arrays"),
    ({"x_train": np.zeros((2, 4)), "y_train": np.zeros(3, int), "x_test": np.zeros((1, 4)),
      "y_test": np.zeros(1, int)}, "y_train must be 2 integer labels"),
    ({"x_train": np.zeros((2, 4)), "y_train": np.array([0.0, 1.0]), "x_test": np.zeros((1, 4)),
      "y_test": np.zeros(1, int)}, "integer labels"),
    ({"x_train": np.full((2, 4), np.nan), "y_train": np.zeros(2, int),
      "x_test": np.zeros((1, 4)), "y_test": np.zeros(1, int)}, "NaN"),
    ({"x_train": np.zeros((2, 4)), "y_train": np.zeros(2, int), "x_test": np.zeros((1, 5)),
      "y_test": np.zeros(1, int)}, "differ in shape"),
    ({"x_train": np.array([object(), object()]), "y_train": np.zeros(2, int),
      "x_test": np.zeros((1, 4)), "y_test": np.zeros(1, int)}, "x_train is not a plain array"),
])
def test_bad_npz_files_are_refused_with_the_reason(tmp_path, arrays, reason):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert reason in dataset_problem(str(path))
    with pytest.raises(ConfigError, match=f"run.dataset: .*{reason}"):
        parse_config(TINY.format(dataset=path))


def test_models_from_an_onnx_file_and_from_a_function(tmp_path):
    """A torch-exported LeNet-5 becomes a Sequential whose output equals the imported graph's;
    a residual graph is refused naming its node; "module:function" names are checked."""
    graph = from_onnx(FIXTURES / "lenet5_torchscript.onnx")
    model = build_model(str(FIXTURES / "lenet5_torchscript.onnx"), 0).eval()
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(model(x).data, execute(graph, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not continue a chain"):
        sequential_from_graph(from_onnx(FIXTURES / "resnet_torchscript.onnx"))
    assert isinstance(build_model("minnet.models:lenet_300_100", 0), nn.Sequential)
    assert model_problem("minnet.models:lenet_300_100") is None
    assert "cannot import" in model_problem("minnet.models:nope")
    assert "no such ONNX file" in model_problem(str(tmp_path / "x.onnx"))
    assert "must be one of" in model_problem("resnet9000")
    with pytest.raises(TypeError, match="not a minnet Module"):
        build_model("time:time", 0)


def test_the_imported_example_config_runs(tmp_path, monkeypatch):
    """``examples/imported.toml`` on a tiny budget: the baseline is the imported model (its
    accuracy is the ONNX file's, run by onnxruntime), and the run ends with an int8 ONNX file
    that onnxruntime runs at batch 1 and 64."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    root = Path(__file__).resolve().parents[3]
    monkeypatch.chdir(root)
    text = (root / "examples" / "imported.toml").read_text()
    text = text.replace('seed = 0', 'seed = 0\nlimit = 300\ntest_limit = 200\nlatency_repeats = 1')
    text = text.replace('type = "distill"', 'type = "distill"\nepochs = 1')
    text = text.replace('amounts = [0.5, 0.75, 0.875, 0.92]',
                        'amounts = [0.5, 0.75]\nfine_tune_epochs = 1')
    report = run_pipeline(parse_config(text), tmp_path / "run", progress=False)
    rows = {r["stage"]: r for r in report["rows"]}
    assert rows["baseline"]["details"]["imported"] == "examples/lenet5_trained.onnx"
    session = ort.InferenceSession(str(root / "examples" / "lenet5_trained.onnx"),
                                   providers=["CPUExecutionProvider"])
    config = parse_config(text)
    from optim.pipeline import load_data
    x, y = load_data(config["run"])[1]
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0].argmax(axis=1)
    assert rows["baseline"]["accuracy"] == pytest.approx((theirs == y).mean())
    assert rows["export"]["details"]["onnx_form"] == "int8"
    exported = ort.InferenceSession(str(tmp_path / "run" / "06-export" / "model.onnx"),
                                    providers=["CPUExecutionProvider"])
    for n in (1, 64):
        assert exported.run(None, {exported.get_inputs()[0].name: x[:n]})[0].shape == (n, 10)
