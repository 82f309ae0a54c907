"""SVD helpers at their edges, worked by hand: exact reconstructions, numerical rank of
the whitening inputs, energy and budget ranks at exact partial sums, and each bad input."""
import numpy as np
import pytest

from optim.lowrank.svd import budget_rank, decompose, energy_rank, kept_energy


def _wide():
    return np.random.default_rng(0).normal(size=(3, 4))


def test_decompose_is_the_thin_svd():
    """W (3, 4): U (3, 3), sigma (3,), Vt (3, 4) with U diag(sigma) Vt = W."""
    w = _wide()
    u, s, vt = decompose(w)
    assert (u.shape, s.shape, vt.shape) == ((3, 3), (3,), (3, 4))
    np.testing.assert_allclose(u @ np.diag(s) @ vt, w, atol=1e-12)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 100.0])
def test_whitened_decompose_keeps_the_inputs_numerical_rank(scale):
    """Inputs whose 4th column repeats the 1st have rank 3 at any scale: the whitened factors
    have 3 directions, and U diag(sigma) Vt = W Q Qᵀ, the part of W the inputs can see
    (x Wᵀ is reproduced exactly)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4)) * scale
    x[:, 3] = x[:, 0]
    w = _wide()
    u, s, vt = decompose(w, x)
    assert vt.shape == (3, 4)
    np.testing.assert_allclose(x @ (u @ np.diag(s) @ vt).T, x @ w.T, rtol=1e-8,
                               atol=1e-10 * scale)
    full = rng.normal(size=(50, 4)) * scale  # full rank: all 4 directions, W itself
    u, s, vt = decompose(w, full)
    np.testing.assert_allclose(u @ np.diag(s) @ vt, w, atol=1e-9)


def test_kept_energy_of_a_zero_matrix_is_one():
    assert kept_energy(np.zeros(3), 1) == 1.0


def test_energy_rank_at_exact_partial_sums():
    """sigma = (1/2, 1/2, 1/2, 1/2): squares 1/4 each, total exactly 1. Energy 0.5 is reached
    exactly at rank 2 (the 1e-12 slack keeps it there), 0.6 needs rank 3, 1.0 all four; a
    zero spectrum has rank 1."""
    s = np.full(4, 0.5)
    assert [energy_rank(s, e) for e in (0.5, 0.6, 1.0)] == [2, 3, 4]
    assert energy_rank(np.zeros(3), 0.9) == 1


@pytest.mark.parametrize("kwargs", [
    {"params_per_rank": True}, {"fixed_params": 2.5}, {"fixed_params": -1},
    {"params_per_rank": 0}, {"max_rank": 0},
])
def test_budget_rank_refuses_each_bad_argument_alone(kwargs):
    """A bool, a fraction or a negative count is refused even where the rest would fit."""
    args = {"params_per_rank": 7, "fixed_params": 3, "budget": 100, "max_rank": 5, **kwargs}
    with pytest.raises(ValueError):
        budget_rank(**args)


def test_budget_rank_by_hand():
    """(100 - 3) // 7 = 13, capped at max_rank 5; with max_rank 20: 13."""
    assert budget_rank(7, 3, 100, 5) == 5 and budget_rank(7, 3, 100, 20) == 13
