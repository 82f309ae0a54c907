"""Codecs of the packed model files: exact round trips and the size formulas."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minnet.kernels.backend import HAVE_NUMBA, use_backend
from optim.pipeline.codecs import (bitmap_decode, bitmap_encode, canonical_codes,
                                   huffman_decode, huffman_encode, pack_symbols, relative_decode,
                                   relative_encode, symbol_bits, unpack_symbols)
from optim.quant.huffman import huffman_code_lengths


@st.composite
def symbol_arrays(draw, max_alphabet=300):
    alphabet = draw(st.integers(1, max_alphabet))
    n = draw(st.integers(0, 200))
    # skewed draws (many repeats of small symbols) as well as uniform ones
    skew = draw(st.booleans())
    elements = st.integers(0, min(alphabet - 1, 3)) if skew else st.integers(0, alphabet - 1)
    return np.array(draw(st.lists(elements, min_size=n, max_size=n)), dtype=np.int64), alphabet


@given(symbol_arrays())
def test_pack_symbols_round_trip_and_size(case):
    symbols, alphabet = case
    data = pack_symbols(symbols, alphabet)
    assert len(data) == math.ceil(symbols.size * symbol_bits(alphabet) / 8)
    np.testing.assert_array_equal(unpack_symbols(data, alphabet, symbols.size), symbols)


def test_symbol_bits_is_the_smallest_sufficient_width():
    for alphabet in range(1, 600):
        b = symbol_bits(alphabet)
        assert 2 ** b >= alphabet and (b == 0 or 2 ** (b - 1) < alphabet)


def test_pack_symbols_bit_order_is_msb_first():
    # 4-bit codes 0x3 and 0xA share one byte, the first symbol in the high nibble
    assert pack_symbols([3, 10], 16) == bytes([0x3A])
    # 3-bit codes 1, 7 -> bits 001 111, padded with zeros: 0011 1100
    assert pack_symbols([1, 7], 8) == bytes([0x3C])


@given(st.lists(st.integers(0, 60), min_size=1, max_size=40))
def test_canonical_codes_are_prefix_free(counts):
    lengths = huffman_code_lengths(np.array(counts))
    codes = canonical_codes(lengths)
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths) if n > 0]
    assert len(set(words)) == len(words)
    for a in words:
        for b in words:
            assert a == b or not b.startswith(a)
    # same length: consecutive codes in symbol order (the canonical rule)
    for length in set(lengths[lengths > 0]):
        same = np.flatnonzero(lengths == length)
        np.testing.assert_array_equal(np.diff(codes[same]), 1)


def test_canonical_codes_reject_impossible_lengths():
    with pytest.raises(ValueError, match="Kraft"):
        canonical_codes(np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="non-negative"):
        canonical_codes(np.array([1.0, 2.0]))


@given(symbol_arrays())
def test_huffman_round_trip_and_size(case):
    symbols, alphabet = case
    lengths, stream = huffman_encode(symbols, alphabet)
    counts = np.bincount(symbols, minlength=alphabet)
    assert lengths.shape == (alphabet,) and lengths.dtype == np.uint8
    assert len(stream) == math.ceil(int(counts @ lengths.astype(np.int64)) / 8)
    np.testing.assert_array_equal(huffman_decode(lengths, stream, symbols.size), symbols)
    # an optimal prefix code never needs more bits than the fixed-width code
    assert counts @ lengths.astype(np.int64) <= symbols.size * max(1, symbol_bits(alphabet))


def test_huffman_matches_deep_compression_accounting():
    """Bits of the stream plus one byte per code length equal sharing_size_bits' Huffman
    indices plus table (optim.quant's accounting), up to the final byte's padding."""
    from optim.quant.huffman import sharing_size_bits
    rng = np.random.default_rng(0)
    indices = rng.choice(16, size=1000, p=np.r_[0.5, np.full(15, 0.5 / 15)])
    lengths, stream = huffman_encode(indices, 16)
    sizes = sharing_size_bits(indices, 16)
    assert 8 * (len(lengths) + len(stream)) - (sizes["indices_huffman"] + sizes["huffman_table"]) < 8


def _decode_or_error(lengths, stream, n):
    try:
        return huffman_decode(lengths, stream, n).tolist()
    except ValueError as err:
        return str(err)


@given(symbol_arrays(), st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)),
                                 max_size=3), st.integers(0, 3))
def test_huffman_decode_backends_agree(case, edits, extra):
    """The compiled bit loop and the Python one decode the same symbols from the same stream,
    or fail with the same error, also for damaged streams."""
    if not HAVE_NUMBA:
        pytest.skip("numba is not installed")
    symbols, alphabet = case
    lengths, stream = huffman_encode(symbols, alphabet)
    stream = bytearray(stream)
    for position, value in edits:
        if stream:
            stream[position % len(stream)] = value
    results = []
    for backend in ("numpy", "numba"):
        with use_backend(backend):
            results.append(_decode_or_error(lengths, bytes(stream), symbols.size + extra))
    assert results[0] == results[1]
    if not edits and not extra:
        assert results[0] == symbols.tolist()


def test_huffman_decode_refuses_a_stream_longer_than_its_symbols_need():
    lengths, stream = huffman_encode(np.array([0, 1, 2, 2, 2]), 3)  # code lengths 2, 2, 1
    with pytest.raises(ValueError, match="need at most 2"):
        huffman_decode(lengths, stream + bytes(10 ** 6), 5)


def test_huffman_decode_rejects_a_short_stream():
    lengths, stream = huffman_encode(np.array([0, 1, 2, 2, 2]), 3)
    with pytest.raises(ValueError, match="stream ended"):
        huffman_decode(lengths, stream, 40)


def test_symbols_outside_the_alphabet_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        pack_symbols([0, 4], 4)
    with pytest.raises(ValueError, match="alphabet"):
        huffman_encode([0], 0)
    with pytest.raises(TypeError, match="integers"):
        pack_symbols(np.array([0.5]), 2)


@given(st.lists(st.integers(0, 3), max_size=300).map(
    lambda v: np.array([x if x < 3 else 0 for x in v] + [0] * len(v), dtype=np.int64)),
    st.integers(1, 6))
def test_relative_round_trip_and_entry_count(symbols, gap_bits):
    gaps, values = relative_encode(symbols, 0, gap_bits)
    assert gaps.min(initial=0) >= 0 and gaps.max(initial=0) < 2 ** gap_bits
    np.testing.assert_array_equal(relative_decode(gaps, values, 0, symbols.size), symbols)
    # one entry per non-zero symbol plus floor(gap / 2^g) fillers per gap (Han et al. 2016,
    # figure 2), brute force over the positions
    positions = np.flatnonzero(symbols)
    gaps_before = np.diff(positions, prepend=-1) - 1
    assert gaps.size == positions.size + int(np.sum(gaps_before // 2 ** gap_bits))
    assert np.count_nonzero(values) == positions.size


def test_relative_decode_rejects_positions_past_the_end():
    with pytest.raises(ValueError, match="beyond"):
        relative_decode(np.array([5]), np.array([1]), 0, 3)
    with pytest.raises(ValueError, match="gap_bits"):
        relative_encode([1, 0], 0, 0)


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=7),
                  elements=st.sampled_from([0.0, 0.0, 0.0, 1.5, -2.25, 3e-8])))
def test_bitmap_round_trip_and_size(x):
    bitmap, values = bitmap_encode(x)
    assert len(bitmap) == math.ceil(x.size / 8)
    assert values.size == np.count_nonzero(x) and values.dtype == x.dtype
    np.testing.assert_array_equal(bitmap_decode(bitmap, values, x.shape), x)


def test_bitmap_decode_checks_its_inputs():
    bitmap, values = bitmap_encode(np.array([0.0, 1.0, 2.0], np.float32))
    with pytest.raises(ValueError, match="set bits"):
        bitmap_decode(bitmap, values[:1], (3,))
    with pytest.raises(ValueError, match="bitmap holds"):
        bitmap_decode(bitmap, values, (30,))
