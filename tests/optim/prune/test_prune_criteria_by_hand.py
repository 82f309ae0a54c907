"""Model-level criteria at their edges: the data check, the norms and seeds of the
weight-only channel criteria, the entropy's default bins, the output a unit is observed at,
and the default probe count and step of the Hessian diagonal."""
import numpy as np
import pytest

import minnet
from minnet import nn
from optim.prune import criteria as C
from optim.prune import scores as S
from optim.prune.masks import lp_norms


def _mlp():
    minnet.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))


def _data(n=6):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), np.arange(n) % 2


@pytest.mark.parametrize("data", [None, _data()[0], (np.ones((2, 4)), np.zeros(3)),
                                  (np.ones((0, 4)), np.zeros(0)), (1, 2, 3)])
def test_data_driven_criteria_refuse_bad_data(data):
    with pytest.raises(ValueError, match="data"):
        C.channel_scores(_mlp(), "0", "taylor", data=data)


def test_weight_only_channel_criteria():
    """l2 is the row norm with p = 2 (l1 with p = 1); random draws the seeded uniform scores,
    one per unit."""
    model = _mlp()
    w = model[0].weight.data
    np.testing.assert_allclose(C.channel_scores(model, "0", "l2"), lp_norms(w, 2, axis=0))
    np.testing.assert_allclose(C.channel_scores(model, "0", "l1"), lp_norms(w, 1, axis=0))
    np.testing.assert_array_equal(C.channel_scores(model, "0", "random", rng=3),
                                  S.random_scores((3,), 3).astype(np.float64))


def test_activation_criteria_observe_the_last_channel_wise_module():
    """Linear 0 is followed by BatchNorm and ReLU (channel-wise), then Linear 3: the unit's
    output is observed after the ReLU, so its variance is that of the ReLU's output; the
    entropy uses 100 bins by default."""
    model, data = _mlp(), _data(40)
    acts = C.activations(model, model[2], data[0])
    assert (acts >= 0).all()
    np.testing.assert_allclose(C.channel_scores(model, "0", "activation_variance", data=data),
                               S.activation_variance(acts))
    np.testing.assert_allclose(C.channel_scores(model, "0", "activation_entropy", data=data),
                               S.activation_entropy(acts, 100))
    np.testing.assert_allclose(C.channel_scores(model, "0", "apoz", data=data),
                               1.0 - S.apoz(acts))


def test_a_unit_is_observed_after_its_own_channel_wise_modules_only():
    """Linear, ReLU, Linear: unit outputs of layer 0 are seen after the ReLU (never negative),
    those of the last layer at the layer itself; one sample is enough data."""
    minnet.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = _data(30)[0]
    np.testing.assert_allclose(C.channel_scores(model, "0", "activation_variance", data=_data(30)),
                               S.activation_variance(np.maximum(x @ model[0].weight.data.T
                                                                + model[0].bias.data, 0)),
                               rtol=1e-5)
    logits = C.activations(model, model[2], x)
    np.testing.assert_allclose(C.channel_scores(model, "2", "activation_variance", data=_data(30)),
                               S.activation_variance(logits), rtol=1e-6)
    assert C.channel_scores(model, "0", "taylor", data=_data(1)).shape == (3,)


def test_entropy_criterion_uses_100_bins():
    model, data = _mlp(), _data(400)
    acts = C.activations(model, model[2], data[0])
    got = C.channel_scores(model, "0", "activation_entropy", data=data)
    np.testing.assert_allclose(got, S.activation_entropy(acts, 100))
    assert not np.allclose(got, S.activation_entropy(acts, 101))


def test_obd_hutchinson_defaults_to_20_probes(monkeypatch):
    seen = {}
    real = C.hessian_diagonals

    def hessian_diagonals(model, targets, data, *, n_samples=None, **kwargs):
        seen["n_samples"] = n_samples
        return real(model, targets, data, n_samples=2, **kwargs)

    monkeypatch.setattr(C, "hessian_diagonals", hessian_diagonals)
    model = _mlp()
    C.weight_scores(model, [("0", model[0], "weight")], "obd_hutchinson", data=_data())
    assert seen == {"n_samples": 20}


def test_bn_scale_reads_the_batch_norm_right_after_the_layer():
    model = _mlp()
    model[1].weight.data = np.array([0.5, -2.0, 1.0], np.float32)
    np.testing.assert_array_equal(C.channel_scores(model, "0", "bn_scale"), [0.5, 2.0, 1.0])
    with pytest.raises(ValueError, match="needs a BatchNorm right after layer '3'"):
        C.channel_scores(model, "3", "bn_scale")


def test_hessian_diagonals_default_to_20_probes_and_a_1e_3_step(monkeypatch):
    seen = {}
    real_hutchinson, real_hvp = S.hutchinson_diagonal, S.finite_difference_hvp

    def hutchinson(hvp, shape, n_samples=100, rng=None, **kwargs):
        seen["n_samples"] = n_samples
        return real_hutchinson(hvp, shape, 2, rng, **kwargs)

    def hvp(grad_fn, w, v, eps=1e-4):
        seen["eps"] = eps
        return real_hvp(grad_fn, w, v, eps)

    monkeypatch.setattr(S, "hutchinson_diagonal", hutchinson)
    monkeypatch.setattr(S, "finite_difference_hvp", hvp)
    model = _mlp()
    C.hessian_diagonals(model, [("0", model[0], "weight")], _data())
    assert seen == {"n_samples": 20, "eps": 1e-3}


def test_weight_scores_accept_a_callable_criterion():
    """A callable is called as fn(model, targets, data, rng) and its scores cast per target."""
    model = _mlp()
    targets = [("0", model[0], "weight")]
    scores = C.weight_scores(model, targets,
                             lambda model, targets, data, rng: [np.full((3, 4), 2.0)])
    np.testing.assert_array_equal(scores[0], np.full((3, 4), 2.0))
