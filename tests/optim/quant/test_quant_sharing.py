"""k-means weight sharing (Deep Compression) and its centroid gradients."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.quant import centroid_gradients, kmeans_codebook, shared_weights, sparse_kmeans_codebook

from quant_helpers import FLOAT_DTYPES, float_arrays

SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=8)


def _within_cluster_error(w, centroids, index):
    return float(np.sum((w.astype(np.float64).ravel() - centroids.astype(np.float64)[index.ravel()]) ** 2))


def _nearest_error(w, centroids):
    """Error of assigning each weight to its nearest centroid (brute force)."""
    distance = np.abs(w.astype(np.float64).reshape(-1, 1) - centroids.astype(np.float64).reshape(1, -1))
    return float(np.sum(distance.min(axis=1) ** 2))


@given(dtype=FLOAT_DTYPES, shape=SHAPES, k=st.integers(1, 16),
       init=st.sampled_from(["linear", "density", "random"]), seed=st.integers(0, 1000), data=st.data())
def test_kmeans_nearest_and_not_worse_than_init(dtype, shape, k, init, seed, data):
    w = data.draw(float_arrays(dtype, shape, bound=10.0))
    centroids, index = kmeans_codebook(w, k, init=init, rng=seed)
    assert centroids.shape == (k,) and centroids.dtype == dtype and index.shape == w.shape
    # every weight is assigned to a nearest centroid
    distance = np.abs(w.astype(np.float64).reshape(-1, 1) - centroids.astype(np.float64).reshape(1, -1))
    chosen = distance[np.arange(w.size), index.ravel()]
    np.testing.assert_array_equal(chosen, distance.min(axis=1))
    # Lloyd's iterations never increase the error of the initial (nearest) assignment
    initial, _ = kmeans_codebook(w, k, init=init, iters=0, rng=seed)
    error = _within_cluster_error(w, centroids, index)
    assert error <= _nearest_error(w, initial) * (1 + 1e-6) + 1e-9
    assert w.min() <= centroids.min() and centroids.max() <= w.max()


@given(dtype=FLOAT_DTYPES, shape=SHAPES, k=st.integers(1, 16), data=st.data())
def test_linear_initialisation_spans_min_max(dtype, shape, k, data):
    w = data.draw(float_arrays(dtype, shape, bound=10.0))
    initial, _ = kmeans_codebook(w, k, iters=0)
    assert initial[0] == w.min()
    if k > 1:
        assert initial[-1] == w.max()
        step = (float(w.max()) - float(w.min())) / (k - 1)
        np.testing.assert_allclose(np.diff(initial.astype(np.float64)), step, rtol=1e-4, atol=1e-5)


def test_kmeans_converged_centroids_are_cluster_means():
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.normal(m, 0.05, 200) for m in (-1.0, 0.0, 1.5)]).astype(np.float64)
    centroids, index = kmeans_codebook(w, 3)
    for c in range(3):
        np.testing.assert_allclose(centroids[c], w[index == c].mean())
    np.testing.assert_allclose(np.sort(centroids), [-1.0, 0.0, 1.5], atol=0.02)


@given(dtype=FLOAT_DTYPES, shape=SHAPES, k=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_shared_weights_and_gradients(dtype, shape, k, seed):
    """dL/dc_k = sum of dL/dW over cluster k: the gradient of L(c) = <G, c[I]>, checked against a
    loop and against central differences."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, k, size=shape)
    centroids = rng.normal(size=k).astype(dtype)
    grad = rng.normal(size=shape).astype(dtype)
    np.testing.assert_array_equal(shared_weights(centroids, index), centroids[index])
    g = centroid_gradients(grad, index, k)
    assert g.shape == (k,) and g.dtype == dtype
    loop = np.zeros(k)
    for i, value in zip(index.ravel(), grad.ravel().astype(np.float64)):
        loop[i] += value
    np.testing.assert_allclose(g, loop, rtol=1e-5, atol=1e-5)

    def loss(c):
        return float(np.sum(grad.astype(np.float64) * shared_weights(c, index)))

    eps = 1e-3
    c64 = centroids.astype(np.float64)
    numeric = [(loss(c64 + eps * e) - loss(c64 - eps * e)) / (2 * eps) for e in np.eye(k)]
    np.testing.assert_allclose(g, numeric, rtol=1e-4, atol=1e-4)


def test_kmeans_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_codebook(np.ones(3), 0)
    with pytest.raises(ValueError, match="init"):
        kmeans_codebook(np.ones(3), 2, init="kmeans++")
    with pytest.raises(ValueError, match="indices"):
        shared_weights(np.ones(2), np.array([0, 2]))
    with pytest.raises(ValueError, match="grad and indices"):
        centroid_gradients(np.ones(3), np.zeros(2, dtype=int), 2)


@given(dtype=FLOAT_DTYPES, shape=SHAPES, k=st.integers(2, 8), seed=st.integers(0, 1000),
       data=st.data())
def test_sparse_kmeans_keeps_zeros(dtype, shape, k, seed, data):
    """Zeros map to the fixed centroid 0 and stay exactly zero; the non-zero weights get the
    same codebook as k-means over them alone with k - 1 clusters (Han et al. 2016)."""
    w = data.draw(float_arrays(dtype, shape))
    w[np.random.default_rng(seed).random(shape) < 0.5] = 0
    centroids, index, pinned = sparse_kmeans_codebook(w, k)
    kept = w != 0
    if kept.all():
        assert not pinned
        np.testing.assert_array_equal(index, kmeans_codebook(w, k)[1])
        return
    assert pinned and centroids[0] == 0
    np.testing.assert_array_equal(index == 0, ~kept)
    np.testing.assert_array_equal(shared_weights(centroids, index)[~kept], 0)
    if kept.any():
        alone, codes = kmeans_codebook(w[kept], k - 1)
        np.testing.assert_array_equal(centroids[1:], alone)
        np.testing.assert_array_equal(index[kept], codes + 1)
