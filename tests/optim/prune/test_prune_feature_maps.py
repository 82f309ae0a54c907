"""Feature-map criteria against brute force: Molchanov et al. 2017's Taylor score from
per-example loss changes measured by finite differences, APoZ from a count of zeros."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import functional as F
from minnet import nn
from optim.prune import apoz, channel_scores, taylor_feature_map_scores


@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), c=st.integers(1, 4),
       spatial=st.sampled_from([(), (3,), (2, 3)]))
def test_taylor_feature_map_scores_match_brute_force(seed, n, c, spatial):
    rng = np.random.default_rng(seed)
    z, g = rng.normal(size=(n, c) + spatial), rng.normal(size=(n, c) + spatial)
    m = int(np.prod(spatial))
    theta = np.zeros(c)
    for k in range(c):
        for i in range(n):  # |(1/M) Σ_m g z| per example, then the mean over examples
            theta[k] += abs(sum(g[i, k].ravel()[j] * z[i, k].ravel()[j] for j in range(m)) / m) / n
    np.testing.assert_allclose(taylor_feature_map_scores(z, g, normalize=False), theta, rtol=1e-10)
    scores = taylor_feature_map_scores(z, g)
    np.testing.assert_allclose(scores, theta / np.sqrt(np.sum(theta ** 2)), rtol=1e-10)
    # a constant factor on the gradients (a batch-mean loss) cancels in the normalisation
    np.testing.assert_allclose(taylor_feature_map_scores(z, g / 7.0), scores, rtol=1e-10)
    # channels last: the same scores with axis=-1
    np.testing.assert_allclose(taylor_feature_map_scores(np.moveaxis(z, 1, -1),
                                                         np.moveaxis(g, 1, -1), axis=-1), scores)


def _conv_model(seed):
    minnet.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    model.double()
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(6, 1, 6, 6)), rng.integers(0, 3, size=6)
    return model, x, y


def test_taylor_feature_map_criterion_is_the_first_order_loss_change():
    model, x, y = _conv_model(1)
    scores = channel_scores(model, "0", "taylor_feature_map", data=(x, y))
    # brute force: scale channel k of the ReLU output by (1 − t); d/dt ℓ_n at 0 = −Σ_m g z
    theta = np.zeros(4)
    t = 1e-6
    with minnet.no_grad():
        for k in range(4):
            def loss(scale):
                gate = np.ones((1, 4, 1, 1))
                gate[0, k] = scale
                z = model[1](model[0](minnet.Tensor(x))) * minnet.Tensor(gate)
                return F.cross_entropy(model[3](model[2](z)), y, reduction="none").data
            slopes = (loss(1 - t) - loss(1 + t)) / (2 * t)
            theta[k] = np.mean(np.abs(slopes)) / 16  # M = 4 × 4 positions
    np.testing.assert_allclose(scores, theta / np.linalg.norm(theta), rtol=1e-6)


@given(seed=st.integers(0, 10_000), zeros=st.floats(0.0, 1.0))
def test_apoz_is_the_zero_count(seed, zeros):
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.normal(size=(5, 3, 2, 2)), 0.0) * (rng.random((5, 3, 2, 2)) >= zeros)
    brute = [sum(1 for i in range(5) for v in a[i, k].ravel() if v == 0) / 20 for k in range(3)]
    np.testing.assert_allclose(apoz(a), brute)
    assert np.all((apoz(a) >= 0) & (apoz(a) <= 1))


def test_apoz_criterion_counts_zeros_after_the_relu():
    model, x, y = _conv_model(2)
    model[0].bias.data[1] = -100.0  # channel 1 is always off after the ReLU: APoZ = 1
    with minnet.no_grad():
        out = model[1](model[0](minnet.Tensor(x))).data
    brute = np.array([np.count_nonzero(out[:, k] == 0) / out[:, k].size for k in range(4)])
    scores = channel_scores(model, "0", "apoz", data=(x, y))
    np.testing.assert_allclose(scores, 1 - brute)
    assert scores[1] == 0.0 and np.argmin(scores) == 1  # pruned first
    with pytest.raises(ValueError, match="needs a ReLU"):
        channel_scores(model, "3", "apoz", data=(x, y))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="grads has shape"):
        taylor_feature_map_scores(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="axis must not be 0"):
        taylor_feature_map_scores(np.ones((2, 3)), np.ones((2, 3)), axis=0)
