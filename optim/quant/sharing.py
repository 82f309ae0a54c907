"""Weight sharing (Deep Compression): a per-layer k-means codebook and its fine-tuning gradient."""
from __future__ import annotations

import numpy as np

from ._checks import as_float_array, check_count, check_finite, check_indices
from .rounding import make_rng

KMEANS_INITS = ("linear", "density", "random")


def nearest_centroid(w: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    r"""Index of a nearest centroid, :math:`I_i = \arg\min_k |w_i - c_k|`, for a flat ``w``
    (int64). In 1-D the nearest centroid is one of the two sorted neighbours of :math:`w_i`,
    found by binary search; a tie goes to the smaller centroid."""
    order = np.argsort(centroids, kind="stable")
    ordered = centroids[order]
    if ordered.size == 1:
        return np.zeros(w.size, dtype=np.int64)
    right = np.clip(np.searchsorted(ordered, w), 1, ordered.size - 1)
    left = right - 1
    take_right = np.abs(ordered[right] - w) < np.abs(w - ordered[left])
    return order[np.where(take_right, right, left)].astype(np.int64)


def _initial_centroids(w: np.ndarray, k: int, init: str, rng) -> np.ndarray:
    if init == "linear":
        return np.linspace(w.min(), w.max(), k)
    if init == "density":
        return np.quantile(w, (np.arange(k) + 0.5) / k)
    if init == "random":
        return make_rng(rng).choice(w, size=k, replace=w.size < k)
    raise ValueError(f"init must be one of {KMEANS_INITS}, got {init!r}")


def kmeans_codebook(
    w: object,
    n_clusters: int,
    init: str = "linear",
    iters: int = 100,
    *,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""1-D k-means (Lloyd's algorithm) over all weights of a layer:

    .. math::
        \min_{c,\ I} \sum_i (w_i - c_{I_i})^2, \qquad
        I_i \leftarrow \arg\min_k |w_i - c_k|, \qquad
        c_k \leftarrow \operatorname{mean}\{w_i : I_i = k\}

    alternated until the assignment stops changing or ``iters`` updates were made; an empty
    cluster keeps its centroid. ``init`` is ``"linear"`` (evenly spaced over
    :math:`[\min w, \max w]`, the paper's choice: it keeps the rare large weights),
    ``"density"`` (quantiles of the CDF) or ``"random"`` (Forgy: weights drawn with ``rng``).
    Each step never increases the within-cluster error, and the returned indices are the
    nearest centroid to each weight.

    Returns ``(centroids, indices)``: ``centroids`` of shape ``(n_clusters,)`` in ``w``'s dtype
    and ``indices`` of ``w``'s shape (the narrowest unsigned dtype holding ``n_clusters - 1``).

    Source: Han, Mao & Dally 2016, "Deep Compression", section 3 (k-means weight sharing;
    linear initialisation works best).
    Checked by
    ``tests/optim/quant/test_quant_sharing.py::test_kmeans_nearest_and_not_worse_than_init``.

    >>> c, i = kmeans_codebook(np.array([0.0, 0.1, 0.9, 1.0], dtype=np.float32), 2)
    >>> c, i
    (array([0.05, 0.95], dtype=float32), array([0, 0, 1, 1], dtype=uint8))
    """
    w = as_float_array(w, "w")
    check_finite(w, "w")
    if w.size == 0:
        raise ValueError("w must not be empty")
    k = check_count(n_clusters, "n_clusters")
    iters = check_count(iters, "iters", minimum=0)
    flat = w.reshape(-1).astype(np.float64)
    centroids = _initial_centroids(flat, k, init, rng).astype(np.float64)
    index = nearest_centroid(flat, centroids)
    for _ in range(iters):
        sums = np.bincount(index, weights=flat, minlength=k)
        sizes = np.bincount(index, minlength=k)
        centroids = np.where(sizes > 0, sums / np.maximum(sizes, 1), centroids)
        new_index = nearest_centroid(flat, centroids)
        if np.array_equal(new_index, index):
            break
        index = new_index
    centroids = centroids.astype(w.dtype)
    index = nearest_centroid(flat, centroids.astype(np.float64))
    return centroids, index.reshape(w.shape).astype(_index_dtype(k))


def sparse_kmeans_codebook(w: np.ndarray, n_clusters: int, init: str = "linear",
                           iters: int = 100, rng: np.random.Generator | int | None = None
                           ) -> tuple[np.ndarray, np.ndarray, bool]:
    """``kmeans_codebook`` that keeps exact zeros exact: if ``w`` has zeros (and
    ``n_clusters >= 2``), centroid 0 is 0 and holds them, and the non-zero weights are clustered
    into the other ``n_clusters - 1`` centroids (Han et al. 2016: sharing after pruning).

    Returns ``(centroids, indices, zero_pinned)``; ``zero_pinned`` says whether code 0 is the
    reserved zero.

    Source: Han, Mao & Dally 2016, sections 2-3 (prune, then share the remaining weights).
    Checked by ``tests/optim/quant/test_quant_sharing.py::test_sparse_kmeans_keeps_zeros`` and
    ``tests/optim/quant/test_quant_model_sharing.py::test_sharing_keeps_pruned_zeros``.
    """
    w = as_float_array(w, "w")
    n_clusters = check_count(n_clusters, "n_clusters")
    kept = w != 0
    if kept.all() or n_clusters < 2:
        return (*kmeans_codebook(w, n_clusters, init, iters, rng=rng), False)
    centroids = np.zeros(n_clusters, dtype=w.dtype)
    indices = np.zeros(w.shape, dtype=_index_dtype(n_clusters))
    if kept.any():
        centroids[1:], codes = kmeans_codebook(w[kept], n_clusters - 1, init, iters, rng=rng)
        indices[kept] = codes + 1
    return centroids, indices, True


def _index_dtype(n_clusters: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_clusters - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def shared_weights(centroids: object, indices: object) -> np.ndarray:
    r"""The shared weights :math:`\hat W_i = c_{I_i}` (shape of ``indices``, dtype of
    ``centroids``).

    Source: Han et al. 2016, section 3.
    Checked by ``tests/optim/quant/test_quant_sharing.py::test_shared_weights_and_gradients``.
    """
    c = np.asarray(centroids)
    if c.ndim != 1:
        raise ValueError(f"centroids must be 1-D, got shape {c.shape}")
    return c[check_indices(indices, c.size)]


def centroid_gradients(grad: object, indices: object, n_clusters: int) -> np.ndarray:
    r"""Gradient of the loss with respect to the shared centroids: the weight gradients summed
    per cluster,

    .. math:: \frac{\partial L}{\partial c_k} = \sum_i \frac{\partial L}{\partial W_i}\, [I_i = k]

    Source: Han et al. 2016, section 3 (fine-tuning the shared centroids).
    Checked by ``tests/optim/quant/test_quant_sharing.py::test_shared_weights_and_gradients``.
    """
    k = check_count(n_clusters, "n_clusters")
    g = as_float_array(grad, "grad")
    idx = check_indices(indices, k)
    if g.shape != idx.shape:
        raise ValueError(
            f"grad and indices must have the same shape, got {g.shape} and {idx.shape}"
        )
    return np.bincount(idx.reshape(-1), weights=g.reshape(-1), minlength=k).astype(g.dtype)
