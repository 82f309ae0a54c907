"""Saliency scores at their edges, worked by hand: the Fisher diagonal's weights, Hutchinson's
default sample count, SNIP without any signal, entropy bins, and each function's refusals."""
import numpy as np
import pytest

from optim.prune.scores import (activation_entropy, finite_difference_hvp, fisher_diagonal,
                                fpgm_scores, hutchinson_diagonal, influence_scores,
                                magnitude_scores,
                                slimming_penalty_grad, snip_scores, taylor_feature_map_scores)


def test_magnitude_scores_are_absolute_values():
    np.testing.assert_array_equal(magnitude_scores(np.array([-2.0, 1.0, 0.0])), [2.0, 1.0, 0.0])


def test_fisher_diagonal_of_scalar_samples_and_weights():
    """g = (1, 3) as two scalar samples: F = mean g^2 = 5; weights (0, 1) keep the second
    sample only (a zero weight is allowed): 9; weights (0.5, 0.25), sum below 1: (0.5 + 2.25)
    / 0.75."""
    g = np.array([1.0, 3.0])
    assert fisher_diagonal(g) == 5.0
    assert fisher_diagonal(g, np.array([0.0, 1.0])) == 9.0
    assert fisher_diagonal(g, np.array([0.5, 0.25])) == pytest.approx(2.75 / 0.75)


@pytest.mark.parametrize("grads, weights, message", [
    (np.array(1.0), None, "shape \\(N, ...\\) with N >= 1"),
    (np.zeros((0, 2)), None, "shape \\(N, ...\\) with N >= 1"),
    (np.ones((2, 2)), np.ones(3), "2 non-negative values"),
    (np.ones((2, 2)), np.array([1.0, -0.5]), "2 non-negative values"),
    (np.ones((2, 2)), np.zeros(2), "positive sum")])
def test_fisher_diagonal_refuses(grads, weights, message):
    with pytest.raises(ValueError, match=message):
        fisher_diagonal(grads, weights)


def test_hutchinson_draws_100_probes_by_default():
    calls = []

    def hvp(z):
        calls.append(z)
        return 2 * z

    np.testing.assert_allclose(hutchinson_diagonal(hvp, (3,), rng=0), [2.0, 2.0, 2.0])
    assert len(calls) == 100


def test_finite_difference_hvp_refuses_a_zero_step():
    with pytest.raises(ValueError, match="eps must be positive"):
        finite_difference_hvp(lambda w: w, np.ones(2), np.ones(2), eps=0.0)


def test_snip_without_any_signal_is_zero_and_refuses_mismatched_lists():
    """All gradients 0: the raw scores sum to 0 and are returned as they are (no 0 / 0)."""
    scores = snip_scores([np.ones(2), np.ones(3)], [np.zeros(2), np.zeros(3)])
    assert all(np.array_equal(s, np.zeros_like(s)) for s in scores)
    for weights, grads in [([np.ones(2)], [np.ones(2), np.ones(2)]), ([], []),
                           (np.ones((2, 2)), np.ones((2, 2)))]:
        with pytest.raises(ValueError, match="non-empty lists of equal length"):
            snip_scores(weights, grads)


def test_influence_of_a_single_sample():
    """One sample: the mean over samples of |g_n w| is that sample's |g w|."""
    w = np.array([2.0, -1.0])
    np.testing.assert_allclose(influence_scores(w, np.array([[0.5, 3.0]])), [1.0, 3.0])


def test_activation_entropy_uses_100_bins_and_counts_singletons():
    """200 evenly spaced pooled values in 100 bins: two per bin, H = log 100 (101 bins would
    not split them evenly). Two values: each alone in a bin, H = log 2."""
    a = np.linspace(0.0, 1.0, 200)[:, None, None]
    assert activation_entropy(a)[0] == pytest.approx(np.log(100))
    assert activation_entropy(np.array([[0.0], [1.0]]))[0] == pytest.approx(np.log(2))


@pytest.mark.parametrize("shape", [(3,), (0, 2)])
def test_feature_map_scores_need_a_batch_and_channels(shape):
    with pytest.raises(ValueError, match="N >= 1"):
        taylor_feature_map_scores(np.ones(shape), np.ones(shape))


def test_slimming_penalty_may_be_zero():
    np.testing.assert_array_equal(slimming_penalty_grad(np.array([1.0, -2.0]), 0.0), [0.0, 0.0])


def test_fpgm_of_scalar_filters_is_the_summed_distance():
    """Filters 0, 0.1, 0.3 (one weight each): Σ_j |w_i - w_j| = 0.4, 0.3, 0.5; a 0-d weight has
    no filters."""
    np.testing.assert_allclose(fpgm_scores(np.array([0.0, 0.1, 0.3])), [0.4, 0.3, 0.5])
    with pytest.raises(ValueError, match="at least one dimension"):
        fpgm_scores(np.array(1.0))


def test_taylor_feature_maps_without_any_signal_stay_zero():
    """All activations 0: every θ_k is 0 and the ℓ2 normalisation leaves them 0 (no 0 / 0)."""
    scores = taylor_feature_map_scores(np.zeros((2, 3, 4)), np.ones((2, 3, 4)))
    np.testing.assert_array_equal(scores, [0.0, 0.0, 0.0])
