"""Reader for the IDX format of the MNIST files, plain or gzip-compressed.

Layout (LeCun, Cortes, Burges, "THE MNIST DATABASE of handwritten digits", section "FILE
FORMATS FOR THE MNIST DATABASE"), all integers big-endian:

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4 d bytes   the d sizes, one uint32 each
    the data    prod(sizes) elements in C order

so a file holds exactly ``4 + 4 d + prod(sizes) * itemsize`` bytes. MNIST images have magic
number 0x00000803 (ubyte, 3 dims: count, 28, 28), labels 0x00000801 (ubyte, 1 dim: count).
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "IMAGES_MAGIC", "LABELS_MAGIC"]

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if they start with the gzip magic (IDX starts with 0x0000)."""
    data = path.read_bytes()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip stream: {err}") from err


def _check_size(path: Path, expected: int, actual: int) -> None:
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise ValueError(f"{path}: IDX file {problem}: the header promises {expected} bytes, "
                         f"the file has {actual}")


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian array of the shape in its header.

    Parameters
    ----------
    path : the file; gzip is detected from its first bytes, not its name.
    magic : if given, the magic number the file must have (``IMAGES_MAGIC``/``LABELS_MAGIC``).

    Raises ``ValueError`` naming the file for an unknown or unexpected magic number and for a
    size different from ``4 + 4 d + prod(sizes) * itemsize`` bytes (truncated or padded file).
    Tested in ``tests/minnet/data/test_idx.py``.

    >>> images = read_idx("t10k-images-idx3-ubyte.gz", magic=IMAGES_MAGIC)   # doctest: +SKIP
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        _check_size(path, 4, len(data))
    (found,) = struct.unpack(">I", data[:4])
    zeros, code, ndim = found >> 16, (found >> 8) & 0xFF, found & 0xFF
    if zeros != 0 or code not in _DTYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file: magic number 0x{found:08X} (expected "
                         f"0x0000TTDD with a known element type TT and DD >= 1 dimensions)")
    if magic is not None and found != magic:
        raise ValueError(f"{path}: magic number 0x{found:08X}, expected 0x{magic:08X}")
    header = 4 + 4 * ndim
    if len(data) < header:
        _check_size(path, header, len(data))
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[code]
    _check_size(path, header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, len(data))
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))
