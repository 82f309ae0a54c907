"""Bayesian optimisation's bookkeeping, checked on tiny spaces: when the GP is fitted, what it
is fitted on (standardised objectives), which architectures are never proposed again, and its
documented defaults."""
import numpy as np
import pytest

from optim.nas import BayesianOptimization, Choice, SearchSpace
from optim.nas import bayesian as B


def _space(values=(0, 1, 2, 3), genes=1):
    return SearchSpace([Choice(f"g{i}", values) for i in range(genes)])


def _tell(strategy, count, value=lambda arch: float(arch["g0"])):
    for _ in range(count):
        trial = strategy.ask()
        strategy.tell(trial, value(trial.arch))


def test_documented_defaults():
    """5 random proposals first, 256 random candidates (and as many mutations), 2 restarts."""
    strategy = BayesianOptimization(_space())
    assert (strategy.n_initial, strategy.n_candidates, strategy.restarts) == (5, 256, 2)


def test_the_gp_is_fitted_from_proposal_n_initial_plus_one_on_standardised_objectives(
        monkeypatch):
    """Proposals 1..n_initial are random (no fit); the next fits the GP on
    y' = (y - mean y) / std y: for y = (0, 1, 2) that is (-1.2247, 0, 1.2247)."""
    fits = []
    real_fit = B.fit_gp

    def recording_fit(x, y, *args):
        fits.append(np.array(y))
        return real_fit(x, y, *args)

    monkeypatch.setattr(B, "fit_gp", recording_fit)
    strategy = BayesianOptimization(_space(genes=2), n_initial=3, n_candidates=8, seed=0)
    values = iter([0.0, 1.0, 2.0, 5.0])
    for _ in range(3):
        trial = strategy.ask()
        strategy.tell(trial, next(values))
    assert fits == []
    strategy.ask()
    assert len(fits) == 1
    np.testing.assert_allclose(fits[0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-12)


def test_constant_objectives_standardise_to_zeros(monkeypatch):
    """std y = 0: y' = (y - mean y) / 1 = 0, finite (no 0 / 0)."""
    fits = []
    real_fit = B.fit_gp
    monkeypatch.setattr(B, "fit_gp", lambda x, y, *a: fits.append(np.array(y)) or real_fit(x, y, *a))
    strategy = BayesianOptimization(_space(genes=2), n_initial=2, n_candidates=8, seed=0)
    _tell(strategy, 2, value=lambda arch: 3.0)
    strategy.ask()
    np.testing.assert_array_equal(fits[0], [0.0, 0.0])


def test_without_observations_proposals_stay_random(monkeypatch):
    """All initial trials failed: nothing to model, so no GP fit (not even after n_initial)."""
    monkeypatch.setattr(B, "fit_gp", lambda *a: pytest.fail("fitted without observations"))
    strategy = BayesianOptimization(_space(genes=2), n_initial=2, seed=0)
    for _ in range(2):
        strategy.tell(strategy.ask(), None)
    assert isinstance(strategy.ask().arch, dict)


def test_observed_failed_and_pending_architectures_are_not_proposed_again():
    """One gene of 4 values: 0 and 1 observed, 2 failed, so the model's only candidate is 3;
    with 3 also pending, nothing is left and the proposal falls back to a random sample."""
    strategy = BayesianOptimization(_space(), n_initial=1, n_candidates=64, seed=0)
    for value, objective in ((0, 0.0), (1, 1.0), (2, None)):
        trial = strategy.ask()
        trial.arch["g0"] = value
        strategy.tell(trial, objective)
    pending = strategy.ask()
    assert pending.arch == {"g0": 3}
    assert strategy.ask().arch["g0"] in (0, 1, 2, 3)


def test_mutations_start_from_the_five_best_observed(monkeypatch):
    """Candidates include single-gene mutations of the 5 best observed architectures only."""
    space = _space(values=tuple(range(10)), genes=2)
    parents = []
    real_mutate = space.mutate
    strategy = BayesianOptimization(space, n_initial=7, n_candidates=16, seed=0)
    _tell(strategy, 7, value=lambda arch: float(arch["g0"] + arch["g1"]))
    best = sorted(strategy.observed, key=lambda pair: pair[1])[:5]
    monkeypatch.setattr(space, "mutate", lambda arch, rng: parents.append(dict(arch))
                        or real_mutate(arch, rng))
    strategy.ask()
    assert parents and all(p in [a for a, _ in best] for p in parents)
    assert {tuple(sorted(p.items())) for p in parents} == \
        {tuple(sorted(a.items())) for a, _ in best}


def test_a_space_without_choices_left_is_not_mutated(monkeypatch):
    """Genes of one value each: no mutation candidates (mutate is never called)."""
    space = SearchSpace([Choice("a", (1,)), Choice("b", (2,))])
    monkeypatch.setattr(space, "mutate", lambda *a: pytest.fail("mutated a fixed space"))
    strategy = BayesianOptimization(space, n_initial=1, seed=0)
    _tell(strategy, 1, value=lambda arch: 0.0)
    assert strategy.ask().arch == {"a": 1, "b": 2}


def test_exploration_xi_accepts_any_non_negative_number():
    """xi = 0 (the default) and 0.5 are valid; a negative xi is refused."""
    assert BayesianOptimization(_space(), xi=0.5).xi == 0.5
    assert BayesianOptimization(_space()).xi == 0.0
    with pytest.raises(ValueError, match="xi"):
        BayesianOptimization(_space(), xi=-0.1)


def test_zero_restarts_is_allowed():
    """restarts = 0: the GP is fitted from the documented start alone."""
    assert BayesianOptimization(_space(), restarts=0).restarts == 0


def test_a_standard_deviation_that_underflows_to_zero_divides_by_one(monkeypatch):
    """y = (0, 1e-170): the squared deviations 2.5e-341 underflow, std y = 0, and the divisor
    is 1, so y' = y - mean y = (-5e-171, 5e-171) exactly."""
    fits = []
    real_fit = B.fit_gp
    monkeypatch.setattr(B, "fit_gp",
                        lambda x, y, *a: fits.append(np.array(y)) or real_fit(x, y, *a))
    strategy = BayesianOptimization(_space(genes=2), n_initial=2, n_candidates=8, seed=0)
    values = iter([0.0, 1e-170])
    _tell(strategy, 2, value=lambda arch: next(values))
    strategy.ask()
    assert np.std([0.0, 1e-170]) == 0.0
    np.testing.assert_array_equal(fits[0], [-5e-171, 5e-171])
