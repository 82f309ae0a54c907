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

The file is untrusted: ``read_idx`` reads and checks the header from the first bytes of the
(decompressed) stream before it reads the body, computes ``prod(sizes) * itemsize`` in Python
integers (no overflow), refuses a size above ``MAX_IDX_BYTES`` or above what the file can hold
(its size; for gzip, 1032 times its size, deflate's largest expansion), and then reads only
that many bytes, so a small file never makes it decompress or allocate more than it holds.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["read_idx", "IMAGES_MAGIC", "LABELS_MAGIC", "MAX_IDX_BYTES"]

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

#: Default cap on the data bytes ``read_idx`` accepts: 256 MiB (the full MNIST training
#: images are 47,040,000 bytes); pass ``max_bytes`` for larger IDX sets.
MAX_IDX_BYTES = 256 << 20

_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20


def _check_size(path: Path, expected: int, actual: int, more: bool = False) -> None:
    if actual != expected or more:
        problem = "truncated" if actual < expected else "has trailing bytes"
        has = f"more than {actual}" if more else f"{actual}"
        raise ValueError(f"{path}: IDX file {problem}: the header promises {expected} bytes, "
                         f"the file has {has}")


def _read_exactly(stream: IO[bytes], n: int) -> bytearray:
    """Up to ``n`` bytes of ``stream``, fewer only at its end; memory grows with the bytes
    actually read, never to ``n`` up front."""
    data = bytearray()
    while len(data) < n:
        chunk = stream.read(min(_CHUNK, n - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def read_idx(path: str | os.PathLike, magic: int | None = None, *,
             max_bytes: int | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian array of the shape in its header.

    Parameters
    ----------
    path : the file; gzip is detected from its first bytes, not its name.
    magic : if given, the magic number the file must have (``IMAGES_MAGIC``/``LABELS_MAGIC``).
    max_bytes : cap on the data size :math:`\\prod_i d_i \\times \\text{itemsize}` the
        header may declare; default ``MAX_IDX_BYTES`` (256 MiB).

    Raises ``ValueError`` naming the file for an unknown or unexpected magic number, a
    declared size above ``max_bytes`` or above what the file can hold, a corrupt gzip stream,
    and a size different from ``4 + 4 d + prod(sizes) * itemsize`` bytes (truncated or padded
    file). Tested in ``tests/minnet/data/test_idx.py`` and
    ``tests/adversarial/test_minnet_files.py``.

    >>> images = read_idx("t10k-images-idx3-ubyte.gz", magic=IMAGES_MAGIC)   # doctest: +SKIP
    """
    cap = MAX_IDX_BYTES if max_bytes is None else max_bytes
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 0:
        raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block, a directory cannot be read
        raise ValueError(f"{path}: not a regular file")
    with open(path, "rb") as raw:
        file_size = os.fstat(raw.fileno()).st_size
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            return _read_stream(raw, path, file_size, file_size, cap, magic)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_stream(stream, path, None, file_size * _MAX_DEFLATE_RATIO, cap,
                                    magic)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip stream: {err}") from err


def _read_stream(stream: IO[bytes], path: Path, size: int | None, room: int, cap: int,
                 magic: int | None) -> np.ndarray:
    """The IDX array in ``stream`` of ``size`` bytes (None: unknown, a gzip stream) that can
    hold at most ``room`` bytes."""
    first = _read_exactly(stream, 4)
    if len(first) < 4:
        _check_size(path, 4, len(first))
    (found,) = struct.unpack(">I", first)
    zeros, code, ndim = found >> 16, (found >> 8) & 0xFF, found & 0xFF
    if zeros != 0 or code not in _DTYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file: magic number 0x{found:08X} (expected "
                         f"0x0000TTDD with a known element type TT and DD >= 1 dimensions)")
    if magic is not None and found != magic:
        raise ValueError(f"{path}: magic number 0x{found:08X}, expected 0x{magic:08X}")
    dims = _read_exactly(stream, 4 * ndim)
    header = 4 + 4 * ndim
    if len(dims) < 4 * ndim:
        _check_size(path, header, 4 + len(dims))
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = _DTYPES[code]
    count = 1
    for d in shape:
        count *= d  # Python int: cannot overflow
    nbytes = count * dtype.itemsize
    if nbytes > cap:
        raise ValueError(f"{path}: the IDX header declares shape {shape} of {dtype.itemsize}-"
                         f"byte elements, {nbytes} bytes, more than the cap of {cap} bytes "
                         f"(max_bytes)")
    if size is not None:
        _check_size(path, header + nbytes, size)
    elif header + nbytes > room:
        raise ValueError(f"{path}: the IDX header declares {header + nbytes} bytes, more than "
                         f"a gzip stream of {room // _MAX_DEFLATE_RATIO} bytes can hold")
    data = _read_exactly(stream, nbytes)
    if len(data) < nbytes:
        _check_size(path, header + nbytes, header + len(data))
    if stream.read(1):
        _check_size(path, header + nbytes, header + nbytes, more=True)
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(shape)
    if not dtype.isnative:
        array.byteswap(inplace=True)  # the buffer is ours: swap it instead of copying
    return array.view(dtype.newbyteorder("="))
