"""compress_to_target and the pipeline's auto stage: the validation split, the tolerance met on
it, resume from the work directory, and the example configuration run end to end."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minnet
from minnet import nn, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from optim import auto
from optim.pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_validation_split_is_disjoint_from_test():
    """The validation images are training images: the split partitions the training indices,
    and no validation image equals any test image."""
    x, y = load_mnist("train", "5k")
    x_test, _ = load_mnist("test", "5k")
    fit_index, val_index = auto.validation_split(len(y), 0.25, seed=0)
    assert len(val_index) == 1000 and len(fit_index) == 3000
    assert np.intersect1d(fit_index, val_index).size == 0
    assert np.array_equal(np.union1d(fit_index, val_index), np.arange(len(y)))
    test_images = {img.tobytes() for img in x_test}
    assert not any(img.tobytes() in test_images for img in x[val_index])
    with pytest.raises(ValueError, match="fraction"):
        auto.validation_split(10, 1.0, 0)


@pytest.fixture(scope="module")
def small_mnist_model():
    x, y = load_mnist("train", "5k")
    keep = np.random.default_rng(0).permutation(len(y))[:800]
    x, y = x[keep], y[keep]
    minnet.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 24), nn.ReLU(), nn.Linear(24, 10))
    fit(model, optimizers.Adam(model.parameters(), lr=3e-3), (x, y), 3, batch_size=64, seed=0,
        progress=False)
    return model, (x, y)


def test_compress_to_target_meets_the_tolerance_on_validation(small_mnist_model):
    """The returned model's accuracy on the validation split, measured here, is within the
    tolerance of the float model's, and it is the last candidate recorded."""
    model, train = small_mnist_model
    out, details = auto.compress_to_target(model, train, max_drop_pp=1.0,
                                           sparsities=(0.0, 0.75, 0.95), bits=(8, 3, 2),
                                           max_candidates=10, calibration_images=256,
                                           confidence_z=0.0)
    _, val_index = auto.validation_split(len(train[1]), 0.25, 0)
    val = (train[0][val_index], train[1][val_index])
    drop = 100 * (evaluate(model, val)["accuracy"] - evaluate(out, val)["accuracy"])
    assert details["met_on_validation"]
    assert drop <= 1.0 + 1e-9
    assert details["candidates"][-1]["val_accuracy"] == pytest.approx(
        evaluate(out, val)["accuracy"])
    assert 1 <= len(details["candidates"]) <= 10


def test_compress_to_target_resumes_from_its_work_directory(small_mnist_model, tmp_path):
    """A second run over the same work directory measures no candidate again (only the chosen
    one is rebuilt) and ends with the same choice and validation accuracy."""
    model, train = small_mnist_model
    calls = []

    def fine_tune(candidate, data, index):
        calls.append(index)
        fit(candidate, optimizers.Adam(candidate.parameters(), lr=1e-4), data, 1,
            batch_size=64, seed=0, progress=False)

    kwargs = dict(max_drop_pp=0.0, sparsities=(0.0, 0.9), bits=(8, 2), max_candidates=3,
                  calibration_images=128, fine_tune=fine_tune, work=tmp_path)
    _, first = auto.compress_to_target(model, train, **kwargs)
    assert (tmp_path / "auto_table.json").is_file()
    assert len(calls) == len(first["candidates"])
    calls.clear()
    _, second = auto.compress_to_target(model, train, **kwargs)
    assert len(calls) == 1
    assert second["chosen"] == first["chosen"]
    assert second["candidates"] == first["candidates"]


def test_zero_weights_of_the_input_stay_zero_through_fine_tuning(small_mnist_model):
    """A pruned input (half of layer 1's weights zero) keeps those zeros in the candidate even
    at sparsity 0 and 8 bits after fine-tuning at a large learning rate, which would regrow
    them without a mask."""
    model, train = small_mnist_model
    pruned = copy.deepcopy(model)
    w = pruned[1].weight.data
    w[np.abs(w) < np.median(np.abs(w))] = 0

    def fine_tune(candidate, data, index):
        fit(candidate, optimizers.Adam(candidate.parameters(), lr=1e-2), data, 1,
            batch_size=64, seed=0, progress=False)

    out, _ = auto.compress_to_target(pruned, train, max_drop_pp=100.0, sparsities=(0.0,),
                                     bits=(8,), max_candidates=1, calibration_images=128,
                                     fine_tune=fine_tune)
    first = next(m for m in out.modules() if isinstance(m, nn.Linear))
    assert np.all(first.weight.data[w == 0] == 0)
    assert np.count_nonzero(first.weight.data) > 0


def test_latency_objective_removes_channels_physically(small_mnist_model, monkeypatch):
    """With a latency table in which half of layer 1's units cost less (the table is given,
    so the choice does not depend on a noisy clock) and any drop allowed, the chosen model's
    hidden Linear has 24 - round(0.5 · 24) = 12 units, physically (``shrink``), and the output
    layer keeps its 10; the drop is measured against ``reference``, whose validation accuracy
    the details report."""
    model, train = small_mnist_model
    table = {"1": {0.0: 2.0, 0.5: 1.0}, "3": {0.0: 1.0, 0.5: 2.0}}
    monkeypatch.setattr(auto, "latency_table", lambda *args, **kwargs: table)
    worse = copy.deepcopy(model)
    worse[3].weight.data = np.zeros_like(worse[3].weight.data)
    out, details = auto.compress_to_target(model, train, max_drop_pp=100.0, objective="latency",
                                           sparsities=(0.0, 0.5), bits=(8,), max_candidates=3,
                                           calibration_images=128, reference=worse)
    assert details["chosen"] == {"1": [0.5, 8], "3": [0.0, 8]}
    widths = [m.weight.shape for m in out.modules() if isinstance(m, nn.Linear)]
    assert widths == [(12, 784), (10, 12)]
    _, val_index = auto.validation_split(len(train[1]), 0.25, 0)
    val = (train[0][val_index], train[1][val_index])
    assert details["validation_accuracy"] == pytest.approx(evaluate(worse, val)["accuracy"])


def test_structured_options_keep_one_channel_per_layer(small_mnist_model):
    """Latency objective with sparsity 0.97 offered: 0.97 · C units would round to all C of a
    small layer, so every structured cut keeps one unit at least (``channel_sparsity``), and
    the output layer keeps all its 10 (they are the classes; options cutting them are not
    applicable): every candidate runs and gives 10 logits. Without sparsity 0.0 among the
    options the objective is refused."""
    assert auto.channel_sparsity(0.97, 10) == 0.9 and auto.channel_sparsity(0.5, 10) == 0.5
    model, train = small_mnist_model
    out, details = auto.compress_to_target(model, train, max_drop_pp=100.0, objective="latency",
                                           sparsities=(0.0, 0.97), bits=(8,), max_candidates=3,
                                           calibration_images=128)
    widths = [m.weight.shape for m in out.modules() if isinstance(m, nn.Linear)]
    assert widths[-1][0] == 10 and all(w[0] >= 1 for w in widths)
    assert details["chosen"]["3"][0] == 0.0  # cutting the classes is not an option
    assert all(c["options"]["3"][0] == 0.0 for c in details["candidates"])
    assert out(minnet.Tensor(train[0][:5])).shape == (5, 10)
    with pytest.raises(ValueError, match="sparsity 0.0"):
        auto.compress_to_target(model, train, max_drop_pp=1.0, objective="latency",
                                sparsities=(0.5,), bits=(8,))


def test_when_no_candidate_fits_the_best_bound_is_kept(small_mnist_model, monkeypatch):
    """Measured drops 3, 2, 1 and 2.5 pp (standard error 0, in the order the candidates are
    measured) against a 0.5 pp tolerance: none fits, so the stage keeps the third candidate
    (the smallest bound), not the last one tried, and says the target was not met."""
    model, train = small_mnist_model
    drops = iter([3.0, 2.0, 1.0, 2.5])
    monkeypatch.setattr(auto, "paired_drop", lambda reference, correct: (next(drops), 0.0))
    _, details = auto.compress_to_target(model, train, max_drop_pp=0.5,
                                         sparsities=(0.0, 0.5, 0.9), bits=(8, 4, 2),
                                         max_candidates=4, calibration_images=128)
    measured = [c["drop_pp"] for c in details["candidates"]]
    assert sorted(measured) == [1.0, 2.0, 2.5, 3.0]
    assert details["candidates"][-1]["drop_pp"] == 1.0
    assert details["chosen"] == details["candidates"][-1]["options"]
    assert details["met_on_validation"] is False


def tiny_config(text: str) -> str:
    replace = {"epochs = 20": "epochs = 1", "fine_tune_epochs = 12": "fine_tune_epochs = 1",
               "fine_tune_epochs = 6": "fine_tune_epochs = 1", "epochs = 10": "epochs = 1",
               "max_candidates = 16": "max_candidates = 2",
               "sparsities = [0.0, 0.9, 0.92, 0.95, 0.97]": "sparsities = [0.0, 0.95]",
               "bits = [8, 6, 5, 4, 3]": "bits = [8, 4]",
               "latency_repeats = 20": "latency_repeats = 1\nlimit = 300\ntest_limit = 100"}
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


def test_example_config_runs(tmp_path):
    """``python -m optim --config optim/pipeline/auto_pipeline.toml`` with a tiny budget: the
    auto stage reports its candidates and every row its energy per inference."""
    config = tmp_path / "auto.toml"
    config.write_text(tiny_config((ROOT / "optim" / "pipeline" / "auto_pipeline.toml").read_text()))
    load_config(config)  # valid
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "optim", "--config", str(config), "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    report = json.loads((out / "report.json").read_text())
    rows = {r["stage"]: r for r in report["rows"]}
    assert rows["auto"]["details"]["candidates"]
    assert all(c["size"] > 0 for c in rows["auto"]["details"]["candidates"])
    assert all(r["energy_uj"] > 0 for r in report["rows"])
    assert rows["auto"]["energy_uj"] < rows["baseline"]["energy_uj"]


def test_latency_objective_chooses_among_channel_sparsities(tmp_path):
    """With ``objective = "latency"`` the stage's options are the ``channel_sparsities`` (whole
    output channels), not the magnitude-pruning ``sparsities``."""
    text = tiny_config((ROOT / "optim" / "pipeline" / "auto_pipeline.toml").read_text())
    text = text.replace('objective = "bytes"', 'objective = "latency"')
    text = text.replace("channel_sparsities = [0.0, 0.25, 0.5, 0.75]",
                        "channel_sparsities = [0.0, 0.5]")
    config = tmp_path / "auto.toml"
    config.write_text(text)
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "optim", "--config", str(config), "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    rows = {r["stage"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    details = rows["auto"]["details"]
    assert details["objective"] == "latency"
    assert {s for s, _ in details["options"]} == {0.0, 0.5}
