"""Initialisation: PyTorch's defaults for Linear/Conv2d (kaiming_uniform_, a = sqrt(5)), the
fan and gain formulas, the distributions' bounds and moments, and reproducibility."""
import math

import numpy as np
import pytest
from scipy import stats

import helpers
import minnet
from minnet import nn
from minnet.nn import init


@pytest.fixture(autouse=True)
def seeded():
    with helpers.fixed_seed(0):
        yield


def _uniform_ks_pvalue(samples, bound):
    return stats.kstest(samples.ravel(), stats.uniform(-bound, 2 * bound).cdf).pvalue


@pytest.mark.parametrize("make, fan_in", [(lambda: nn.Linear(300, 400), 300),
                                          (lambda: nn.Conv2d(16, 64, 5), 16 * 25),
                                          (lambda: nn.Conv2d(64, 256, (3, 2), groups=4), 16 * 6)])
def test_default_init_is_uniform_within_one_over_sqrt_fan_in(make, fan_in):
    """kaiming_uniform_(a=sqrt(5)): bound = sqrt(2 / (1 + 5)) sqrt(3 / fan_in) = 1/sqrt(fan_in);
    U(-b, b) has standard deviation b/sqrt(3). The bias uses the same bound. Each layer has
    over 24,000 weights, so the 3 % tolerances exceed 5 standard errors."""
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.data.astype(np.float64)
    assert np.abs(w).max() <= bound
    assert np.abs(layer.bias.data).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.03 * bound / math.sqrt(3)
    assert abs(w.mean()) < 0.03 * bound
    assert _uniform_ks_pvalue(w, bound) > 1e-3


def test_fan_in_and_fan_out_count_the_receptive_field():
    assert init.fan_in_and_fan_out((400, 300)) == (300, 400)
    assert init.fan_in_and_fan_out((64, 16, 5, 3)) == (16 * 15, 64 * 15)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        init.fan_in_and_fan_out((5,))


@pytest.mark.parametrize("shape", [(7, 3), (64, 16, 5, 5), (8, 2, 3, 1)])
def test_fans_match_torch(shape):
    torch = pytest.importorskip("torch")
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init.fan_in_and_fan_out(shape) == expected


@pytest.mark.parametrize("nonlinearity, param", [("linear", None), ("conv2d", None),
                                                 ("sigmoid", None), ("tanh", None), ("relu", None),
                                                 ("leaky_relu", None), ("leaky_relu", 0.2),
                                                 ("leaky_relu", math.sqrt(5))])
def test_gains_match_torch(nonlinearity, param):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-12)


def test_gain_formulas():
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", 1.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'softsign'"):
        init.calculate_gain("softsign")


def _parameter(shape):
    return nn.Parameter(np.empty(shape, dtype=np.float64))


def test_kaiming_uniform_bound_and_std():
    w = init.kaiming_uniform_(_parameter((500, 200)), nonlinearity="relu").data
    bound = math.sqrt(2) * math.sqrt(3 / 200)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert _uniform_ks_pvalue(w, bound) > 1e-3


def test_kaiming_normal_std():
    w = init.kaiming_normal_(_parameter((500, 200)), nonlinearity="relu").data
    assert w.std() == pytest.approx(math.sqrt(2 / 200), rel=0.02)
    assert abs(w.mean()) < 0.01 * math.sqrt(2 / 200)


def test_xavier_uniform_bound():
    w = init.xavier_uniform_(_parameter((300, 100)), gain=2.0).data
    bound = 2.0 * math.sqrt(6 / (100 + 300))
    assert np.abs(w).max() <= bound and _uniform_ks_pvalue(w, bound) > 1e-3


def test_initialisers_write_in_place():
    p = _parameter((3, 4))
    array = p.data
    for fill, check in [(init.zeros_, lambda a: not a.any()), (init.ones_, lambda a: np.all(a == 1)),
                        (lambda t: init.uniform_(t, 2.0, 3.0), lambda a: np.all((a >= 2) & (a < 3))),
                        (lambda t: init.normal_(t, 5.0, 0.1), lambda a: abs(a.mean() - 5) < 0.5)]:
        assert fill(p) is p and p.data is array and check(array)


def test_manual_seed_makes_initialisation_reproducible():
    minnet.manual_seed(42)
    first = nn.Linear(5, 3).state_dict()
    minnet.manual_seed(42)
    second = nn.Linear(5, 3).state_dict()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(nn.Linear(5, 3).weight.data, first["weight"])
