"""Huffman code lengths and the storage size of a shared-weight (codebook + indices) layer."""
from __future__ import annotations

import heapq
import math

import numpy as np

from ._checks import check_count, check_indices


def huffman_code_lengths(symbol_counts: object) -> np.ndarray:
    r"""Code length of each symbol in an optimal prefix code (Huffman's algorithm).

    Repeatedly merge the two least frequent subtrees; a symbol's length is the number of
    merges above it. The result minimises :math:`\sum_s n_s \ell_s` over prefix codes and,
    with two or more used symbols, meets Kraft's equality :math:`\sum_s 2^{-\ell_s} = 1`.
    Symbols with count 0 get length 0 (not coded); a single used symbol gets length 1.
    Ties are broken by symbol order, so the result is deterministic.

    Source: Huffman 1952, "A Method for the Construction of Minimum-Redundancy Codes";
    used for the indices in Han et al. 2016, section 4.
    Checked by ``tests/optim/quant/test_quant_huffman.py::test_huffman_kraft_equality`` and
    ``::test_huffman_optimal_vs_brute_force``.

    >>> huffman_code_lengths([5, 1, 1, 2, 0])
    array([1, 3, 3, 2, 0])
    """
    counts = np.asarray(symbol_counts)
    if counts.ndim != 1 or counts.dtype.kind not in "iuf":
        raise ValueError(f"symbol_counts must be a 1-D numeric array, got shape {counts.shape}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError("symbol_counts must be finite and >= 0")
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = [int(s) for s in np.flatnonzero(counts > 0)]
    if len(used) == 1:
        lengths[used[0]] = 1
    heap = [(counts[s], order, [s]) for order, s in enumerate(used)]
    heapq.heapify(heap)
    order = len(heap)
    while len(heap) > 1:
        count_a, _, symbols_a = heapq.heappop(heap)
        count_b, _, symbols_b = heapq.heappop(heap)
        lengths[symbols_a + symbols_b] += 1
        heapq.heappush(heap, (count_a + count_b, order, symbols_a + symbols_b))
        order += 1
    return lengths


def sharing_size_bits(indices: object, n_clusters: int, codebook_bits: int = 32,
                      weight_bits: int = 32) -> dict[str, int]:
    r"""Storage of one shared-weight layer, in bits.

    .. math::
        \text{dense} = N b_w, \quad
        \text{indices} = N \lceil \log_2 k \rceil, \quad
        \text{indices\_huffman} = \sum_s n_s \ell_s, \quad
        \text{codebook} = k\, b_c, \quad
        \text{huffman\_table} = 8 k

    with :math:`N` weights, :math:`k` clusters, :math:`n_s` the count of index :math:`s` and
    :math:`\ell_s` its Huffman length; the table stores one 8-bit code length per symbol
    (a canonical Huffman code is fixed by its lengths). ``total = indices + codebook`` and
    ``total_huffman = indices_huffman + huffman_table + codebook``. Deep Compression's ratio
    is ``dense / total``; sparse-index overhead (its pruning stage) is not included here.

    Source: Han et al. 2016, section 3 (compression rate :math:`r = nb / (n\log_2 k + kb)`)
    and section 4 (Huffman coding).
    Checked by ``tests/optim/quant/test_quant_huffman.py::test_sharing_size_accounting``.

    >>> sizes = sharing_size_bits(np.array([0, 0, 0, 1]), 2)
    >>> sizes["dense"], sizes["total"], sizes["total_huffman"]
    (128, 68, 84)
    """
    k = check_count(n_clusters, "n_clusters")
    idx = check_indices(indices, k)
    codebook_bits = check_count(codebook_bits, "codebook_bits")
    weight_bits = check_count(weight_bits, "weight_bits")
    counts = np.bincount(idx.reshape(-1), minlength=k)
    n = int(idx.size)
    sizes = {
        "dense": n * weight_bits,
        "indices": n * math.ceil(math.log2(k)),
        "indices_huffman": int(np.dot(counts, huffman_code_lengths(counts))),
        "codebook": k * codebook_bits,
        "huffman_table": 8 * k,
    }
    sizes["total"] = sizes["indices"] + sizes["codebook"]
    sizes["total_huffman"] = sizes["indices_huffman"] + sizes["huffman_table"] + sizes["codebook"]
    return sizes
