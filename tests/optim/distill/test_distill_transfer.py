"""Knowledge transfer: freezing by name and loading a partial state_dict with a report."""
import numpy as np
import pytest

import minnet
from minnet import functional as F
from minnet import models, optimizers
from optim.distill import freeze, load_partial_state_dict, unfreeze


def _lenet(num_classes=10, batch_norm=False, seed=0):
    minnet.manual_seed(seed)
    return models.lenet5(num_classes, batch_norm=batch_norm)


@pytest.mark.parametrize("make_optimizer", [lambda p: optimizers.SGD(p, lr=0.1, momentum=0.9),
                                            lambda p: optimizers.Adam(p, lr=1e-2),
                                            lambda p: optimizers.AdamW(p, lr=1e-2)])
def test_frozen_parameters_do_not_move(make_optimizer):
    model = _lenet()
    frozen = freeze(model, ["0", "3"])
    assert frozen == ["0.weight", "0.bias", "3.weight", "3.bias"]  # "0" does not select "10.*"
    before = model.state_dict()
    optimizer = make_optimizer(model.parameters())
    rng = np.random.default_rng(0)
    for _ in range(2):
        x = rng.random((4, 1, 28, 28), dtype=np.float32)
        loss = F.cross_entropy(model(minnet.Tensor(x)), rng.integers(0, 10, 4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    params = dict(model.named_parameters())
    for name in before:
        if name in frozen:
            np.testing.assert_array_equal(after[name], before[name])
            assert params[name].grad is None
        else:
            assert not np.array_equal(after[name], before[name]), name
    assert unfreeze(model, "0") == ["0.weight", "0.bias"]
    assert params["0.weight"].requires_grad and not params["3.weight"].requires_grad
    assert len(freeze(model)) == len(params) and not any(p.requires_grad for p in params.values())


def test_freeze_rejects_prefixes_that_select_nothing():
    with pytest.raises(ValueError, match="prefix '1' selects none"):
        freeze(_lenet(), ["0", "1"])  # module 1 is a ReLU, it has no parameters
    with pytest.raises(TypeError, match="strings"):
        freeze(_lenet(), [0])


def test_partial_load_report_partitions_the_keys():
    source = _lenet(10, seed=1)
    target = _lenet(5, batch_norm=True, seed=2)  # other head, extra BatchNorm layers
    own_before = target.state_dict()
    state = source.state_dict()
    report = load_partial_state_dict(target, state, exclude=["0.bias"])
    shared = [k for k in state if k in own_before]
    assert sorted(report.loaded + report.excluded + report.shape_mismatch) == sorted(shared)
    parts = set(report.loaded) | set(report.excluded) | set(report.shape_mismatch)
    assert len(parts) == len(shared)
    assert report.excluded == ["0.bias"] and report.loaded == ["0.weight"]
    assert set(report.missing) == set(own_before) - set(state)
    assert set(report.unexpected) == set(state) - set(own_before)
    after = target.state_dict()
    for key in own_before:
        expected = state[key] if key in report.loaded else own_before[key]
        np.testing.assert_array_equal(after[key], expected)
    for key in report.shape_mismatch:
        assert np.shape(state[key]) != own_before[key].shape
    # batch norm shifts the layer indices: 9 and 11 name other Linears, 3 and 7 are pools
    assert report.shape_mismatch == ["9.weight", "9.bias", "11.weight", "11.bias"]
    assert report.unexpected == ["3.weight", "3.bias", "7.weight", "7.bias"]


def test_partial_load_of_a_new_head():
    source, target = _lenet(10, seed=1), _lenet(5, seed=2)
    report = load_partial_state_dict(target, source.state_dict())
    assert report.shape_mismatch == ["11.weight", "11.bias"]
    assert report.missing == [] and report.unexpected == [] and report.excluded == []
    assert len(report.loaded) == len(source.state_dict()) - 2
    with pytest.raises(ValueError, match="prefix 'head' selects none"):
        load_partial_state_dict(target, source.state_dict(), exclude="head")
    with pytest.raises(TypeError, match="state_dict"):
        load_partial_state_dict(target, [("0.weight", np.zeros(1))])
