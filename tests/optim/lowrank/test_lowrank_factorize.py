"""Factorizing Linear layers and whole models: Eckart–Young, rank rules, in-place replacement."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minnet
from minnet import models, nn
from optim.lowrank import factorize, factorize_linear, kept_energy, singular_values


def _linear(n_in, n_out, seed, bias=True, dtype=np.float64):
    minnet.manual_seed(seed)
    return nn.Linear(n_in, n_out, bias=bias, dtype=dtype)


def _composed(seq):
    return seq[1].weight.data @ seq[0].weight.data


@given(n_in=st.integers(1, 12), n_out=st.integers(1, 12), seed=st.integers(0, 2**16),
       bias=st.booleans(), data=st.data())
def test_factorized_linear_weight_error_is_eckart_young(n_in, n_out, seed, bias, data):
    layer = _linear(n_in, n_out, seed, bias)
    s = singular_values(layer.weight.data)
    rank = data.draw(st.integers(1, len(s)))
    seq = factorize_linear(layer, rank)
    assert seq[0].weight.shape == (rank, n_in) and seq[1].weight.shape == (n_out, rank)
    assert seq[0].bias is None and (seq[1].bias is not None) == bias
    np.testing.assert_allclose(np.linalg.norm(layer.weight.data - _composed(seq)),
                               np.sqrt(np.sum(s[rank:] ** 2)), rtol=1e-7, atol=1e-9)
    x = np.random.default_rng(seed).standard_normal((3, n_in))
    expected = x @ _composed(seq).T + (layer.bias.data if bias else 0.0)
    np.testing.assert_allclose(seq(minnet.Tensor(x)).data, expected, rtol=1e-9, atol=1e-12)
    params = sum(p.size for p in seq.parameters())
    assert params == rank * (n_in + n_out) + (n_out if bias else 0)


@given(n_in=st.integers(1, 8), n_out=st.integers(1, 8), samples=st.integers(2, 12),
       seed=st.integers(0, 2**16), bias=st.booleans(), data=st.data())
def test_data_aware_linear_response_error_is_the_discarded_energy(n_in, n_out, samples, seed,
                                                                   bias, data):
    layer = _linear(n_in, n_out, seed, bias)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, n_in)) + rng.standard_normal(n_in)  # off-centre inputs
    responses = layer(minnet.Tensor(x)).data
    # singular values of the centred responses W (x_i - mean)
    s = np.linalg.svd((x - x.mean(axis=0)) @ layer.weight.data.T, compute_uv=False)
    s = s[s > 1e-9 * max(s.max(), 1e-300)]
    assume(len(s) >= 1)
    rank = data.draw(st.integers(1, len(s)))
    seq = factorize_linear(layer, rank, inputs=x)
    error = np.linalg.norm(seq(minnet.Tensor(x)).data - responses)
    np.testing.assert_allclose(error, np.sqrt(np.sum(s[rank:] ** 2)), rtol=1e-6, atol=1e-8)
    # never worse on these inputs than the plain truncated SVD with the bias kept
    if rank <= min(n_in, n_out):
        plain = factorize_linear(layer, rank)
        assert error <= np.linalg.norm(plain(minnet.Tensor(x)).data - responses) + 1e-8


def test_rank_rules_energy_and_budget():
    layer = _linear(196, 60, seed=0, dtype=np.float32)
    s = singular_values(layer.weight.data)
    by_energy = factorize_linear(layer, energy=0.9)
    r = by_energy[0].out_features
    assert kept_energy(s, r) >= 0.9 > kept_energy(s, r - 1)
    half = layer.weight.size // 2
    by_budget = factorize_linear(layer, budget=half)
    assert sum(p.size for p in by_budget.parameters()) <= half
    r = by_budget[0].out_features
    assert (r + 1) * (196 + 60) + 60 > half
    by_fraction = factorize_linear(layer, budget=0.25)
    assert sum(p.size for p in by_fraction.parameters()) <= 0.25 * (196 * 60 + 60)
    assert by_energy[0].weight.dtype == np.float32


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ValueError, "exactly one"),
    ({"rank": 2, "energy": 0.5}, ValueError, "exactly one"),
    ({"rank": 0}, ValueError, "rank"),
    ({"rank": 5}, ValueError, r"rank must be in \[1, 4\]"),
    ({"budget": 1.5}, ValueError, "budget"),
    ({"budget": "half"}, TypeError, "budget"),
    ({"budget": 3}, ValueError, "rank 1"),
])
def test_bad_rules_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        factorize_linear(_linear(6, 4, seed=0), **kwargs)


def test_factorize_replaces_layers_in_place_and_reports():
    minnet.manual_seed(0)
    model = models.lenet5()
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    before = model(minnet.Tensor(x)).data
    report = factorize(model, ["0", "7"], energy=1.0, scheme="spatial")
    assert [f.name for f in report] == ["0", "7"]
    assert isinstance(model[0], nn.Sequential) and isinstance(model[7], nn.Sequential)
    assert "0.0.weight" in model.state_dict() and "7.1.bias" in model.state_dict()
    for f in report:
        assert f.kept_energy == pytest.approx(1.0) and f.rank <= f.max_rank
    np.testing.assert_allclose(model(minnet.Tensor(x)).data, before, rtol=1e-4, atol=1e-5)


def test_calibrated_factorization_is_closer_on_the_data():
    minnet.manual_seed(0)
    model = models.lenet_300_100()
    rng = np.random.default_rng(1)
    # inputs living in a 20-dimensional subspace of the 784 pixels
    x = (rng.random((200, 20)) @ rng.random((20, 784))).astype(np.float32).reshape(200, 1, 28, 28)
    reference = model[1](minnet.Tensor(x.reshape(200, -1))).data
    errors = []
    for calibration in (None, x):
        m = models.lenet_300_100()
        m.load_state_dict(model.state_dict())
        report = factorize(m, "1", rank=10, calibration=calibration)
        assert report[0].rank == 10
        errors.append(np.linalg.norm(m[1](minnet.Tensor(x.reshape(200, -1))).data - reference))
    assert errors[1] < 0.5 * errors[0]
    # 20-dimensional inputs: 20 directions carry all of the response energy
    m = models.lenet_300_100()
    m.load_state_dict(model.state_dict())
    assert factorize(m, "1", energy=1.0, calibration=x)[0].rank <= 20


def test_factorize_rejects_unknown_names_and_other_layers():
    model = models.lenet_300_100()
    with pytest.raises(ValueError, match="no submodule named 'fc1'"):
        factorize(model, ["fc1"], rank=2)
    with pytest.raises(TypeError, match="ReLU"):
        factorize(model, ["2"], rank=2)
