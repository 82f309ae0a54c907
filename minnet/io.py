"""Save and load named arrays as ``.npz`` archives, written atomically, read without pickle.

An archive is a ZIP file with one ``<name>.npy`` member per array, the layout ``np.savez``
writes and ``np.load`` reads. ``save`` builds it itself (members go through the public
``np.lib.format.write_array``) so that any key is allowed — ``np.savez(file, **arrays)``
rejects keys such as ``file`` — and so that the same arrays always give the same bytes
(fixed member timestamps). ``load`` never unpickles: a checkpoint never executes code.

``load`` treats the file as untrusted. Before it allocates anything it checks every member's
declared sizes (the ZIP directory's sizes and the ``.npy`` header's shape × itemsize) against
each other, against the archive's real size and against ``MAX_LOAD_BYTES``; every way a file
can be unreadable ends in one exception, ``UnreadableFileError`` (a ``ValueError``).

A process killed inside ``atomic_write`` leaves its temporary file ``.<name>.<16 hex>.tmp``
behind; the next ``atomic_write`` into that directory removes such files once they are older
than ``STALE_TEMP_SECONDS``.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["save", "load", "atomic_write", "sweep_stale_temp_files", "UnreadableFileError",
           "MAX_LOAD_BYTES", "STALE_TEMP_SECONDS"]

# 1980-01-01 is the earliest time a ZIP entry can record; a fixed stamp makes output reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

#: Default cap on the bytes ``load`` may allocate for one archive (all arrays together): 1 GiB.
MAX_LOAD_BYTES = 1 << 30

#: A temporary file of ``atomic_write`` this many seconds old is stale: its writer is gone
#: (a live writer touches it with every write and renames it within seconds).
STALE_TEMP_SECONDS = 300.0

# The temporary name atomic_write gives: "." + target name + "." + 16 hex digits + ".tmp".
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.tmp", re.DOTALL)
_NPY_MAGIC = b"\x93NUMPY"
# What np.savez / np.savez_compressed write; the other ZIP methods (bzip2, LZMA) are refused
# because zipfile inflates them without an output bound.
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# Deflate cannot expand by more than 1032:1 (RFC 1951: 258 bytes per 2-bit code at best).
_MAX_DEFLATE_RATIO = 1032
# Largest .npy header numpy itself writes or reads by default.
_MAX_NPY_HEADER = 10_000


class UnreadableFileError(ValueError):
    """``path`` is not a readable npz archive of arrays; ``reason`` says why.

    Raised by ``load`` for an empty, truncated or corrupted file, a file of another format,
    a member that is not an ``.npy`` array or holds Python objects, and declared sizes that
    disagree with the file or exceed the cap. Tests: ``tests/adversarial/test_minnet_files.py``.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def sweep_stale_temp_files(directory: str | os.PathLike,
                           max_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove the stale temporary files ``atomic_write`` left in ``directory``; return them.

    Only regular files whose whole name matches ``.<name>.<16 hex digits>.tmp`` and whose last
    modification is more than ``max_age`` seconds ago are removed; nothing else is touched
    (no other names, no directories or symlinks, no subdirectories). A missing or unreadable
    directory is not an error. Tests: ``tests/adversarial/test_minnet_files.py``,
    ``::test_sigkill_mid_write_leaves_a_temp_file_that_the_next_write_sweeps`` and
    ``::test_sweep_removes_only_stale_temp_files_of_its_own_pattern``.
    """
    removed = []
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not _TEMP_NAME.fullmatch(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone meanwhile (another sweeper) or not ours to remove
            continue
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for binary writing; on success rename it to ``path``.

    The temporary file lives in the same directory (so ``os.replace`` is an atomic rename on
    POSIX and Windows) and is flushed and fsynced before the rename. If the ``with`` block
    raises, the temporary file is removed and an existing ``path`` is left untouched. Stale
    temporary files of earlier, killed writers in that directory are swept first
    (``sweep_stale_temp_files``).

    >>> with atomic_write("weights.bin") as f:   # doctest: +SKIP
    ...     f.write(b"...")
    """
    path = Path(path)
    sweep_stale_temp_files(path.parent)
    # Opened with "xb" (exclusive create) rather than mkstemp so the file gets the usual
    # umask-derived permissions instead of mkstemp's 0600.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    f = open(tmp, "xb")
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _named_arrays(obj: Any) -> dict[str, np.ndarray]:
    """The ``name -> ndarray`` mapping behind ``obj`` (a mapping, or has ``state_dict()``)."""
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(f"obj must be a mapping of names to arrays or have a state_dict() method, "
                        f"got {type(obj).__name__}")
    arrays = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise TypeError(f"obj keys must be str, got {key!r} of type {type(key).__name__}")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise TypeError(f"obj[{key!r}] has dtype {array.dtype}; object arrays cannot be "
                            f"saved (they would need pickle to load)")
        arrays[key] = array
    return arrays


def save(obj: Any, path: str | os.PathLike, *, compress: bool = False) -> None:
    """Write named arrays to the ``.npz`` archive ``path``, atomically.

    Parameters
    ----------
    obj : mapping of str to array-like, or an object with a ``state_dict()`` method
        (an ``nn.Module``), whose result is such a mapping.
    path : the file to write, used exactly as given (no ``.npz`` is appended).
    compress : deflate the members (as ``np.savez_compressed``); default stored (as ``np.savez``).

    Raises ``TypeError`` for a non-mapping ``obj``, a non-string key, or an object-dtype value
    (naming the key). Tested in ``tests/minnet/test_io.py``.

    >>> save({"w": np.eye(2, dtype=np.float32)}, "ckpt.npz")   # doctest: +SKIP
    """
    arrays = _named_arrays(obj)
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_write(path) as f, zipfile.ZipFile(f, mode="w", allowZip64=True) as archive:
        for key, array in arrays.items():
            member = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            member.compress_type = compression
            with archive.open(member, mode="w", force_zip64=True) as out:
                np.lib.format.write_array(out, array, allow_pickle=False)


def _check_member(info: zipfile.ZipInfo, archive_size: int) -> str:
    """The reason ``info`` cannot be read from an archive of ``archive_size`` bytes, or ""."""
    if not info.filename.endswith(".npy"):
        return f"member {info.filename!r} is not an .npy array"
    if info.compress_type not in _COMPRESSIONS:
        return (f"member {info.filename!r} uses ZIP compression method {info.compress_type}; "
                f"only stored (0) and deflate (8) are read")
    if info.flag_bits & 0x1:
        return f"member {info.filename!r} is encrypted"
    if info.header_offset + info.compress_size > archive_size:
        return (f"member {info.filename!r} declares {info.compress_size} compressed bytes at "
                f"offset {info.header_offset}, past the end of the {archive_size}-byte file")
    limit = (info.compress_size if info.compress_type == zipfile.ZIP_STORED
             else info.compress_size * _MAX_DEFLATE_RATIO)
    if info.file_size > limit:
        return (f"member {info.filename!r} declares {info.file_size} bytes, more than its "
                f"{info.compress_size} compressed bytes can hold")
    return ""


def _read_member(member: IO[bytes], name: str, size: int) -> np.ndarray | str:
    """The array in the open ``.npy`` member ``member`` of ``size`` uncompressed bytes, or the
    reason it cannot be read. Allocates only after the header's size agrees with ``size``."""
    if member.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
        return f"member {name!r} is not an .npy array (no NumPy magic string)"
    version = member.read(2)
    if version == b"\x01\x00":
        read_header = np.lib.format.read_array_header_1_0
    elif version == b"\x02\x00":
        read_header = np.lib.format.read_array_header_2_0
    else:  # 3.0 (UTF-8 structured field names) is not produced by save for plain arrays
        return f"member {name!r} has an unsupported .npy format version {version!r}"
    shape, fortran_order, dtype = read_header(member, max_header_size=_MAX_NPY_HEADER)
    if dtype.hasobject:
        return (f"array {name!r} is an object array; it is refused because loading it "
                f"would unpickle Python objects")
    if dtype.itemsize == 0:
        return f"array {name!r} has the zero-size dtype {dtype}"
    if any(d < 0 for d in shape):
        return f"array {name!r} has a negative dimension in its shape {shape}"
    count = 1
    for d in shape:
        count *= d  # Python int: cannot overflow
    nbytes = count * dtype.itemsize
    header_end = member.tell()
    if header_end + nbytes != size:
        return (f"array {name!r}: its header promises {header_end + nbytes} bytes "
                f"(shape {shape}, dtype {dtype}), the member holds {size}")
    buffer = bytearray(nbytes)
    view, filled = memoryview(buffer), 0
    while filled < nbytes:
        got = member.readinto(view[filled:])
        if not got:
            return f"array {name!r} is truncated: {filled} of {nbytes} bytes"
        filled += got
    if member.read(1):
        return f"member {name!r} has bytes after its array data"
    array = np.frombuffer(buffer, dtype=dtype, count=count)
    if fortran_order:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def load(path: str | os.PathLike, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Read every array of the ``.npz`` archive ``path`` into a dict, never unpickling.

    Declared sizes are checked before anything is allocated or inflated: each member's
    uncompressed size must fit its compressed size (equal when stored, at most 1032× when
    deflated — the deflate format's bound) and the file; the ``.npy`` header's
    :math:`\\prod \\text{shape} \\times \\text{itemsize}` (in Python integers) must equal the
    member's size; and the total over all members must not exceed ``max_bytes``.

    Parameters
    ----------
    path : the archive.
    max_bytes : cap on the total uncompressed bytes of all arrays; default ``MAX_LOAD_BYTES``
        (1 GiB).

    Raises ``FileNotFoundError`` if ``path`` does not exist; ``UnreadableFileError``
    (a ``ValueError`` naming the path and the reason) for anything else that stops it from
    being read: empty, truncated or corrupted file, another format, duplicate or non-``.npy``
    members, object arrays, sizes that disagree or exceed the cap. Tests:
    ``tests/minnet/test_io.py``, ``tests/adversarial/test_minnet_files.py``.

    >>> state = load("ckpt.npz")   # doctest: +SKIP
    """
    cap = MAX_LOAD_BYTES if max_bytes is None else max_bytes
    if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 0:
        raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if not path.is_file():
        raise UnreadableFileError(path, "not a regular file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise UnreadableFileError(path, "the file is empty")
            if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                raise UnreadableFileError(path, "the file holds a single .npy array, not an "
                                                "npz archive of named arrays")
            f.seek(0)
            return _load_archive(f, path, size, cap)
    except UnreadableFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError,
            NotImplementedError, RuntimeError, OverflowError, SyntaxError, RecursionError) as err:
        raise UnreadableFileError(path, f"not a readable npz archive: "
                                        f"{type(err).__name__}: {err}") from err
    except OSError as err:
        raise UnreadableFileError(path, f"cannot be read: {err}") from err


def _load_archive(f: IO[bytes], path: Path, size: int, cap: int) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(f) as archive:
        members = archive.infolist()
        names = [info.filename for info in members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UnreadableFileError(path, f"duplicate members {duplicates}")
        for info in members:
            reason = _check_member(info, size)
            if reason:
                raise UnreadableFileError(path, reason)
        total = sum(info.file_size for info in members)
        if total > cap:
            raise UnreadableFileError(path, f"its arrays declare {total} bytes in all, more than "
                                            f"the cap of {cap} bytes (max_bytes)")
        result = {}
        for info in members:
            key = info.filename[:-len(".npy")]
            with archive.open(info) as member:
                array = _read_member(member, key, info.file_size)
            if isinstance(array, str):
                raise UnreadableFileError(path, array)
            result[key] = array
    return result
