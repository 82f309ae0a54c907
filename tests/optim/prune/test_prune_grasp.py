"""GraSP against brute force: Hg from a Hessian of second differences of the loss alone, the
score as half the change of the squared gradient norm, and the deletion of the highest scores."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import nn
from optim.prune import (flat_gradient, global_topk_masks, grasp_scores,
                         hessian_gradient_product, weight_scores)


def _logistic(seed, n=30, d=4):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, d)), (rng.random(n) < 0.5).astype(np.float64)

    def grad(w):  # gradient of the mean logistic loss
        return x.T @ (1 / (1 + np.exp(-(x @ w))) - y) / n

    def hessian(w):  # (1/n) Σ σ(1 − σ) x xᵀ
        s = 1 / (1 + np.exp(-(x @ w)))
        return (x * (s * (1 - s))[:, None]).T @ x / n

    return grad, hessian, rng.normal(size=d)


@given(seed=st.integers(0, 10_000))
def test_grasp_score_is_half_the_gradient_norm_change(seed):
    grad, hessian, w = _logistic(seed)
    hg = hessian_gradient_product(grad, w)
    np.testing.assert_allclose(hg, hessian(w) @ grad(w), rtol=1e-6, atol=1e-12)
    s = grasp_scores(w, hg)
    t = 1e-5  # d/dt ||g(w − t w_q e_q)||² at t = 0 is −2 w_q (Hg)_q = 2 S_q
    for q in range(w.size):
        e = np.zeros_like(w)
        e[q] = w[q]
        slope = (np.sum(grad(w - t * e) ** 2) - np.sum(grad(w + t * e) ** 2)) / (2 * t)
        np.testing.assert_allclose(slope, 2 * s[q], rtol=1e-5, atol=1e-12)


def _tiny_model(seed):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    for p in model.parameters():
        p.data[...] = rng.normal(size=p.shape)
    x, y = rng.normal(size=(16, 3)), rng.integers(0, 2, size=16)
    return model, x, y


def _numpy_loss(model, x, y, w1, w2):
    """The model's mean cross-entropy written in NumPy, with its weights replaced."""
    h = np.tanh(x @ w1.T + model[0].bias.data)
    z = h @ w2.T + model[2].bias.data
    z = z - z.max(axis=1, keepdims=True)
    return np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y])


def test_hessian_gradient_product_matches_brute_force_hessian():
    model, x, y = _tiny_model(0)
    targets = [("0", model[0], "weight"), ("2", model[2], "weight")]
    gradient, start, unflatten = flat_gradient(model, targets, (x, y))

    def loss(flat):
        w1, w2 = unflatten(flat)
        return _numpy_loss(model, x, y, w1, w2)

    d, h = start.size, 1e-4
    eye = np.eye(d) * h
    brute_g = np.array([(loss(start + eye[i]) - loss(start - eye[i])) / (2 * h) for i in range(d)])
    brute_h = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            brute_h[i, j] = (loss(start + eye[i] + eye[j]) - loss(start + eye[i] - eye[j])
                             - loss(start - eye[i] + eye[j]) + loss(start - eye[i] - eye[j])
                             ) / (4 * h * h)
    np.testing.assert_allclose(gradient(start), brute_g, atol=1e-8)
    hg = hessian_gradient_product(gradient, start)
    np.testing.assert_allclose(hg, brute_h @ brute_g, atol=1e-6)

    # weight_scores("grasp") is the keep-score −S, so the masks delete the highest S
    keep = weight_scores(model, targets, "grasp", data=(x, y))
    brute_s = -start * (brute_h @ brute_g)
    np.testing.assert_allclose(np.concatenate([k.ravel() for k in keep]), -brute_s, atol=1e-6)
    masks = global_topk_masks(keep, 5)
    deleted = np.flatnonzero(~np.concatenate([m.ravel() for m in masks]))
    np.testing.assert_array_equal(np.sort(deleted), np.sort(np.argsort(brute_s)[-5:]))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="hg has shape"):
        grasp_scores(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="grad_fn returned shape"):
        hessian_gradient_product(lambda w: np.ones(2), np.ones(3))
