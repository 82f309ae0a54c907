"""The pruning mask parametrization (PyTorch's parametrize keys): masked weights stay zero through optimizers,
masks survive state_dict, save/load and deepcopy, compose, and remove() makes them permanent."""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import functional as F
from minnet import nn, optimizers
from minnet.train import fit
from optim.prune import apply_mask, get_mask, is_pruned, remove, remove_all, restore_pruning

from prune_helpers import forward

OPTIMIZERS = {
    "sgd_momentum_decay": lambda p: optimizers.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    "sgd_nesterov": lambda p: optimizers.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam_decay": lambda p: optimizers.Adam(p, lr=0.05, weight_decay=0.1),
    "adamw": lambda p: optimizers.AdamW(p, lr=0.05, weight_decay=0.5),
}


def _model(seed):
    minnet.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


@given(seed=st.integers(0, 1000), name=st.sampled_from(sorted(OPTIMIZERS)),
       mask=hnp.arrays(np.bool_, (6, 4)))
def test_masked_weights_remain_zero_after_optimizer_steps(seed, name, mask):
    model = _model(seed)
    # an optimizer built before pruning keeps working: the original is the same Parameter
    optimizer = OPTIMIZERS[name](list(model.parameters()))
    apply_mask(model[0], "weight", mask)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        x = rng.normal(size=(8, 4)).astype(np.float32)
        y = rng.integers(0, 3, size=8)
        optimizer.zero_grad()
        F.cross_entropy(model(minnet.Tensor(x)), y).backward()
        assert np.all(model[0].parametrizations.weight.original.grad[~mask] == 0)  # the mask blocks the gradient
        optimizer.step()
        forward(model, x)
        assert np.all(model[0].weight.data[~mask] == 0)
        model.train()
    np.testing.assert_array_equal(model[0].weight.data,
                                  model[0].parametrizations.weight.original.data * mask)


def test_effective_weight_is_set_at_once_and_keys_follow_torch():
    layer = nn.Linear(3, 2)
    mask = np.array([[True, False, True], [False, True, True]])
    apply_mask(layer, "weight", mask)
    assert is_pruned(layer, "weight") and not is_pruned(layer, "bias")
    np.testing.assert_array_equal(layer.weight.data, layer.parametrizations.weight.original.data * mask)
    assert list(layer.state_dict()) == ["bias", "parametrizations.weight.original",
                                        "parametrizations.weight.0.mask"]
    assert layer.state_dict()["parametrizations.weight.0.mask"].dtype == np.bool_
    assert [n for n, _ in layer.named_parameters()] == ["bias", "parametrizations.weight.original"]


def test_masks_survive_state_dict_and_save_load(tmp_path):
    model = _model(0)
    mask = np.random.default_rng(1).random((6, 4)) > 0.5
    apply_mask(model[0], "weight", mask)
    minnet.save(model, tmp_path / "pruned.npz")
    state = minnet.load(tmp_path / "pruned.npz")
    x = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)

    fresh = _model(9)  # unpruned, different weights
    restore_pruning(fresh, state)
    np.testing.assert_array_equal(get_mask(fresh[0], "weight"), mask)
    np.testing.assert_array_equal(fresh[0].weight.data, model[0].weight.data)
    np.testing.assert_allclose(forward(fresh, x), forward(model, x))

    pruned_twin = _model(9)
    apply_mask(pruned_twin[0], "weight", np.ones((6, 4), dtype=bool))
    pruned_twin.load_state_dict(state)
    np.testing.assert_array_equal(get_mask(pruned_twin[0], "weight"), mask)
    np.testing.assert_allclose(forward(pruned_twin, x), forward(model, x))


def test_deepcopy_keeps_an_independent_working_mask():
    model = _model(0)
    apply_mask(model[0], "weight", np.eye(6, 4, dtype=bool))
    twin = copy.deepcopy(model)
    x = np.ones((2, 4), dtype=np.float32)
    np.testing.assert_array_equal(forward(twin, x), forward(model, x))
    apply_mask(twin[0], "weight", np.zeros((6, 4), dtype=bool))
    forward(twin, x)
    assert np.all(twin[0].weight.data == 0)
    assert np.count_nonzero(model[0].weight.data) > 0
    assert get_mask(model[0], "weight").sum() == 4


@given(a=hnp.arrays(np.bool_, (3, 5)), b=hnp.arrays(np.bool_, (3, 5)))
def test_masks_compose_by_and(a, b):
    layer = nn.Linear(5, 3)
    apply_mask(layer, "weight", a)
    apply_mask(layer, "weight", b)
    np.testing.assert_array_equal(get_mask(layer, "weight"), a & b)
    np.testing.assert_array_equal(layer.weight.data, layer.parametrizations.weight.original.data * (a & b))


def test_remove_makes_pruning_permanent_with_the_same_parameter():
    model = _model(3)
    optimizer = optimizers.SGD(list(model.parameters()), lr=0.1)
    mask = np.random.default_rng(0).random((6, 4)) > 0.3
    apply_mask(model[0], "weight", mask)
    apply_mask(model[2], "bias", np.array([True, False, True]))
    original = model[0].parametrizations.weight.original
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    before = forward(model, x)
    remove(model[0], "weight")
    assert model[0].weight is original and isinstance(model[0].weight, nn.Parameter)
    assert not is_pruned(model[0]) and "parametrizations.weight.0.mask" not in model[0].state_dict()
    np.testing.assert_array_equal(model[0].weight.data[~mask], 0)
    remove_all(model)
    assert not any(is_pruned(m) for m in model.modules())
    np.testing.assert_array_equal(forward(model, x), before)
    assert optimizer.param_groups[0]["params"][0] is original


def test_fit_trains_a_pruned_model_and_keeps_its_mask():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = _model(0)
    mask = rng.random((6, 4)) > 0.5
    apply_mask(model[0], "weight", mask)
    history = fit(model, optimizers.Adam(model.parameters(), lr=0.05), (x, y), 5, batch_size=16,
                  progress=False)
    assert history["train_loss"][-1] < history["train_loss"][0]
    forward(model, x)
    np.testing.assert_array_equal(model[0].weight.data[~mask], 0)


def test_parametrization_errors_name_the_problem():
    layer = nn.Linear(3, 2, bias=False)
    with pytest.raises(ValueError, match="has no parameter 'bias'"):
        apply_mask(layer, "bias", np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match=r"mask has shape \(3, 2\), expected \(2, 3\)"):
        apply_mask(layer, "weight", np.ones((3, 2), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        apply_mask(layer, "weight", np.full((2, 3), 0.5))
    with pytest.raises(TypeError, match="minnet Module"):
        apply_mask(object(), "weight", np.ones((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="is not pruned"):
        remove(layer, "weight")
