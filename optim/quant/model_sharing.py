r"""Deep Compression's weight sharing on a model: k-means per layer, then fine-tuning of the
shared centroids (Han, Mao & Dally 2016, section 3).

``share_weights(model, n_clusters)`` parametrizes the weight of every Linear/Conv2d of a copy
of ``model`` by ``SharedWeights`` (``minnet.nn.parametrize``), so that it is :math:`W = c[I]`:
a trainable codebook :math:`c` of ``n_clusters`` centroids and a fixed index array :math:`I`. ``SharedLookup`` makes the
lookup differentiable, with the gradient of each centroid the sum of the gradients of the
weights that share it, so ``minnet.train.fit`` fine-tunes the centroids (and biases) with any
optimizer. ``sharing_sizes`` gives the storage with and without Huffman-coded indices.

A pruned layer keeps its zeros: as in the paper, where weight sharing follows pruning and
clusters only the surviving weights, code 0 is reserved for the exact value 0 (a centroid that
gets no gradient, so fine-tuning never revives a pruned weight) and the non-zero weights share
the other ``n_clusters - 1`` centroids.
"""
from __future__ import annotations

import copy

import numpy as np

from minnet import nn
from minnet.tensor import Function, Tensor, no_grad

from ._layers import LAYERS
from .huffman import sharing_size_bits
from .sharing import centroid_gradients, kmeans_codebook, sparse_kmeans_codebook


class SharedLookup(Function):
    r""":math:`W = c[I]`; :math:`\partial L / \partial c_k = \sum_{i: I_i = k} \partial L /
    \partial W_i` (``centroid_gradients``), except that a pinned centroid 0 gets none."""

    @staticmethod
    def forward(ctx, centroids, *, indices, zero_pinned=False):
        ctx.indices, ctx.n_clusters, ctx.zero_pinned = indices, centroids.shape[0], zero_pinned
        return centroids[indices]

    @staticmethod
    def backward(ctx, grad):
        grad_centroids = centroid_gradients(grad, ctx.indices, ctx.n_clusters)
        if ctx.zero_pinned:
            grad_centroids[0] = 0
        return grad_centroids


class SharedWeights(nn.Module):
    """The weight-sharing parametrization :math:`w \\mapsto c[I]` of a Linear/Conv2d weight
    (``minnet.nn.parametrize``): Parameter ``centroids`` (k,), buffer ``indices`` (the
    weight's shape) and buffer ``zero_pinned`` (code 0 is a fixed 0 for pruned weights, see
    ``sparse_kmeans_codebook``). The lookup replaces its input, so ``share_weights`` sets the
    parameter's original to zeros: it gets no gradient and stores as nothing."""

    def __init__(self, centroids: np.ndarray, indices: np.ndarray, zero_pinned: bool = False):
        super().__init__()
        self.centroids = nn.Parameter(np.asarray(centroids))
        self.register_buffer("indices", np.asarray(indices, dtype=np.int64))
        self.register_buffer("zero_pinned", np.array(bool(zero_pinned)))

    @classmethod
    def cluster(cls, weight: np.ndarray, n_clusters: int, init: str = "linear", iters: int = 100,
                rng: np.random.Generator | int | None = None, keep_zeros: bool = True
                ) -> SharedWeights:
        """The codebook and indices of ``weight`` by ``kmeans_codebook`` (by
        ``sparse_kmeans_codebook``, zeros keeping code 0, with ``keep_zeros``)."""
        if keep_zeros:
            centroids, indices, pinned = sparse_kmeans_codebook(weight, n_clusters, init, iters,
                                                                rng)
        else:
            (centroids, indices), pinned = kmeans_codebook(weight, n_clusters, init, iters,
                                                           rng=rng), False
        return cls(centroids.astype(weight.dtype), indices, pinned)

    def forward(self, w: Tensor) -> Tensor:
        return SharedLookup.apply(self.centroids, indices=self.indices,
                                  zero_pinned=bool(self.zero_pinned))

    def extra_repr(self) -> str:
        return f"n_clusters={self.centroids.shape[0]}"


def share_weights(model: nn.Module, n_clusters: int = 16, init: str = "linear",
                  iters: int = 100, rng: np.random.Generator | int | None = None,
                  keep_zeros: bool = True) -> nn.Module:
    """A copy of ``model`` whose every Linear/Conv2d weight (in any container) is
    parametrized by ``SharedWeights`` of ``n_clusters`` centroids, clustered from the weight
    as the layer computes it (after its masks) by ``kmeans_codebook`` (by
    ``sparse_kmeans_codebook``, keeping the zeros of pruned layers, with ``keep_zeros``).

    Checked by ``tests/optim/quant/test_quant_model_sharing.py``.
    """
    model = copy.deepcopy(model)
    for layer in model.modules():
        if isinstance(layer, LAYERS):
            with no_grad():
                weight = layer.weight.data
            shared = SharedWeights.cluster(weight, n_clusters, init, iters, rng, keep_zeros)
            nn.parametrize.register_parametrization(layer, "weight", shared)
            layer.parametrizations.weight.original.data[...] = 0
    return model


def sharing_sizes(model: nn.Module, codebook_bits: int = 32, weight_bits: int = 32
                  ) -> dict[str, int | float]:
    r"""Storage of a weight-shared model in bits: per weight shared by ``SharedWeights``
    ``sharing_size_bits`` (indices at :math:`\lceil \log_2 k \rceil` bits, or Huffman-coded
    plus a table, and a codebook of :math:`k` ``codebook_bits`` values); every other parameter
    (biases, unshared layers) at ``weight_bits``.

    Returns ``dense`` (all parameters at ``weight_bits``), ``shared``, ``shared_huffman`` and
    the compression ratios ``ratio = dense / shared``, ``ratio_huffman``.

    Source: Han et al. 2016, sections 3-4.
    Checked by
    ``tests/optim/quant/test_quant_model_sharing.py::test_sharing_sizes_add_up``.
    """
    dense = shared = shared_huffman = 0
    shared_params = set()
    for chain in model.modules():
        if not isinstance(chain, nn.parametrize.ParametrizationList):
            continue
        for lookup in (p for p in chain if isinstance(p, SharedWeights)):
            k = lookup.centroids.shape[0]
            sizes = sharing_size_bits(lookup.indices, k, codebook_bits, weight_bits)
            dense += sizes["dense"]
            shared += sizes["total"]
            shared_huffman += sizes["total_huffman"]
            shared_params |= {id(lookup.centroids), id(chain.original)}
    other = sum(p.size for p in model.parameters() if id(p) not in shared_params) * weight_bits
    dense, shared, shared_huffman = dense + other, shared + other, shared_huffman + other
    return {"dense": dense, "shared": shared, "shared_huffman": shared_huffman,
            "ratio": dense / shared, "ratio_huffman": dense / shared_huffman}
