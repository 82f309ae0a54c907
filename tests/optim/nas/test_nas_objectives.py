"""Objectives on the bundled MNIST: the validation split, reproducible trials, the resource."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet.data import load_mnist
from minnet.train import evaluate
from optim.nas import SuccessiveHalving, Trial, cnn_space, search
from optim.nas.build import build_cnn, cnn_cost
from optim.nas import objectives as objectives_module
from optim.nas.objectives import MnistObjectives, measure, mnist_splits, stratified_split

LIMIT = 160


@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.floats(0.05, 0.95), st.integers(0, 99))
def test_stratified_split_partitions_each_class(labels, fraction, seed):
    y = np.array(labels)
    train, val = stratified_split(y, fraction, seed)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(y)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    for label in np.unique(y):
        assert np.sum(y[val] == label) == round(fraction * np.sum(y == label))
    again = stratified_split(y, fraction, seed)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True, "0.2"])
def test_stratified_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(np.zeros(10, dtype=np.int64), fraction)


def test_validation_split_is_carved_from_the_training_images():
    splits = mnist_splits()
    x, y = load_mnist("train")
    assert len(splits["train"][1]) == 3200 and len(splits["val"][1]) == 800
    assert np.array_equal(np.bincount(splits["val"][1]), np.full(10, 80))
    rows = {row.tobytes() for row in x.reshape(len(x), -1)}
    for part in ("train", "val"):
        assert all(row.tobytes() in rows for row in splits[part][0].reshape(len(splits[part][0]), -1))
    train_rows = {row.tobytes() for row in splits["train"][0].reshape(3200, -1)}
    assert not any(row.tobytes() in train_rows for row in splits["val"][0].reshape(800, -1))


def small_arch(seed=0):
    return cnn_space(channels=(4, 8), kernel_sizes=(3, 5), max_blocks=2).sample(np.random.default_rng(seed))


def test_objectives_are_reproducible_and_match_metrics():
    objectives = MnistObjectives(build_cnn, ("error", "params", "macs", "latency"), epochs=1, limit=LIMIT)
    arch = small_arch()
    first, second = objectives(Trial(0, arch)), objectives(Trial(7, arch))
    assert first[:3] == second[:3]  # latency is a measurement
    error, params, macs, latency = first
    model = objectives.trained(arch)
    assert error == 1 - evaluate(model, objectives.data()["val"])["accuracy"]
    assert 0 <= error <= 1 and latency > 0
    assert (params, macs) == tuple(cnn_cost(arch))


def test_resource_sets_the_epochs():
    objectives = MnistObjectives(build_cnn, ("error",), epochs=1, limit=LIMIT)
    arch = small_arch(1)
    two_epochs = measure(objectives.trained(arch, epochs=2), objectives.data()["val"], ("error",))
    assert objectives(Trial(0, arch, resource=2)) == [two_epochs["error"]]
    assert objectives(Trial(0, arch, resource=2.0)) == [two_epochs["error"]]
    with pytest.raises(ValueError, match="resource"):
        objectives(Trial(0, arch, resource=1.5))


def test_training_does_not_depend_on_the_global_seed():
    objectives = MnistObjectives(build_cnn, ("error",), epochs=1, limit=LIMIT)
    arch = small_arch(2)
    minnet.manual_seed(123)
    first = objectives(Trial(0, arch))
    minnet.manual_seed(456)
    assert objectives(Trial(0, arch)) == first


@pytest.mark.parametrize("kwargs, match", [
    ({"objectives": ()}, "objectives"), ({"objectives": ("error", "accuracy")}, "objectives"),
    ({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr"), ({"limit": 0}, "limit"),
    ({"val_fraction": 1.0}, "fraction"), ({"seed": -1}, "seed")])
def test_objectives_reject_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MnistObjectives(**kwargs)


def test_measure_rejects_unknown_objectives():
    with pytest.raises(ValueError, match="unknown objective"):
        measure(build_cnn(small_arch()), mnist_splits(limit=LIMIT)["val"], ("accuracy",))


def test_successive_halving_spends_epochs_on_the_best_half():
    space = cnn_space(max_blocks=2, channels=(2, 4), kernel_sizes=(3, 5), fc_widths=(0, 16))
    objectives = MnistObjectives(build_cnn, ("error",), epochs=1, limit=LIMIT)
    history = search(space, SuccessiveHalving(space, n_configs=4, min_resource=1, max_resource=2, eta=2,
                                              seed=3), objectives, budget=6)
    first, second = history.records[:4], history.records[4:]
    assert [r.resource for r in history.records] == [1] * 4 + [2] * 2
    ranked = sorted(first, key=lambda r: (r.objectives[0], r.id))
    assert [r.arch for r in second] == [r.arch for r in ranked[:2]]
    assert all(r.objectives == objectives(Trial(0, r.arch, resource=2)) for r in second)


def test_objectives_load_the_requested_mnist_subset(monkeypatch):
    """``subset`` and ``root`` reach ``load_mnist``: the splits are carved from its images."""
    calls = []
    x = np.random.default_rng(0).random((60, 1, 28, 28)).astype(np.float32)
    y = np.repeat(np.arange(10), 6)

    def fake_load(split, subset="5k", root=None):
        calls.append((split, subset, root))
        return x, y

    monkeypatch.setattr(objectives_module, "load_mnist", fake_load)
    mnist_splits.cache_clear()
    try:
        objectives = MnistObjectives(build_cnn, ("error",), subset="full", root="mnist-cache")
        splits = objectives.data()
    finally:
        mnist_splits.cache_clear()
    assert calls == [("train", "full", "mnist-cache")]
    assert len(splits["train"][1]) + len(splits["val"][1]) == 60
    assert np.array_equal(np.sort(np.concatenate([splits["train"][1], splits["val"][1]])), y)
