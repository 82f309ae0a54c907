"""Save and load named arrays as ``.npz`` archives, written atomically, read without pickle.

An archive is a ZIP file with one ``<name>.npy`` member per array, the layout ``np.savez``
writes and ``np.load`` reads. ``save`` builds it itself (members go through the public
``np.lib.format.write_array``) so that any key is allowed — ``np.savez(file, **arrays)``
rejects keys such as ``file`` — and so that the same arrays always give the same bytes
(fixed member timestamps). ``load`` never unpickles: a checkpoint never executes code.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["save", "load", "atomic_write"]

# 1980-01-01 is the earliest time a ZIP entry can record; a fixed stamp makes output reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for binary writing; on success rename it to ``path``.

    The temporary file lives in the same directory (so ``os.replace`` is an atomic rename on
    POSIX and Windows) and is flushed and fsynced before the rename. If the ``with`` block
    raises, the temporary file is removed and an existing ``path`` is left untouched.

    >>> with atomic_write("weights.bin") as f:   # doctest: +SKIP
    ...     f.write(b"...")
    """
    path = Path(path)
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


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of the ``.npz`` archive ``path`` into a dict, with ``allow_pickle=False``.

    Raises ``FileNotFoundError`` if ``path`` does not exist and ``ValueError`` if it is not an
    npz archive or holds an object array (which only pickle could restore). Tested in
    ``tests/minnet/test_io.py``.

    >>> state = load("ckpt.npz")   # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable npz archive: {err}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single .npy array, not an npz archive of named arrays")
    with archive:
        result = {}
        for key in archive.files:
            try:
                result[key] = archive[key]
            except ValueError as err:
                if "allow_pickle" in str(err):
                    raise ValueError(f"{path}: array {key!r} is an object array; it is refused "
                                     f"because loading it would unpickle Python objects") from err
                raise ValueError(f"{path}: cannot read array {key!r}: {err}") from err
    return result
