"""k-means weight sharing at its edges, worked by hand."""
import inspect

import numpy as np

from optim.quant.sharing import (_index_dtype, kmeans_codebook, nearest_centroid,
                                 sparse_kmeans_codebook)


def test_nearest_centroid_ties_and_edges():
    """One centroid: all index 0. w = 1 midway between 0 and 2: the smaller. Duplicate
    centroids (1, 1) and w = 0 below them: the first."""
    np.testing.assert_array_equal(nearest_centroid(np.array([5.0, -3.0]), np.array([0.5])), [0, 0])
    assert nearest_centroid(np.array([1.0]), np.array([2.0, 0.0])).tolist() == [1]
    assert nearest_centroid(np.array([0.0]), np.array([1.0, 1.0])).tolist() == [0]


def test_a_single_member_cluster_moves_to_its_member():
    """w = (0, 1, 10), k = 2 from density quantiles (0.5, 5.5): 0 and 1 go to 0.5, 10 to 5.5;
    the update moves them to 0.5 and 10 (the lone member), the assignment is stable."""
    centroids, index = kmeans_codebook(np.array([0.0, 1.0, 10.0]), 2, init="density")
    np.testing.assert_allclose(centroids, [0.5, 10.0])
    assert index.tolist() == [0, 0, 1]


def test_random_initialisation_without_replacement_when_there_are_enough_weights():
    """k = w.size: Forgy draws every weight once, so with no update the centroids are w."""
    w = np.array([0.3, -1.0, 2.0, 0.7])
    for seed in range(5):
        centroids, _ = kmeans_codebook(w, 4, init="random", iters=0, rng=seed)
        np.testing.assert_array_equal(np.sort(centroids), np.sort(w))


def test_documented_default_of_100_lloyd_updates():
    for fn in (kmeans_codebook, sparse_kmeans_codebook):
        assert inspect.signature(fn).parameters["iters"].default == 100


def test_sparse_kmeans_with_one_cluster_is_plain_kmeans():
    """n_clusters = 1 cannot reserve a zero code: one centroid, the mean (0 + 0 + 3) / 3."""
    centroids, index, pinned = sparse_kmeans_codebook(np.array([0.0, 0.0, 3.0]), 1)
    assert pinned is False and index.tolist() == [0, 0, 0]
    np.testing.assert_allclose(centroids, [1.0])
    assert sparse_kmeans_codebook(np.array([1.0, 2.0, 3.0]), 2)[2] is False


def test_index_dtype_is_the_narrowest_unsigned_type():
    """Codes 0..k-1: k = 256 fits uint8, 257 needs uint16, 2^32 + 1 no unsigned type."""
    assert [_index_dtype(k) for k in (256, 257, 2**16, 2**16 + 1, 2**32 + 1)] == \
        [np.uint8, np.uint16, np.uint16, np.uint32, np.int64]
