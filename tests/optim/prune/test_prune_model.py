"""Pruning whole models: exact total sparsity in global and layer scope, nested masks over
rising sparsities, data-driven criteria against second implementations, channel pruning."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import functional as F
from minnet import models, nn
from optim.prune import (channel_scores, fisher_diagonal, get_mask, hessian_diagonals,
                         influence_scores, lp_norms, mean_gradients, nm_mask, obd_scores, prunable,
                         prune_channels, prune_model, prune_nm, slimming_penalty,
                         target_sparsity, weight_scores)

from prune_helpers import randomize_batch_norm


def _mlp(seed, dtype=np.float32):
    minnet.manual_seed(seed)
    return models.mlp([6, 5, 4, 3]).to(dtype)


def _data(seed, n=12):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, size=n)


@given(seed=st.integers(0, 1000), sparsities=st.lists(st.floats(0, 1), min_size=1, max_size=4),
       scope=st.sampled_from(["global", "layer"]))
def test_prune_model_reaches_the_total_sparsity_and_keeps_pruned_entries(seed, sparsities,
                                                                          scope):
    model = _mlp(seed)
    targets = prunable(model)
    previous = [np.ones(m.weight.shape, dtype=bool) for _, m, _ in targets]
    for s in sorted(sparsities):
        prune_model(model, s, "magnitude", scope=scope)
        masks = [get_mask(m, "weight") for _, m, _ in targets]
        for old, new in zip(previous, masks):
            assert not np.any(new & ~old)
        if scope == "global":
            total = sum(m.size for m in masks)
            assert sum(np.count_nonzero(~m) for m in masks) == round(s * total)
        else:
            for m in masks:
                assert np.count_nonzero(~m) == round(s * m.size)
        previous = masks
    assert target_sparsity(targets) == pytest.approx(
        sum(np.count_nonzero(~m) for m in previous) / sum(m.size for m in previous))


def test_global_magnitude_ranks_all_layers_together():
    model = _mlp(0)
    prune_model(model, 0.5)
    pruned = np.concatenate([np.abs(m.parametrizations.weight.original.data[~get_mask(m, "weight")])
                             for _, m, _ in prunable(model)])
    kept = np.concatenate([np.abs(m.weight.data[get_mask(m, "weight")])
                           for _, m, _ in prunable(model)])
    assert pruned.max() <= kept.min()


def test_mean_gradients_match_finite_differences():
    model = _mlp(1, np.float64)
    x, y = _data(1)
    targets = prunable(model)
    grads = mean_gradients(model, targets, (x.astype(np.float64), y), batch_size=5)
    layer = targets[1][1]
    eps = 1e-6
    for index in [(0, 0), (2, 3), (3, 1)]:
        def loss(delta):
            layer.weight.data[index] += delta
            value = float(F.cross_entropy(model(minnet.Tensor(x.astype(np.float64))), y).data)
            layer.weight.data[index] -= delta
            return value
        numeric = (loss(eps) - loss(-eps)) / (2 * eps)
        assert grads[1][index] == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    assert all(p.grad is None for p in model.parameters())  # grads left as found


def test_per_sample_criteria_equal_one_sample_at_a_time():
    model = _mlp(2, np.float64)
    x, y = _data(2, n=6)
    x = x.astype(np.float64)
    targets = prunable(model)
    singles = [mean_gradients(model, targets, (x[n:n + 1], y[n:n + 1])) for n in range(len(x))]
    for i, (_, module, _) in enumerate(targets):
        per_sample = np.stack([s[i] for s in singles])
        w = module.weight.data
        fisher = weight_scores(model, targets, "obd_fisher", data=(x, y))[i]
        np.testing.assert_allclose(fisher, obd_scores(w, fisher_diagonal(per_sample)), rtol=1e-10)
        influence = weight_scores(model, targets, "influence", data=(x, y))[i]
        np.testing.assert_allclose(influence, influence_scores(w, per_sample), rtol=1e-10)


def test_model_hutchinson_diagonal_is_exact_for_orthogonal_inputs_of_a_linear_mse_model():
    layer = nn.Linear(4, 3).double()
    model = nn.Sequential(layer)
    x, target = np.eye(4), np.random.default_rng(0).normal(size=(4, 3))
    # the criteria's loss is the mean over samples of each sample's summed loss:
    # L = sum (x W^T + b - t)^2 / 4, so d2L/dW_ij^2 = 2 sum_n x_nj^2 / 4 = 1/2, with no
    # off-diagonal terms between weights because the inputs are orthogonal
    (diag,) = hessian_diagonals(model, [("0", layer, "weight")], (x, target), n_samples=3,
                                rng=0, loss_fn=F.mse_loss)
    np.testing.assert_allclose(diag, np.full((3, 4), 0.5), rtol=1e-6)
    (scores,) = weight_scores(model, [("0", layer, "weight")], "obd_hutchinson", data=(x, target),
                              loss_fn=F.mse_loss, n_samples=2, rng=0)
    np.testing.assert_allclose(scores, layer.weight.data ** 2 / 4, rtol=1e-6)


@pytest.mark.parametrize("criterion", ["taylor", "snip", "obd_fisher", "obd_hutchinson",
                                       "influence"])
def test_data_driven_criteria_prune_a_trained_model_to_the_sparsity(criterion):
    model = _mlp(3)
    x, y = _data(3)
    prune_model(model, 0.6, criterion, data=(x, y), rng=0)
    assert target_sparsity(prunable(model)) == pytest.approx(0.6, abs=0.01)


def test_random_criterion_is_seeded():
    a, b, c = _mlp(4), _mlp(4), _mlp(4)
    prune_model(a, 0.5, "random", rng=1)
    prune_model(b, 0.5, "random", rng=1)
    prune_model(c, 0.5, "random", rng=2)

    def masks(model):
        return np.concatenate([get_mask(t, "weight").ravel() for _, t, _ in prunable(model)])

    np.testing.assert_array_equal(masks(a), masks(b))
    assert not np.array_equal(masks(a), masks(c))


def test_prune_channels_removes_units_and_counts_earlier_removals():
    model = _mlp(5)
    keep = prune_channels(model, 2, "l2")
    assert set(keep) == {"1", "3"}  # all Linear layers but the output layer
    for name, module in [("1", model[1]), ("3", model[3])]:
        units = get_mask(module, "weight").any(axis=1)
        np.testing.assert_array_equal(units, keep[name])
        assert np.count_nonzero(~units) == 2
        norms = lp_norms(module.parametrizations.weight.original.data, 2)
        assert norms[units].min() >= norms[~units].max()
    prune_channels(model, 0.5, "l2", layers=["1"])  # 2 of 5 removed already: one more
    assert np.count_nonzero(~get_mask(model[1], "weight").any(axis=1)) == round(0.5 * 5)


def test_channel_scores_criteria():
    minnet.manual_seed(6)
    rng = np.random.default_rng(6)
    model = models.lenet5(batch_norm=True)
    randomize_batch_norm(model, rng)
    x = rng.random((20, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=20)
    np.testing.assert_allclose(channel_scores(model, "0", "l1"), lp_norms(model[0].weight.data, 1))
    np.testing.assert_allclose(channel_scores(model, "0", "bn_scale"), np.abs(model[1].weight.data))
    model = models.lenet5()  # (random BatchNorm shifts may silence ReLU channels)
    model[0].weight.data[2] = 0.0  # channel 2 now outputs a constant
    for criterion in ("activation_variance", "activation_entropy"):
        scores = channel_scores(model, "0", criterion, data=(x, y))
        assert scores.shape == (6,) and scores[2] == pytest.approx(0.0, abs=1e-9)
        assert np.all(np.delete(scores, 2) > scores[2])
    taylor = channel_scores(model, "3", "taylor", data=(x, y))
    fpgm = channel_scores(model, "3", "fpgm")
    assert taylor.shape == fpgm.shape == (16,) and np.all(taylor >= 0)
    np.testing.assert_array_equal(channel_scores(model, "3", "random", rng=3),
                                  channel_scores(model, "3", "random", rng=3))


def test_prune_nm_keeps_two_of_every_four_inputs():
    minnet.manual_seed(8)
    model = models.mlp([8, 4, 4])
    weights = [m.weight.data.copy() for _, m, _ in prunable(model)]
    prune_nm(model, 2, 4)
    for (_, module, _), w in zip(prunable(model), weights):
        mask = get_mask(module, "weight")
        assert np.all(mask.reshape(mask.shape[0], -1, 4).sum(axis=2) == 2)
        np.testing.assert_array_equal(mask, nm_mask(np.abs(w), 2, 4, axis=1))


def test_slimming_penalty_adds_lambda_sign_gamma_to_the_gradient():
    minnet.manual_seed(9)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    model[1].weight.data[...] = [-1.0, 0.5, 0.0, 2.0]
    x, y = np.random.default_rng(9).normal(size=(6, 3)).astype(np.float32), np.arange(6) % 2

    def gamma_grad():
        model.zero_grad()
        F.cross_entropy(model(minnet.Tensor(x)), y).backward()
        return model[1].weight.grad.copy()

    plain = gamma_grad()
    handles = slimming_penalty(model, 0.1)
    np.testing.assert_allclose(gamma_grad(), plain + 0.1 * np.array([-1.0, 1.0, 0.0, 1.0]),
                               rtol=1e-6, atol=1e-7)
    for handle in handles:
        handle.remove()
    np.testing.assert_allclose(gamma_grad(), plain, rtol=1e-6)
    with pytest.raises(ValueError, match="no BatchNorm"):
        slimming_penalty(_mlp(0), 0.1)


def test_model_level_errors_name_the_problem():
    model = _mlp(7)
    with pytest.raises(ValueError, match="sparsity must lie in"):
        prune_model(model, 1.5)
    with pytest.raises(ValueError, match="criterion must be one of"):
        prune_model(model, 0.5, "largest")
    with pytest.raises(ValueError, match="criterion 'taylor' needs data"):
        prune_model(model, 0.5, "taylor")
    with pytest.raises(ValueError, match="scope must be one of"):
        prune_model(model, 0.5, scope="network")
    with pytest.raises(ValueError, match="has no parameter 'kernel'"):
        prune_model(model, 0.5, targets=[("1", model[1], "kernel")])
    with pytest.raises(ValueError, match="layer '2' is not a Linear/Conv2d"):
        prune_channels(model, 1, layers=["2"])
    with pytest.raises(ValueError, match="needs a BatchNorm right after layer '1'"):
        channel_scores(model, "1", "bn_scale")
    with pytest.raises(ValueError, match="amount=9 is greater"):
        prune_channels(model, 9, layers=["1"])
    with pytest.raises(ValueError, match="criterion must be one of"):
        channel_scores(model, "1", "l3")
