"""Pipeline stages on tiny data: pruned weights stay zero through every later stage, rounds
resume exactly, the optional stages do what they say."""
import copy

import numpy as np
import pytest

import minnet
from minnet import nn
from minnet.data import load_mnist
from minnet.models import lenet5, lenet_300_100
from optim import prune, quant
from optim.pipeline import stages as pipeline_stages
from optim.pipeline.config import validate
from optim.pipeline.sources import build_model
from optim.pipeline.stages import STAGE_FUNCTIONS, Context
from optim.pipeline.store import save_model


@pytest.fixture(scope="module")
def data():
    x, y = load_mnist("train")
    keep = np.random.default_rng(0).permutation(len(y))[:192]
    xt, yt = load_mnist("test")
    return (x[keep], y[keep]), (xt[:50], yt[:50])


def _options(kind, **options):
    stages = [{"type": "baseline"}] + ([] if kind == "baseline" else [{"type": kind, **options}])
    return validate({"stage": stages})["stages"][-1]


def _context(data, tmp_path, baseline=None, name="work"):
    work = tmp_path / name
    work.mkdir(exist_ok=True)
    run = validate({"stage": [{"type": "baseline"}]})["run"]
    return Context(run, data[0], data[1], work, baseline, progress=False)


def _run(kind, model, data, tmp_path, baseline=None, name="work", **options):
    ctx = _context(data, tmp_path, baseline, name)
    return STAGE_FUNCTIONS[kind](model, _options(kind, **options), ctx)


def _zeros(model):
    return {n: m.weight.data == 0 for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))}


def test_baseline_trains_or_loads(data, tmp_path):
    trained = _run("baseline", None, data, tmp_path, epochs=1).model
    untrained = build_model("lenet5", 0)
    assert not np.array_equal(trained[0].weight.data, untrained[0].weight.data)
    state = tmp_path / "state.npz"
    minnet.save(trained, state)
    loaded = _run("baseline", None, data, tmp_path, checkpoint=str(state)).model
    np.testing.assert_array_equal(loaded[0].weight.data, trained[0].weight.data)
    packed = tmp_path / "packed.npz"
    save_model(trained, packed)
    loaded = _run("baseline", None, data, tmp_path, checkpoint=str(packed)).model
    np.testing.assert_array_equal(loaded[0].weight.data, trained[0].weight.data)


def test_pruned_zeros_survive_shrink_distill_and_quantization(data, tmp_path):
    teacher = build_model("lenet5", 0)
    pruned = _run("prune", teacher, data, tmp_path, amounts=[0.6, 0.9], fine_tune_epochs=1,
                  name="p").model
    assert prune.target_sparsity(list(prune.prunable(pruned))) == pytest.approx(0.9, abs=1e-3)
    small = _run("shrink", pruned, data, tmp_path, name="s").model
    student = _run("distill", small, data, tmp_path, teacher, name="d", epochs=1).model
    before = _zeros(prune.remove_all(copy.deepcopy(small)))
    after = _zeros(prune.remove_all(copy.deepcopy(student)))
    for name, zero in before.items():
        assert np.all(after[name][zero])  # every zero stays zero
    for method in ("ptq", "qat"):
        outcome = _run("quantize", student, data, tmp_path, name=f"q{method}", method=method,
                       epochs=1, weight_bits=4)
        stages = [m for m in outcome.model.modules() if isinstance(m, quant.QuantStage)]
        for stage, (name, zero) in zip(stages, after.items()):
            assert np.all(stage.layer.weight.data[zero] == 0), (method, name)
            assert not prune.is_pruned(stage.layer)  # the masks are baked into the codes
        assert outcome.engine == "integer"


def test_prune_rounds_resume_exactly(data, tmp_path):
    model = build_model("lenet5", 0)
    options = dict(amounts=[0.5, 0.8], fine_tune_epochs=1)
    whole = _run("prune", model, data, tmp_path, name="whole", **options).model
    _run("prune", model, data, tmp_path, name="split", amounts=[0.5], fine_tune_epochs=1)
    resumed = _run("prune", model, data, tmp_path, name="split", **options).model
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_qat_resumes_exactly(data, tmp_path, monkeypatch):
    """A QAT stage killed after its first epoch (its checkpoint then holds epoch 1) resumes
    from the checkpoint and ends with the uninterrupted run's state, qparams included."""
    model = build_model("lenet5", 0)
    options = dict(method="qat", epochs=2, weight_bits=4)
    whole = _run("quantize", model, data, tmp_path, name="whole", **options).model
    real_fit = pipeline_stages.fit
    with monkeypatch.context() as patch:
        patch.setattr(pipeline_stages, "fit",
                      lambda model, optimizer, train, epochs, **kw: real_fit(
                          model, optimizer, train, 1, **kw))
        _run("quantize", model, data, tmp_path, name="split", **options)
    assert (tmp_path / "split" / "qat.npz").exists()
    resumed = _run("quantize", model, data, tmp_path, name="split", **options).model
    whole_state, resumed_state = whole.state_dict(), resumed.state_dict()
    assert whole_state.keys() == resumed_state.keys()
    for key, value in whole_state.items():
        np.testing.assert_array_equal(resumed_state[key], value, err_msg=key)


def test_channel_pruning_then_shrink_removes_units(data, tmp_path):
    model = build_model("lenet-300-100", 0)
    pruned = _run("prune", model, data, tmp_path, name="p", method="channels", amounts=[0.5],
                  fine_tune_epochs=0).model
    small = _run("shrink", pruned, data, tmp_path, name="s")
    assert small.details["weight_shapes"]["1"] == [150, 784]
    assert small.details["weight_shapes"]["3"] == [50, 150]
    x = minnet.Tensor(data[1][0])
    with minnet.no_grad():
        np.testing.assert_allclose(small.model.eval()(x).data, pruned.eval()(x).data,
                                   rtol=1e-4, atol=1e-5)


def test_prune_rejects_unknown_layers(data, tmp_path):
    with pytest.raises(ValueError, match="'fc9' is not a Linear/Conv2d"):
        _run("prune", build_model("lenet5", 0), data, tmp_path, layers=["fc9"])


def test_weight_sharing_keeps_pruned_weights_at_zero(data, tmp_path):
    model = build_model("lenet5", 0)
    prune.prune_model(model, 0.8)
    zeros = _zeros(prune.remove_all(copy.deepcopy(model)))
    shared = _run("share", model, data, tmp_path, n_clusters=8, fine_tune_epochs=1).model
    layers = {n: m for n, m in shared.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert layers.keys() == zeros.keys()
    for name, layer in layers.items():
        lookup, = nn.parametrize.parametrizations_of(layer, "weight")
        weight = layer.weight.data
        np.testing.assert_array_equal(weight == 0, zeros[name])
        assert lookup.centroids.data[0] == 0 and np.unique(weight).size <= 8


def test_lowrank_factorizes_the_hidden_linears(data, tmp_path):
    outcome = _run("lowrank", build_model("lenet-300-100", 0), data, tmp_path, energy=0.5,
                   fine_tune_epochs=1)
    names = [f["name"] for f in outcome.details["factorized"]]
    assert names == ["1", "3"]
    assert all(f["params_after"] < f["params_before"] for f in outcome.details["factorized"])
    assert isinstance(dict(outcome.model.named_modules())["1"], nn.Sequential)


def test_nas_picks_the_smallest_within_tolerance(data, tmp_path):
    outcome = _run("nas", build_model("lenet5", 0), data, tmp_path, trials=3, trial_epochs=1,
                   epochs=1, tolerance=1.0)
    # tolerance 1 admits every successful trial: the pick has the fewest parameters
    from optim.nas import History, cnn_cost
    history = History.load(tmp_path / "work" / "nas.json")
    params = [cnn_cost(t.arch).params for t in history.ok()]
    assert cnn_cost(outcome.details["architecture"]).params == min(params)
    assert outcome.details["ok_trials"] == len(params) >= 1


def test_graph_and_export_keep_the_model(data, tmp_path):
    model = build_model("lenet5", 0).eval()
    graph = _run("graph", model, data, tmp_path)
    assert graph.model is model and graph.engine == "graph"
    assert graph.details["ops"][0] == "Conv2dReLU" and b"Conv2dReLU" in graph.files["graph.txt"]
    pytest.importorskip("onnx")
    export = _run("export", model, data, tmp_path)
    assert export.files["model.onnx"] and export.details["onnx_bytes"] > 0
