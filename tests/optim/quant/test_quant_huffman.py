"""Huffman code lengths and the storage accounting of shared weights."""
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim.quant import huffman_code_lengths, sharing_size_bits

COUNTS = st.lists(st.integers(0, 1000), min_size=1, max_size=40)


@given(counts=COUNTS)
def test_huffman_kraft_equality(counts):
    lengths = huffman_code_lengths(counts)
    used = np.array(counts) > 0
    assert np.all(lengths[~used] == 0) and np.all(lengths[used] >= 1)
    kraft = sum(Fraction(1, 2 ** int(n)) for n in lengths[used])
    assert kraft == (1 if used.sum() >= 2 else Fraction(used.sum(), 2))


@given(counts=st.lists(st.integers(1, 8), min_size=2, max_size=6))
def test_huffman_optimal_vs_brute_force(counts):
    """No prefix code (lengths obeying Kraft's inequality) has a smaller total length."""
    n = len(counts)
    best = min(
        sum(c * l for c, l in zip(counts, lengths))
        for lengths in itertools.product(range(1, n), repeat=n)
        if sum(2 ** (n - l) for l in lengths) <= 2**n  # Kraft: sum 2^-l <= 1
    )
    assert int(np.dot(counts, huffman_code_lengths(counts))) == best


@given(counts=COUNTS)
def test_huffman_within_one_bit_of_entropy(counts):
    """Shannon: H <= mean length < H + 1 (two or more used symbols)."""
    counts = np.array(counts, dtype=np.float64)
    if np.count_nonzero(counts) < 2:
        return
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    mean_length = float(np.dot(counts, huffman_code_lengths(counts)) / counts.sum())
    assert entropy - 1e-9 <= mean_length < entropy + 1


@given(k=st.integers(1, 64), n=st.integers(1, 500), seed=st.integers(0, 1000),
       codebook_bits=st.sampled_from([8, 16, 32]))
def test_sharing_size_accounting(k, n, seed, codebook_bits):
    indices = np.random.default_rng(seed).integers(0, k, size=n)
    sizes = sharing_size_bits(indices, k, codebook_bits=codebook_bits)
    assert sizes["dense"] == 32 * n
    assert sizes["indices"] == n * math.ceil(math.log2(k))
    assert sizes["codebook"] == k * codebook_bits
    assert sizes["total"] == sizes["indices"] + sizes["codebook"]
    assert sizes["total_huffman"] == sizes["indices_huffman"] + sizes["huffman_table"] + sizes["codebook"]
    if k >= 2:
        # an optimal prefix code is never longer than the fixed-length one
        assert sizes["indices_huffman"] <= sizes["indices"]


def test_deep_compression_rate_formula():
    """Han et al. 2016 section 3: r = n b / (n log2 k + k b); 4 clusters over 16 weights at 32 bits."""
    indices = np.tile(np.arange(4), 4)
    sizes = sharing_size_bits(indices, 4)
    assert sizes["dense"] / sizes["total"] == pytest.approx(16 * 32 / (16 * 2 + 4 * 32))


def test_size_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match="indices"):
        sharing_size_bits(np.array([0, 4]), 4)
    with pytest.raises(ValueError, match="symbol_counts"):
        huffman_code_lengths([3, -1])
