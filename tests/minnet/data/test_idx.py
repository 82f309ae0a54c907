"""IDX reader: agreement with the format spec, and clear errors for damaged files."""
import gzip
import re
import struct

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
idx_arrays = st.sampled_from(IDX_DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5)))


@given(array=idx_arrays, gz=st.booleans())
def test_reads_back_what_the_spec_encodes(tmp_path_factory, encode_idx, array, gz):
    path = tmp_path_factory.mktemp("idx") / "data.idx"
    data = encode_idx(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    got = read_idx(path)
    assert got.dtype == array.dtype and got.dtype.isnative
    assert got.shape == array.shape
    np.testing.assert_array_equal(got, array)


def test_mnist_magic_numbers_are_those_of_ubyte_images_and_labels(tmp_path, write_idx):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / "images", images)
    write_idx(tmp_path / "labels", np.array([3, 7], dtype=np.uint8))
    assert (tmp_path / "images").read_bytes()[:4] == struct.pack(">I", IMAGES_MAGIC)
    assert (tmp_path / "labels").read_bytes()[:4] == struct.pack(">I", LABELS_MAGIC)
    np.testing.assert_array_equal(read_idx(tmp_path / "images", magic=IMAGES_MAGIC), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels", magic=LABELS_MAGIC), [3, 7])


@pytest.mark.parametrize("magic", [0x12340803, 0x00010801, 0x00000A01, 0x00000800, 0x00000000])
def test_malformed_magic_is_refused_naming_file_and_magic(tmp_path, magic):
    path = tmp_path / "bad-magic"
    path.write_bytes(struct.pack(">II", magic, 1) + b"\x00")
    with pytest.raises(ValueError, match=rf"bad-magic.*0x{magic:08X}"):
        read_idx(path)


def test_unexpected_magic_is_refused(tmp_path, write_idx):
    write_idx(tmp_path / "labels", np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels.*0x00000801, expected 0x00000803"):
        read_idx(tmp_path / "labels", magic=IMAGES_MAGIC)


@given(array=idx_arrays.filter(lambda a: a.size > 0), data=st.data(), gz=st.booleans())
def test_truncated_file_names_expected_and_actual_size(tmp_path_factory, encode_idx, array, data,
                                                      gz):
    full = encode_idx(array)
    cut = data.draw(st.integers(4 + 4 * array.ndim, len(full) - 1), label="cut")
    path = tmp_path_factory.mktemp("idx") / "short.idx"
    path.write_bytes(gzip.compress(full[:cut]) if gz else full[:cut])
    with pytest.raises(ValueError, match="truncated") as info:
        read_idx(path)
    message = str(info.value)
    assert "short.idx" in message
    assert re.search(rf"\b{len(full)}\b.*\b{cut}\b", message)


@pytest.mark.parametrize("cut", [0, 2, 6])
def test_file_shorter_than_its_header_is_truncated(tmp_path, encode_idx, cut):
    path = tmp_path / "tiny"
    path.write_bytes(encode_idx(np.zeros((2, 3), dtype=np.uint8))[:cut])
    with pytest.raises(ValueError, match=rf"tiny.*truncated.*\b{cut}\b"):
        read_idx(path)


def test_trailing_bytes_are_refused(tmp_path, encode_idx):
    path = tmp_path / "long"
    path.write_bytes(encode_idx(np.zeros(3, dtype=np.uint8)) + b"\x01")
    with pytest.raises(ValueError, match=r"long.*trailing.*\b11\b.*\b12\b"):
        read_idx(path)


def test_truncated_gzip_stream_is_refused(tmp_path, encode_idx):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(encode_idx(np.ones((5, 4), dtype=np.uint8)))[:-10])
    with pytest.raises(ValueError, match="cut.gz"):
        read_idx(path)
