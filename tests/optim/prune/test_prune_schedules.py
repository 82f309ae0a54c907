"""Schedules: AGP's cubic curve, geometric rounds, iterative prune + fine-tune with checkpoint
and resume, lottery-ticket rewinding."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import models, optimizers
from minnet.train import fit
from optim.prune import (agp_sparsity, geometric_sparsities, get_mask, lottery_ticket, prunable,
                         prune_model, prune_rounds, rewind, target_sparsity)

fractions = st.floats(0.0, 1.0)


@given(s_i=fractions, s_f=fractions, begin=st.integers(0, 50), length=st.integers(1, 60),
       frequency=st.integers(1, 7))
def test_agp_hits_its_ends_and_is_monotone(s_i, s_f, begin, length, frequency):
    end = begin + length
    steps = range(begin - 3, end + 4)
    values = [agp_sparsity(t, s_i, s_f, begin, end, frequency) for t in steps]
    assert agp_sparsity(begin, s_i, s_f, begin, end, frequency) == s_i
    assert agp_sparsity(end, s_i, s_f, begin, end, frequency) == s_f
    assert values[0] == s_i and values[-1] == s_f
    diffs = np.diff(values) * np.sign(s_f - s_i)
    assert np.all(diffs >= -1e-12)  # monotone towards s_f
    # the value only changes on update steps t0 + k dt (and at the end)
    for t, a, b in zip(steps[1:], values[:-1], values[1:]):
        if a != b:
            assert (t - begin) % frequency == 0 or t == end


@given(s_f=st.floats(0.01, 1.0), n=st.integers(2, 40))
def test_agp_prunes_fast_first_then_slowly(s_f, n):
    # with frequency 1 the increments s(t+1) - s(t) never grow (the cubic is concave)
    values = [agp_sparsity(t, 0.0, s_f, 0, n) for t in range(n + 1)]
    increments = np.diff(values)
    assert np.all(np.diff(increments) <= 1e-12)
    assert increments[0] > 0


@given(rate=st.floats(0.0, 1.0), rounds=st.integers(1, 10))
def test_geometric_sparsities(rate, rounds):
    remaining = 1 - np.array([0.0] + geometric_sparsities(rate, rounds))
    np.testing.assert_allclose(remaining[1:], remaining[:-1] * (1 - rate), atol=1e-12)


def _problem(n=128):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 4, 4)).astype(np.float32)
    y = (x.reshape(n, -1)[:, :3].sum(axis=1) > 0).astype(np.int64) + (x[:, 0, 0, 0] > 1)
    return x, y


def _fresh():
    minnet.manual_seed(0)
    return models.mlp([16, 12, 8, 3])


def _fine_tune(data):
    def run(model, k):
        fit(model, optimizers.Adam(model.parameters(), lr=1e-2), data, 1, batch_size=32, seed=k,
            progress=False)
    return run


def test_iterative_rounds_reach_each_sparsity_and_record_metrics():
    model = _fresh()
    calls = []
    history = prune_rounds(model, [0.5, 0.75, 0.9], lambda m, k: calls.append(k),
                           evaluate=lambda m: 42.0)
    assert calls == [0, 1, 2] and history["metric"] == [42.0] * 3
    np.testing.assert_allclose(history["sparsity"], [0.5, 0.75, 0.9], atol=1e-3)
    assert target_sparsity(prunable(model)) == pytest.approx(0.9, abs=1e-3)


def test_resumed_rounds_equal_an_uninterrupted_run(tmp_path):
    data = _problem()
    sparsities = [0.3, 0.6, 0.8]
    straight = _fresh()
    prune_rounds(straight, sparsities, _fine_tune(data), criterion="taylor", data=data)

    path = tmp_path / "rounds.npz"
    interrupted = _fresh()
    prune_rounds(interrupted, sparsities[:2], _fine_tune(data), criterion="taylor", data=data,
                 checkpoint_path=path)
    resumed = _fresh()  # a new process: fresh, unpruned weights
    history = prune_rounds(resumed, sparsities, _fine_tune(data), criterion="taylor", data=data,
                           checkpoint_path=path, resume=True)
    assert len(history["sparsity"]) == 3
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_lottery_ticket_rewinds_surviving_weights_to_the_initial_ones():
    data = _problem()
    model = _fresh()
    initial = {k: v.copy() for k, v in model.state_dict().items()}
    history = lottery_ticket(model, geometric_sparsities(0.5, 2), _fine_tune(data),
                             evaluate=lambda m: 1.0)
    assert history["metric"] == [1.0, 1.0]
    assert target_sparsity(prunable(model)) == pytest.approx(0.75, abs=1e-3)
    for name, module, _ in prunable(model):
        mask = get_mask(module, "weight")
        np.testing.assert_array_equal(module.weight.data, initial[f"{name}.weight"] * mask)
        np.testing.assert_array_equal(module.bias.data, initial[f"{name}.bias"])


def test_rewinding_to_early_weights_and_keeping_masks():
    data = _problem()
    model = _fresh()
    _fine_tune(data)(model, 0)
    early = {k: v.copy() for k, v in model.state_dict().items()}
    _fine_tune(data)(model, 1)
    prune_model(model, 0.5)
    masks = [get_mask(m, "weight").copy() for _, m, _ in prunable(model)]
    rewind(model, early)
    for (name, module, _), mask in zip(prunable(model), masks):
        np.testing.assert_array_equal(get_mask(module, "weight"), mask)
        np.testing.assert_array_equal(module.weight.data, early[f"{name}.weight"] * mask)
    with pytest.raises(ValueError, match="state has key 'extra'"):
        rewind(model, {"extra": np.zeros(1)})


def test_schedule_errors():
    with pytest.raises(ValueError, match="end_step must be > begin_step"):
        agp_sparsity(0, 0.0, 0.9, 5, 5)
    with pytest.raises(ValueError, match="final_sparsity must lie in"):
        agp_sparsity(0, 0.0, 1.5, 0, 5)
    with pytest.raises(ValueError, match="sparsities must not be empty"):
        prune_rounds(_fresh(), [])
    with pytest.raises(ValueError, match="resume=True needs a checkpoint_path"):
        prune_rounds(_fresh(), [0.5], resume=True)
