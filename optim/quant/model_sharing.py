r"""Deep Compression's weight sharing on a model: k-means per layer, then fine-tuning of the
shared centroids (Han, Mao & Dally 2016, section 3).

``share_weights(model, n_clusters)`` replaces every Linear/Conv2d of a copy of ``model`` by a
``SharedWeightLayer`` whose weight is :math:`W = c[I]`: a trainable codebook :math:`c` of
``n_clusters`` centroids and a fixed index array :math:`I`. ``SharedLookup`` makes the
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
from minnet.tensor import Function, Tensor

from ._layers import LAYERS, layer_forward
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


class SharedWeightLayer(nn.Module):
    """A Linear/Conv2d whose weight is looked up in a trainable codebook: Parameter
    ``centroids`` (k,), buffer ``indices`` (the weight's shape), buffer ``zero_pinned`` (code 0
    is a fixed 0 for pruned weights, see ``sparse_kmeans_codebook``; only with
    ``keep_zeros``), the layer's own bias and geometry. The wrapped ``layer`` keeps no weight
    Parameter of its own."""

    def __init__(self, layer: nn.Module, n_clusters: int, init: str = "linear", iters: int = 100,
                 rng: np.random.Generator | int | None = None, keep_zeros: bool = True):
        super().__init__()
        if not isinstance(layer, LAYERS):
            raise TypeError(f"layer must be Linear or Conv2d, got {type(layer).__name__}")
        if keep_zeros:
            centroids, indices, pinned = sparse_kmeans_codebook(layer.weight.data, n_clusters,
                                                                init, iters, rng)
        else:
            (centroids, indices), pinned = kmeans_codebook(layer.weight.data, n_clusters, init,
                                                           iters, rng=rng), False
        self.centroids = nn.Parameter(centroids)
        self.register_buffer("indices", indices)
        self.register_buffer("zero_pinned", np.array(pinned))
        layer.weight = None
        self.layer = layer

    def shared_weight(self) -> Tensor:
        """The shared weight :math:`c[I]` (differentiable in the centroids)."""
        return SharedLookup.apply(self.centroids, indices=self.indices,
                                  zero_pinned=bool(self.zero_pinned))

    def forward(self, x: Tensor) -> Tensor:
        return layer_forward(self.layer, x, self.shared_weight(), self.layer.bias)

    def extra_repr(self) -> str:
        return f"n_clusters={self.centroids.shape[0]}"


def share_weights(model: nn.Module, n_clusters: int = 16, init: str = "linear",
                  iters: int = 100, rng: np.random.Generator | int | None = None,
                  keep_zeros: bool = True) -> nn.Module:
    """A copy of ``model`` with every Linear/Conv2d (in any container) replaced by a
    ``SharedWeightLayer`` of ``n_clusters`` centroids, clustered by ``kmeans_codebook``
    (by ``sparse_kmeans_codebook``, keeping the zeros of pruned layers, with ``keep_zeros``).

    Checked by ``tests/optim/quant/test_quant_model_sharing.py``.
    """
    model = copy.deepcopy(model)
    if isinstance(model, LAYERS):
        return SharedWeightLayer(model, n_clusters, init, iters, rng, keep_zeros)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LAYERS):
                setattr(parent, name,
                        SharedWeightLayer(child, n_clusters, init, iters, rng, keep_zeros))
    return model


def sharing_sizes(model: nn.Module, codebook_bits: int = 32, weight_bits: int = 32
                  ) -> dict[str, int | float]:
    r"""Storage of a weight-shared model in bits: per ``SharedWeightLayer``
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
    for module in model.modules():
        if isinstance(module, SharedWeightLayer):
            k = module.centroids.shape[0]
            sizes = sharing_size_bits(module.indices, k, codebook_bits, weight_bits)
            dense += sizes["dense"]
            shared += sizes["total"]
            shared_huffman += sizes["total_huffman"]
            shared_params.add(id(module.centroids))
    other = sum(p.size for p in model.parameters() if id(p) not in shared_params) * weight_bits
    dense, shared, shared_huffman = dense + other, shared + other, shared_huffman + other
    return {"dense": dense, "shared": shared, "shared_huffman": shared_huffman,
            "ratio": dense / shared, "ratio_huffman": dense / shared_huffman}
