"""Download files from a list of mirrors, each checked against its SHA-256 before it is kept.

A file is streamed into a temporary file beside its destination while its SHA-256 is
computed; only if the digest matches is the temporary file renamed into place (atomic), so
the cache never holds a partial or corrupted file. Mirrors are tried in order; a mirror that
fails (HTTP error, network error, wrong digest) is skipped for the next one.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from minnet.io import atomic_write

__all__ = ["MNIST_MIRRORS", "MNIST_SHA256", "MIRRORS_ENV", "MAX_DOWNLOAD_BYTES",
           "mirrors_from_env", "download"]

# Base URLs, tried in order: the mirror PyTorch's torchvision uses, then the one TensorFlow uses.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# SHA-256 of the four original MNIST files (9,912,422 / 28,881 / 1,648,877 / 4,542 bytes), the
# same bytes on both mirrors and on the original yann.lecun.com site; these digests agree with
# the checksum tables published by several independent projects that fetch MNIST.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

MIRRORS_ENV = "MINNET_MNIST_MIRRORS"

#: Default cap on the bytes one download may write (the largest MNIST file is 9.9 MB): a
#: mirror announcing or sending more is treated as failing, before the disk fills.
MAX_DOWNLOAD_BYTES = 64 << 20

_CHUNK = 1 << 16


def mirrors_from_env() -> tuple[str, ...]:
    """Base URLs from ``$MINNET_MNIST_MIRRORS`` (separated by commas or whitespace), else
    ``MNIST_MIRRORS``."""
    urls = tuple(os.environ.get(MIRRORS_ENV, "").replace(",", " ").split())
    return urls or tuple(MNIST_MIRRORS)


class _DigestMismatch(ValueError):
    pass


def _fetch(url: str, destination: Path, expected: str, timeout: float, max_bytes: int) -> None:
    """Stream ``url`` into ``destination`` atomically; raise ``_DigestMismatch`` on a bad
    digest and ``OSError`` past ``max_bytes``."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, \
            atomic_write(destination) as out:
        size = response.headers.get("Content-Length")
        size = int(size) if size and size.isdigit() else None
        if size is not None and size > max_bytes:
            raise OSError(f"announces {size} bytes, more than max_bytes={max_bytes}")
        received = 0
        with tqdm(total=size, unit="B", unit_scale=True, desc=destination.name, disable=None,
                  leave=False) as bar:
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise OSError(f"sent more than max_bytes={max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        if size is not None and received != size:
            raise OSError(f"transfer cut short: received {received} of {size} bytes")
        if digest.hexdigest() != expected:
            raise _DigestMismatch(f"{destination.name} from {url}: SHA-256 mismatch, "
                                  f"expected {expected}, got {digest.hexdigest()}")


def download(filename: str, root: str | os.PathLike, mirrors: Sequence[str],
             sha256: Mapping[str, str], *, timeout: float = 60.0,
             max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Download ``filename`` into ``root`` from the first mirror serving it with the right digest.

    Parameters
    ----------
    filename : the file name, appended to each mirror's base URL.
    root : the directory to write into (created if missing).
    mirrors : base URLs, tried in order.
    sha256 : expected hex digests by file name; ``filename`` must be a key.
    timeout : seconds to wait on a connection or read.
    max_bytes : a mirror announcing (Content-Length) or sending more bytes fails; default
        ``MAX_DOWNLOAD_BYTES`` (64 MiB).

    Returns the path of the verified file. Raises ``ValueError`` naming the file, the expected
    and the actual digest if some mirror answered with wrong bytes and none with the right
    ones (nothing is left in ``root``); ``OSError`` if every mirror failed otherwise.
    A progress bar is shown on a terminal only. Tested in ``tests/minnet/data/test_download.py``.
    """
    if filename not in sha256:
        raise ValueError(f"filename {filename!r} has no expected SHA-256 in sha256")
    if not mirrors:
        raise ValueError(f"mirrors is empty; cannot download {filename!r}")
    destination = Path(root) / filename
    destination.parent.mkdir(parents=True, exist_ok=True)
    mismatches, failures = [], []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        try:
            _fetch(url, destination, sha256[filename].lower(), timeout, max_bytes)
            return destination
        except _DigestMismatch as err:
            mismatches.append(str(err))
        except (OSError, http.client.HTTPException) as err:  # HTTP/URL errors, timeouts, cut-offs
            failures.append(f"{url}: {err}")
    report = "; ".join(mismatches + failures)
    if mismatches:
        raise ValueError(f"download of {filename} rejected: {report}")
    raise OSError(f"could not download {filename} from any mirror: {report}")
