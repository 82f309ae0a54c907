"""Schedules against hand-worked values and exact replays: AGP with a start step and an update
period (Zhu & Gupta 2017, eq. 1), rewinding returning its model, a resumed lottery-ticket run
equal to an uninterrupted one, and the default seed being 0."""
import numpy as np
import pytest

import minnet
from minnet import models, optimizers
from minnet.train import fit
from optim.prune import (agp_sparsity, get_mask, lottery_ticket, prunable, prune_rounds, rewind)


def test_agp_by_hand_with_a_start_step_and_a_period():
    """s_i = 0, s_f = 0.8, t0 = 2, end 12 (n Δt = 10). Every step: at t = 7,
    0.8 − 0.8 (1 − 5/10)^3 = 0.7. Every third step: t = 7 uses the last update t = 5,
    0.8 − 0.8 (1 − 3/10)^3 = 0.5256 (with a square instead of the cube: 0.408)."""
    assert agp_sparsity(7, 0.0, 0.8, 2, 12) == pytest.approx(0.7, abs=1e-12)
    assert agp_sparsity(7, 0.0, 0.8, 2, 12, frequency=3) == pytest.approx(0.5256, abs=1e-12)
    assert agp_sparsity(4, 0.2, 0.8, 2, 12, frequency=3) == 0.2  # before the first update


def _problem(n=96):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    return x, (x[:, :3].sum(axis=1) > 0).astype(np.int64)


def _fresh():
    minnet.manual_seed(0)
    return models.mlp([16, 12, 8, 2])


def _train(data):
    def run(model, k):
        fit(model, optimizers.Adam(model.parameters(), lr=1e-2), data, 1, batch_size=32,
            seed=k, progress=False)
    return run


def _state(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_rewind_returns_its_model():
    model = _fresh()
    assert rewind(model, _state(model)) is model


def test_a_resumed_lottery_ticket_run_equals_an_uninterrupted_one(tmp_path):
    """Two rounds straight, against one round checkpointed and then resumed in a fresh model:
    the same masks, weights (rewound to the saved initial state) and history."""
    data, sparsities = _problem(), [0.5, 0.75]
    straight = _fresh()
    expected = lottery_ticket(straight, sparsities, _train(data), evaluate=lambda m: 1.0)
    path = tmp_path / "ticket.npz"
    first = _fresh()
    lottery_ticket(first, sparsities[:1], _train(data), evaluate=lambda m: 1.0,
                   checkpoint_path=path)
    minnet.manual_seed(7)  # a new process: other initial weights, restored from the file
    resumed = models.mlp([16, 12, 8, 2])
    history = lottery_ticket(resumed, sparsities, _train(data), evaluate=lambda m: 1.0,
                             checkpoint_path=path, resume=True)
    assert history == expected
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("run", ["rounds", "ticket"])
def test_the_default_seed_is_zero(run):
    """Random saliencies draw from (seed, round): leaving ``seed`` out prunes as seed=0."""
    data = _problem()
    masks = []
    for seed in ({}, {"seed": 0}, {"seed": 1}):
        model = _fresh()
        if run == "rounds":
            prune_rounds(model, [0.5], criterion="random", **seed)
        else:
            lottery_ticket(model, [0.5], lambda m, k: None, criterion="random", **seed)
        masks.append([get_mask(m, "weight").copy() for _, m, _ in prunable(model)])
    assert all(np.array_equal(a, b) for a, b in zip(masks[0], masks[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(masks[0], masks[2]))
