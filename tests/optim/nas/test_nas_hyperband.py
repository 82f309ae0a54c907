"""Successive halving and Hyperband: the bracket schedule of Li et al. (2018) and promotions."""
import math

import numpy as np
import pytest
from nas_problems import discrete_space, distance_to_target

from optim.nas import Hyperband, SuccessiveHalving, hyperband_brackets, search, successive_halving_rungs


def multi_fidelity_loss(trial):
    """The architecture's distance to the target plus a bias that shrinks with the resource:
    rankings agree across resources, so promotions can be checked against the full loss."""
    return distance_to_target(trial) + 1.0 / trial.resource


def test_hyperband_brackets_match_li_et_al_table_1():
    # Li et al. (2018), Table 1: R = 81, eta = 3; (n_i, r_i) per bracket s = 4..0
    assert hyperband_brackets(81, 3) == [
        [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        [(34, 3), (11, 9), (3, 27), (1, 81)],
        [(15, 9), (5, 27), (1, 81)],
        [(8, 27), (2, 81)],
        [(5, 81)]]


@pytest.mark.parametrize("n, max_resource, eta, s", [(27, 27, 3, 3), (10, 16, 2, 4), (7, 100, 4, 3)])
def test_successive_halving_rungs_recurrence(n, max_resource, eta, s):
    rungs = successive_halving_rungs(n, max_resource, eta, s)
    assert rungs[0][0] == n and len(rungs) <= s + 1
    for (n_i, r_i), (n_next, r_next) in zip(rungs, rungs[1:]):
        assert n_next == n_i // eta and r_next == pytest.approx(r_i * eta)
    if len(rungs) == s + 1:
        assert rungs[-1][1] == pytest.approx(max_resource)


def test_hyperband_resources_can_be_fractional():
    brackets = hyperband_brackets(10, 3)  # s_max = 2: resources 10/9, 10/3, 10
    assert [r for _, r in brackets[0]] == pytest.approx([10 / 9, 10 / 3, 10])
    assert brackets[0][-1][1] == 10 and isinstance(brackets[0][-1][1], int)


def test_successive_halving_promotes_the_best():
    space = discrete_space()
    strategy = SuccessiveHalving(space, n_configs=9, min_resource=1, max_resource=9, eta=3, seed=0)
    history = search(space, strategy, multi_fidelity_loss, budget=9 + 3 + 1, batch_size=1)
    records = history.records
    assert [r.resource for r in records] == [1] * 9 + [3] * 3 + [9]
    first, second, third = records[:9], records[9:12], records[12:]
    best3 = sorted(first, key=lambda r: (r.objectives[0], r.id))[:3]
    assert [r.arch for r in second] == [r.arch for r in best3]
    assert third[0].arch == min(second, key=lambda r: r.objectives[0]).arch


def test_failed_trials_are_never_promoted():
    space = discrete_space()

    def fails_on_low_g0(trial):
        return math.nan if trial.arch["g0"] < 3 else multi_fidelity_loss(trial)

    strategy = SuccessiveHalving(space, n_configs=9, min_resource=1, max_resource=3, eta=3, seed=4)
    history = search(space, strategy, fails_on_low_g0, budget=9 + 3, batch_size=1)
    first = history.records[:9]
    ok = [r.arch for r in first if r.status == "ok"]
    failed = [r.arch for r in first if r.status == "failed"]
    promoted = [r.arch for r in history.records if r.resource == 3]
    assert failed and ok  # both cases occur with this seed
    assert len(promoted) == min(3, len(ok)) and all(arch in ok for arch in promoted)


def test_hyperband_runs_its_brackets_in_order():
    space = discrete_space()
    brackets = hyperband_brackets(9, 3)
    schedule = [r for bracket in brackets for n, r in bracket for _ in range(n)]
    strategy = Hyperband(space, min_resource=1, max_resource=9, eta=3, seed=1)
    history = search(space, strategy, multi_fidelity_loss, budget=len(schedule) + 3, batch_size=1)
    resources = [r.resource for r in history.records]
    assert resources[:len(schedule)] == schedule
    assert resources[len(schedule):] == [1, 1, 1]  # the cycle starts again


def test_a_waiting_bracket_lets_the_next_one_start():
    space = discrete_space()
    strategy = SuccessiveHalving(space, n_configs=9, min_resource=1, max_resource=9, eta=3, seed=2)
    trials = [strategy.ask() for _ in range(12)]
    assert [t.resource for t in trials] == [1] * 12  # 9 of bracket 1, 3 of bracket 2
    for trial in trials[:9]:
        strategy.tell(trial, multi_fidelity_loss(trial))
    assert strategy.ask().resource == 3  # bracket 1 promoted; bracket 2 still waits


@pytest.mark.parametrize("make, match", [
    (lambda s: Hyperband(s, eta=1), "eta"),
    (lambda s: Hyperband(s, min_resource=10, max_resource=5), "min_resource"),
    (lambda s: Hyperband(s, max_resource=np.inf), "max_resource"),
    (lambda s: Hyperband(s, min_resource=0), "min_resource"),
    (lambda s: SuccessiveHalving(s, n_configs=0), "n")])
def test_bad_multi_fidelity_arguments_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make(discrete_space())
