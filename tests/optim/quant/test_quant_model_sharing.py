"""Weight sharing on models (a parametrization of each weight): the differentiable codebook
lookup, fine-tuning, size accounting."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import nn, optimizers
from minnet.train import fit
from optim.quant import (
    SharedLookup,
    SharedWeights,
    huffman_code_lengths,
    kmeans_codebook,
    share_weights,
    sharing_sizes,
)

from test_quant_ptq import images, run, tiny_cnn


def _shared_layers(model):
    """``(layer, its SharedWeights)`` for every weight-shared layer, in order."""
    return [(m, p) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
            for p in nn.parametrize.parametrizations_of(m, "weight") if isinstance(p, SharedWeights)]


@given(k=st.integers(1, 6), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
       seed=st.integers(0, 2**16))
def test_shared_lookup_gradient_sums_per_cluster(k, shape, seed):
    rng = np.random.default_rng(seed)
    centroids = minnet.tensor(rng.normal(size=k), requires_grad=True)
    indices = rng.integers(0, k, size=shape).astype(np.uint8)
    upstream = rng.normal(size=shape)
    weight = SharedLookup.apply(centroids, indices=indices)
    np.testing.assert_array_equal(weight.data, centroids.data[indices])
    weight.backward(upstream)
    for cluster in range(k):
        expected = sum(upstream[i] for i in np.ndindex(shape) if indices[i] == cluster)
        assert centroids.grad[cluster] == pytest.approx(expected, abs=1e-12)


def test_shared_model_equals_float_model_with_clustered_weights():
    model = tiny_cnn()
    shared = share_weights(model, n_clusters=4)
    assert len(_shared_layers(shared)) == 3
    for original in (model[0], model[3][0], model[5]):
        centroids, indices = kmeans_codebook(original.weight.data, 4)
        original.weight.data = centroids[indices]
    np.testing.assert_allclose(run(shared, images()), run(model, images()), rtol=1e-6,
                               atol=1e-6)
    names = {name for name, _ in shared.named_parameters()}
    assert {"0.parametrizations.weight.0.centroids", "0.bias"} <= names
    assert "0.weight" not in names
    assert not shared[0].parametrizations.weight.original.data.any()  # replaced by c[I]


def test_fine_tuning_moves_centroids_and_keeps_sharing():
    x = images(64)
    y = (x.reshape(64, -1).mean(axis=1) > 0.5).astype(np.int64)
    shared = share_weights(tiny_cnn(), n_clusters=4)
    before = [p.centroids.data.copy() for _, p in _shared_layers(shared)]
    fit(shared, optimizers.Adam(shared.parameters(), lr=1e-2), (x, y), 1, batch_size=16,
        progress=False)
    layers = _shared_layers(shared)
    assert any(not np.array_equal(b, p.centroids.data) for b, (_, p) in zip(before, layers))
    for layer, _ in layers:
        assert len(np.unique(layer.weight.data)) <= 4
        assert not layer.parametrizations.weight.original.data.any()  # no gradient reaches it


def test_sharing_sizes_add_up():
    shared = share_weights(tiny_cnn(), n_clusters=4)
    sizes = sharing_sizes(shared)
    layers = [p for _, p in _shared_layers(shared)]
    n_weights = sum(m.indices.size for m in layers)
    n_biases = sum(m.bias.size for m, _ in _shared_layers(shared))
    assert sizes["dense"] == 32 * (n_weights + n_biases)
    assert sizes["shared"] == 2 * n_weights + 3 * 4 * 32 + 32 * n_biases
    huffman = sum(int(np.dot(np.bincount(m.indices.ravel(), minlength=4),
                             huffman_code_lengths(np.bincount(m.indices.ravel(), minlength=4))))
                  for m in layers)
    assert sizes["shared_huffman"] == huffman + 3 * (8 * 4 + 4 * 32) + 32 * n_biases
    assert sizes["ratio"] == sizes["dense"] / sizes["shared"]


def test_share_weights_leaves_the_model_alone_and_rejects_other_layers():
    model = tiny_cnn()
    before = model[0].weight.data.copy()
    share_weights(model, n_clusters=2)
    np.testing.assert_array_equal(model[0].weight.data, before)
    assert len(_shared_layers(share_weights(nn.Linear(3, 2), 2))) == 1
    assert share_weights(nn.ReLU(), 2).__class__ is nn.ReLU
    with pytest.raises(ValueError, match="n_clusters"):
        share_weights(model, n_clusters=0)


@pytest.mark.parametrize("make_optimizer", [
    lambda params: optimizers.Adam(params, lr=1e-2, weight_decay=1e-2),
    lambda params: optimizers.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-2),
])
def test_sharing_keeps_pruned_zeros(make_optimizer):
    """A pruned model shares only its non-zero weights: zeros keep the pinned code 0 and stay
    exactly zero through fine-tuning with momentum and weight decay, while the other
    centroids move; with keep_zeros=False the zeros are clustered like any weight."""
    model = tiny_cnn()
    rng = np.random.default_rng(0)
    for layer in (model[0], model[3][0], model[5]):
        layer.weight.data[rng.random(layer.weight.shape) < 0.6] = 0
    zeros = [layer.weight.data == 0 for layer in (model[0], model[3][0], model[5])]
    shared = share_weights(model, n_clusters=4)
    layers = _shared_layers(shared)
    before = [lookup.centroids.data.copy() for _, lookup in layers]
    x = images(64)
    y = (x.reshape(64, -1).mean(axis=1) > 0.5).astype(np.int64)
    fit(shared, make_optimizer(shared.parameters()), (x, y), 1, batch_size=16, progress=False)
    for (layer, lookup), zero, old in zip(layers, zeros, before):
        assert bool(lookup.zero_pinned) and lookup.centroids.data[0] == 0
        np.testing.assert_array_equal(layer.weight.data == 0, zero)
        assert not np.array_equal(lookup.centroids.data[1:], old[1:])
    plain = _shared_layers(share_weights(model, n_clusters=4, keep_zeros=False))
    assert not any(bool(lookup.zero_pinned) for _, lookup in plain)
    assert any((layer.weight.data != 0).all() for layer, _ in plain)
