r"""Exact array codecs of the pipeline's packed model files: bit packing, canonical Huffman
coding and bitmap sparsity.

Each codec maps an array to bytes and back without loss; its size in bytes is a formula:

==============  =====================================================================
codec           bytes
==============  =====================================================================
``fixed``       :math:`\lceil n b / 8 \rceil` for :math:`n` symbols of
                :math:`b = \lceil \log_2 K \rceil` bits (alphabet of :math:`K`)
``huffman``     :math:`K + \lceil \sum_s n_s \ell_s / 8 \rceil`: one byte per code
                length :math:`\ell_s`, then the bit stream
``bitmap``      :math:`\lceil n / 8 \rceil + \mathrm{nnz} \cdot` itemsize: which entries
                are non-zero, then their values
``relative``    the entries other than a dominant symbol :math:`z` as pairs (gap, symbol),
                the gap a :math:`g`-bit count of the :math:`z` s skipped; each of the two
                sequences coded by ``fixed`` or ``huffman``
==============  =====================================================================

``relative`` is Deep Compression's sparse storage (Han, Mao & Dally 2016, section 2 and
figure 2: relative indices of bounded width with filler entries, then section 4: Huffman
coding of the indices and of the quantized weights).
Tests: ``tests/optim/pipeline/test_pipeline_codecs.py``.
"""
from __future__ import annotations

import math

import numpy as np

from minnet.kernels.backend import get_backend, jit
from optim.quant.huffman import huffman_code_lengths

__all__ = ["symbol_bits", "pack_symbols", "unpack_symbols", "canonical_codes", "huffman_encode",
           "huffman_decode", "relative_encode", "relative_decode", "bitmap_encode",
           "bitmap_decode"]

# Codes are built in int64; an optimal code for fewer than ~10^12 symbols is far shorter.
MAX_CODE_LENGTH = 62
# Symbols unpacked per block (a multiple of 8, so every block starts on a byte boundary).
_CHUNK = 1 << 16


def _check_symbols(symbols: object, alphabet: int) -> np.ndarray:
    if isinstance(alphabet, bool) or not isinstance(alphabet, (int, np.integer)) or alphabet < 1:
        raise ValueError(f"alphabet must be a positive integer, got {alphabet!r}")
    s = np.asarray(symbols)
    if s.dtype.kind not in "iub" and s.size:
        raise TypeError(f"symbols must be integers, got dtype {s.dtype}")
    s = s.reshape(-1).astype(np.int64)
    if s.size and (s.min() < 0 or s.max() >= alphabet):
        raise ValueError(f"symbols must lie in [0, {alphabet}), got values in "
                         f"[{s.min()}, {s.max()}]")
    return s


def _check_count(n: object, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {n!r}")
    return int(n)


def symbol_bits(alphabet: int) -> int:
    r"""Bits of a fixed-width code for an alphabet of ``alphabet`` symbols:
    :math:`\lceil \log_2 K \rceil` (0 for a single symbol, which needs no storage)."""
    _check_symbols(np.zeros(0, np.int64), alphabet)
    return math.ceil(math.log2(alphabet)) if alphabet > 1 else 0


def pack_symbols(symbols: object, alphabet: int) -> bytes:
    r"""Fixed-width code: each symbol in :math:`[0, K)` as :math:`b = \lceil \log_2 K \rceil`
    bits, most significant first, the bits of all symbols concatenated and padded with zeros
    to whole bytes; :math:`\lceil n b / 8 \rceil` bytes (int4 codes: two per byte).
    Inverse: ``unpack_symbols``. Test:
    ``tests/optim/pipeline/test_pipeline_codecs.py::test_pack_symbols_round_trip_and_size``.

    >>> pack_symbols([1, 2, 3], 4).hex()     # 01 10 11, padded: 0110 1100
    '6c'
    """
    s = _check_symbols(symbols, alphabet)
    bits = symbol_bits(alphabet)
    planes = (s[:, None] >> np.arange(bits - 1, -1, -1)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1)).tobytes()


def unpack_symbols(data: bytes, alphabet: int, n: int) -> np.ndarray:
    """The ``n`` symbols (int64) that ``pack_symbols(symbols, alphabet)`` wrote to ``data``."""
    n = _check_count(n, "n")
    bits = symbol_bits(alphabet)
    if len(data) != math.ceil(n * bits / 8):
        raise ValueError(f"data holds {len(data)} bytes; {n} symbols of {bits} bits need "
                         f"{math.ceil(n * bits / 8)}")
    weights = np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64)
    raw = np.frombuffer(data, np.uint8)
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, _CHUNK):  # in blocks: the bit planes take 8 bytes per bit
        count = min(_CHUNK, n - start)
        block = raw[start * bits // 8:math.ceil((start + count) * bits / 8)]
        planes = np.unpackbits(block)[:count * bits].reshape(count, bits)
        out[start:start + count] = planes.astype(np.int64) @ weights
    return out


def canonical_codes(lengths: object) -> np.ndarray:
    r"""The canonical prefix code with the given code lengths (DEFLATE's construction,
    RFC 1951 section 3.2.2): symbols sorted by (length, symbol) get consecutive codes, the code
    shifted left by one bit whenever the length grows,

    .. math:: c_{(i+1)} = (c_{(i)} + 1) \ll (\ell_{(i+1)} - \ell_{(i)}), \qquad c_{(1)} = 0.

    A code is fixed by its lengths, so a file stores only the lengths. Symbols of length 0
    are unused (code 0). Raises ValueError if the lengths violate Kraft's inequality
    :math:`\sum_s 2^{-\ell_s} \le 1`. Test:
    ``tests/optim/pipeline/test_pipeline_codecs.py::test_canonical_codes_are_prefix_free``.

    >>> canonical_codes([1, 3, 3, 2, 0])
    array([0, 6, 7, 2, 0])
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (lengths.size and lengths.min() < 0):
        raise ValueError(f"lengths must be a 1-D array of non-negative integers, got {lengths!r}")
    lengths = lengths.astype(np.int64)
    if lengths.size and lengths.max() > MAX_CODE_LENGTH:
        raise ValueError(f"code lengths above {MAX_CODE_LENGTH} bits are not supported, got "
                         f"{lengths.max()}")
    used = lengths > 0
    if np.sum(np.ldexp(1.0, -lengths[used])) > 1.0:
        raise ValueError("lengths violate Kraft's inequality: no prefix code has them")
    codes = np.zeros(lengths.size, dtype=np.int64)
    code, previous = 0, 0
    for s in sorted(np.flatnonzero(used), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - previous
        codes[s], previous = code, int(lengths[s])
        code += 1
    return codes


def huffman_encode(symbols: object, alphabet: int) -> tuple[np.ndarray, bytes]:
    r"""Huffman-code ``symbols`` in :math:`[0, K)`: returns ``(lengths, stream)``, the optimal
    code lengths of the symbol counts (``optim.quant.huffman_code_lengths``, Huffman 1952) as
    uint8 and the canonical codes (``canonical_codes``) of the symbols concatenated, most
    significant bit first, padded to whole bytes: :math:`\lceil \sum_s n_s \ell_s / 8 \rceil`
    bytes. Inverse: ``huffman_decode``. Test:
    ``tests/optim/pipeline/test_pipeline_codecs.py::test_huffman_round_trip_and_size``.
    """
    s = _check_symbols(symbols, alphabet)
    lengths = huffman_code_lengths(np.bincount(s, minlength=alphabet))
    codes = canonical_codes(lengths)
    sizes = lengths[s]
    owner = np.repeat(np.arange(s.size), sizes)
    position = np.arange(owner.size) - (np.cumsum(sizes) - sizes)[owner]
    bits = (codes[s][owner] >> (sizes[owner] - 1 - position)) & 1
    return lengths.astype(np.uint8), np.packbits(bits.astype(np.uint8)).tobytes()


def _huffman_walk_numpy(stream, n, top, first_code, first_rank, count, order, out) -> int:
    """Decode ``stream`` bit by bit into ``out`` (see ``huffman_decode``); returns the number of
    symbols decoded, or -1 at a code longer than ``top`` bits. Indexable arguments: called
    with ``bytes`` and lists in Python, compiled as ``_huffman_walk_numba`` for arrays."""
    code = length = produced = 0
    for i in range(len(stream)):
        byte = stream[i]
        for shift in range(7, -1, -1):
            if produced == n:
                return produced
            code = (code << 1) | ((byte >> shift) & 1)
            length += 1
            if length > top:
                return -1
            offset = code - first_code[length]
            if 0 <= offset < count[length]:
                out[produced] = order[first_rank[length] + offset]
                produced += 1
                code = 0
                length = 0
    return produced


_huffman_walk_numba = jit(_huffman_walk_numpy)


def huffman_decode(lengths: object, stream: bytes, n: int) -> np.ndarray:
    """The ``n`` symbols (int64) of a canonical Huffman ``stream`` with code ``lengths``.

    Reads one bit at a time: after each bit, the code read so far is a complete codeword of
    length :math:`\\ell` exactly when its offset from the first canonical code of that length is
    below the number of codes of that length. The bit loop runs compiled under the Numba
    backend (``_huffman_walk_numba``, the same loop), in Python under the NumPy backend. A
    stream longer than :math:`\\lceil n \\ell_{max} / 8 \\rceil` bytes is refused, so the work
    is bounded by the symbols requested.
    Test: ``tests/optim/pipeline/test_pipeline_codecs.py::test_huffman_decode_backends_agree``.
    """
    n = _check_count(n, "n")
    lengths = np.asarray(lengths).astype(np.int64)
    codes = canonical_codes(lengths)
    order = sorted(np.flatnonzero(lengths > 0), key=lambda s: (lengths[s], s))
    top = int(lengths.max()) if lengths.size else 0
    first_code, first_rank, count = [0] * (top + 1), [0] * (top + 1), [0] * (top + 1)
    for rank, s in enumerate(order):
        length = int(lengths[s])
        if count[length] == 0:
            first_code[length], first_rank[length] = int(codes[s]), rank
        count[length] += 1
    if len(stream) > math.ceil(n * top / 8):
        raise ValueError(f"stream holds {len(stream)} bytes; {n} symbols of at most {top} bits "
                         f"need at most {math.ceil(n * top / 8)}")
    out = np.empty(n, dtype=np.int64)
    if get_backend() == "numba":
        tables = [np.asarray(t, dtype=np.int64) for t in (first_code, first_rank, count, order)]
        produced = _huffman_walk_numba(np.frombuffer(bytes(stream), np.uint8), n, top, *tables,
                                       out)
    else:
        produced = _huffman_walk_numpy(bytes(stream), n, top, first_code, first_rank, count,
                                       [int(s) for s in order], out)
    if produced < 0:
        raise ValueError("stream is not a valid code for these lengths")
    if produced != n:
        raise ValueError(f"stream ended after {produced} of {n} symbols")
    return out


def relative_encode(symbols: object, zero: int, gap_bits: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Relative indexing of the symbols that are not ``zero``: ``(gaps, values)``, one pair per
    entry, ``gaps[j]`` the number of ``zero`` symbols between entry :math:`j-1` and entry
    :math:`j`, ``values[j]`` its symbol. A gap larger than :math:`G = 2^g - 1` (``gap_bits``)
    is split by *filler* entries, each covering :math:`G` zeros and holding ``zero`` itself;
    zeros after the last entry are implied by the length. Positions are recovered as
    :math:`p_j = \sum_{i \le j} (\text{gap}_i + 1) - 1`.

    Source: Han, Mao & Dally 2016, "Deep Compression", section 2, figure 2 (3-bit example:
    a gap of 8 needs a filler zero). Inverse: ``relative_decode``. Test:
    ``tests/optim/pipeline/test_pipeline_codecs.py::test_relative_round_trip_and_entry_count``.

    >>> relative_encode([0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], zero=0, gap_bits=3)
    (array([1, 7, 1]), array([5, 0, 2]))
    """
    s = _check_symbols(symbols, np.iinfo(np.int64).max)
    if isinstance(gap_bits, bool) or not isinstance(gap_bits, (int, np.integer)) \
            or not 1 <= gap_bits <= 32:
        raise ValueError(f"gap_bits must be an integer in [1, 32], got {gap_bits!r}")
    cap = (1 << int(gap_bits)) - 1
    positions = np.flatnonzero(s != zero)
    gaps = np.diff(positions, prepend=-1) - 1
    fillers = gaps // (cap + 1)  # filler entries needed before each entry
    owner = np.repeat(np.arange(positions.size), fillers + 1)
    rank = np.arange(owner.size) - (np.cumsum(fillers + 1) - (fillers + 1))[owner]
    real = rank == fillers[owner]
    out_gaps = np.where(real, gaps[owner] - fillers[owner] * (cap + 1), cap)
    out_values = np.where(real, s[positions][owner], zero)
    return out_gaps.astype(np.int64), out_values.astype(np.int64)


def relative_decode(gaps: object, values: object, zero: int, n: int) -> np.ndarray:
    """The ``n`` symbols (int64) that ``relative_encode`` turned into ``(gaps, values)``."""
    n = _check_count(n, "n")
    gaps, values = np.asarray(gaps, dtype=np.int64), np.asarray(values, dtype=np.int64)
    if gaps.shape != values.shape or gaps.ndim != 1:
        raise ValueError(f"gaps and values must be 1-D of equal length, got shapes {gaps.shape} "
                         f"and {values.shape}")
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and (positions[-1] >= n or gaps.min() < 0):
        raise ValueError(f"the gaps address position {positions[-1]}, beyond n={n}")
    out = np.full(n, zero, dtype=np.int64)
    out[positions] = values
    return out


def bitmap_encode(x: object) -> tuple[bytes, np.ndarray]:
    r"""``(bitmap, values)``: one bit per entry of ``x`` (C order), set where
    :math:`x_i \ne 0`, packed to :math:`\lceil n/8 \rceil` bytes, and the non-zero values in
    order. Inverse: ``bitmap_decode``. Test:
    ``tests/optim/pipeline/test_pipeline_codecs.py::test_bitmap_round_trip_and_size``."""
    x = np.asarray(x)
    nonzero = x.reshape(-1) != 0
    return np.packbits(nonzero).tobytes(), x.reshape(-1)[nonzero]


def bitmap_decode(bitmap: bytes, values: object, shape: tuple[int, ...]) -> np.ndarray:
    """The array of ``shape`` (dtype of ``values``) with ``values`` at the set bits, else 0."""
    n = math.prod(shape)
    if len(bitmap) != math.ceil(n / 8):
        raise ValueError(f"bitmap holds {len(bitmap)} bytes; shape {shape} needs {math.ceil(n / 8)}")
    nonzero = np.unpackbits(np.frombuffer(bitmap, np.uint8))[:n].astype(bool)
    values = np.asarray(values)
    if values.size != nonzero.sum():
        raise ValueError(f"bitmap has {nonzero.sum()} set bits but {values.size} values were given")
    out = np.zeros(n, dtype=values.dtype)
    out[nonzero] = values.reshape(-1)
    return out.reshape(shape)
