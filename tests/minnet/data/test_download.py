"""Verified downloads from a local HTTP mirror, and the full-MNIST loader on top of them."""
import gzip
import hashlib
import os

import numpy as np
import pytest

from minnet.data import download, load_mnist
from minnet.data.mnist import mnist_root

N = 10


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tiny_mnist(mirror, write_idx, monkeypatch):
    """Ten train and six test images with labels, served gzipped under ``<mirror>/good/``, and
    the digest table pointed at them."""
    rng = np.random.default_rng(0)
    (mirror.directory / "good").mkdir()
    arrays = {"train": (rng.integers(0, 256, (N, 28, 28), dtype=np.uint8),
                        rng.integers(0, 10, N, dtype=np.uint8)),
              "test": (rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
                       rng.integers(0, 10, 6, dtype=np.uint8))}
    prefixes = {"train": "train", "test": "t10k"}
    digests = {}
    for split, (images, labels) in arrays.items():
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefixes[split]}-{kind}-ubyte.gz"
            digests[name] = sha256(write_idx(mirror.directory / "good" / name, array, gz=True))
    monkeypatch.setattr(download, "MNIST_SHA256", digests)
    return arrays


def cached_names(root):
    return sorted(os.listdir(root)) if root.exists() else []


@pytest.mark.parametrize("split", ["train", "test"])
def test_download_then_load_returns_the_served_arrays(tmp_path, mirror, tiny_mnist, split,
                                                      capfd):
    root = tmp_path / "cache"
    x, y = load_mnist(split, subset="full", root=root, mirrors=[mirror.url + "/good/"])
    assert capfd.readouterr().err == ""  # no progress bar when stderr is not a terminal
    images, labels = tiny_mnist[split]
    assert x.dtype == np.float32 and x.shape == (len(images), 1, 28, 28)
    assert y.dtype == np.int64 and y.shape == (len(labels),)
    np.testing.assert_array_equal(np.rint(x[:, 0] * 255).astype(np.uint8), images)
    np.testing.assert_array_equal(y, labels)
    prefix = "train" if split == "train" else "t10k"
    assert cached_names(root) == [f"{prefix}-images-idx3-ubyte.gz",
                                  f"{prefix}-labels-idx1-ubyte.gz"]
    for name in cached_names(root):
        assert (root / name).read_bytes() == (mirror.directory / "good" / name).read_bytes()


def test_cached_files_are_not_downloaded_again(tmp_path, mirror, tiny_mnist):
    root = tmp_path / "cache"
    first = load_mnist("train", subset="full", root=root, mirrors=[mirror.url + "/good/"])
    assert len(mirror.requests) == 2
    second = load_mnist("train", subset="full", root=root, mirrors=[mirror.url + "/good/"])
    assert len(mirror.requests) == 2
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_a_mirror_that_404s_falls_back_to_the_next(tmp_path, mirror, tiny_mnist):
    root = tmp_path / "cache"
    x, y = load_mnist("test", subset="full", root=root,
                      mirrors=[mirror.url + "/missing/", mirror.url + "/good/"])
    np.testing.assert_array_equal(y, tiny_mnist["test"][1])
    assert mirror.requests[:2] == ["/missing/t10k-images-idx3-ubyte.gz",
                                   "/good/t10k-images-idx3-ubyte.gz"]


def test_corrupted_download_is_rejected_and_not_cached(tmp_path, mirror, tiny_mnist):
    name = "t10k-labels-idx1-ubyte.gz"
    (mirror.directory / "bad").mkdir()
    good = (mirror.directory / "good" / name).read_bytes()
    corrupted = good[:-1] + bytes([good[-1] ^ 1])
    (mirror.directory / "bad" / name).write_bytes(corrupted)
    root = tmp_path / "cache"
    with pytest.raises(ValueError) as info:
        download.download(name, root, [mirror.url + "/bad/"], download.MNIST_SHA256)
    message = str(info.value)
    assert name in message
    assert download.MNIST_SHA256[name] in message and sha256(corrupted) in message
    assert cached_names(root) == []


def test_corrupted_mirror_falls_back_to_a_good_one(tmp_path, mirror, tiny_mnist):
    name = "train-labels-idx1-ubyte.gz"
    (mirror.directory / "bad").mkdir()
    (mirror.directory / "bad" / name).write_bytes(b"not the labels")
    root = tmp_path / "cache"
    path = download.download(name, root, [mirror.url + "/bad/", mirror.url + "/good"],
                             download.MNIST_SHA256)
    assert path == root / name
    assert sha256(path.read_bytes()) == download.MNIST_SHA256[name]
    assert cached_names(root) == [name]


def test_a_transfer_cut_short_falls_back_to_the_next_mirror(tmp_path, mirror, tiny_mnist):
    name = "t10k-labels-idx1-ubyte.gz"
    root = tmp_path / "cache"
    with pytest.raises(OSError, match=name):
        download.download(name, root, [mirror.url + "/cut/"], download.MNIST_SHA256)
    assert cached_names(root) == []
    download.download(name, root, [mirror.url + "/cut/", mirror.url + "/good/"],
                      download.MNIST_SHA256)
    assert cached_names(root) == [name]


def test_every_mirror_failing_raises_oserror_listing_them(tmp_path, mirror, tiny_mnist):
    urls = [mirror.url + "/missing/", mirror.url + "/gone/"]
    with pytest.raises(OSError, match=r"missing/.*404.*gone/.*404"):
        download.download("train-labels-idx1-ubyte.gz", tmp_path / "cache", urls,
                          download.MNIST_SHA256)
    assert cached_names(tmp_path / "cache") == []


def test_mirrors_from_environment(tmp_path, mirror, tiny_mnist, monkeypatch):
    monkeypatch.setenv(download.MIRRORS_ENV, f"{mirror.url}/missing, {mirror.url}/good")
    assert download.mirrors_from_env() == (f"{mirror.url}/missing", f"{mirror.url}/good")
    x, y = load_mnist("train", subset="full", root=tmp_path)
    np.testing.assert_array_equal(y, tiny_mnist["train"][1])


def test_cache_root_from_environment(tmp_path, mirror, tiny_mnist, monkeypatch):
    monkeypatch.setenv("MINNET_DATA", str(tmp_path / "env-cache"))
    assert mnist_root() == tmp_path / "env-cache"
    assert mnist_root(tmp_path / "given") == tmp_path / "given"
    load_mnist("test", subset="full", mirrors=[mirror.url + "/good/"])
    assert len(cached_names(tmp_path / "env-cache")) == 2
    monkeypatch.delenv("MINNET_DATA")
    assert mnist_root() == mnist_root(os.path.expanduser("~/.cache/minnet/mnist"))


def test_uncompressed_files_in_the_cache_are_read_without_download(tmp_path, write_idx, mirror):
    images = np.full((3, 28, 28), 255, dtype=np.uint8)
    images[1] = 0
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([4, 0, 9], dtype=np.uint8))
    x, y = load_mnist("test", subset="full", root=tmp_path, mirrors=[mirror.url])
    assert mirror.requests == []
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(x[:, 0], images / 255)
    np.testing.assert_array_equal(y, [4, 0, 9])


def test_images_and_labels_of_different_lengths_are_refused(tmp_path, write_idx):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(2, dtype=np.uint8), gz=True)
    with pytest.raises(ValueError, match=r"3 images.*2 labels"):
        load_mnist("test", subset="full", root=tmp_path)


def test_swapped_images_and_labels_files_are_refused(tmp_path, write_idx):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros(2, dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*0x00000801.*0x00000803"):
        load_mnist("test", subset="full", root=tmp_path)


def test_download_arguments_are_validated(tmp_path):
    with pytest.raises(ValueError, match="no expected SHA-256"):
        download.download("unknown.gz", tmp_path, ["http://127.0.0.1:9/"], {})
    with pytest.raises(ValueError, match="mirrors is empty"):
        download.download("a.gz", tmp_path, [], {"a.gz": "0" * 64})


def test_gzip_and_plain_copies_decode_to_the_same_arrays(tmp_path, write_idx):
    labels = np.arange(10, dtype=np.uint8)
    images = np.arange(10 * 784, dtype=np.int64).astype(np.uint8).reshape(10, 28, 28)
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    plain.mkdir()
    packed.mkdir()
    write_idx(plain / "train-images-idx3-ubyte", images)
    write_idx(plain / "train-labels-idx1-ubyte", labels)
    write_idx(packed / "train-images-idx3-ubyte.gz", images, gz=True)
    write_idx(packed / "train-labels-idx1-ubyte.gz", labels, gz=True)
    for a, b in zip(load_mnist("train", "full", plain), load_mnist("train", "full", packed)):
        np.testing.assert_array_equal(a, b)
    assert gzip.decompress((packed / "train-labels-idx1-ubyte.gz").read_bytes()) == \
        (plain / "train-labels-idx1-ubyte").read_bytes()


@pytest.mark.parametrize("prefix", ["good", "nolength/good"])
def test_a_mirror_sending_more_than_max_bytes_fails_and_leaves_nothing(tmp_path, mirror,
                                                                       tiny_mnist, prefix):
    name = "t10k-images-idx3-ubyte.gz"
    size = (mirror.directory / "good" / name).stat().st_size
    root = tmp_path / "cache"
    with pytest.raises(OSError, match=rf"max_bytes={size - 1}"):
        download.download(name, root, [f"{mirror.url}/{prefix}/"], download.MNIST_SHA256,
                          max_bytes=size - 1)
    assert cached_names(root) == []
    assert download.download(name, root, [f"{mirror.url}/{prefix}/"], download.MNIST_SHA256,
                             max_bytes=size) == root / name
