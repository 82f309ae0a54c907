"""minnet.io: npz round trip, atomic writes, no pickle."""
import os
import stat
import zipfile

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import io, nn

dtypes = st.sampled_from([np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_])
arrays = dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4,
                                                                    min_side=0, max_side=4)))
names = st.text(st.characters(codec="ascii", exclude_characters="/\\\x00"), min_size=1,
                max_size=12)


def assert_same_arrays(got, expected):
    assert set(got) == set(expected)
    for key, value in expected.items():
        value = np.asarray(value)
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value)


def leftover_temp_files(directory):
    return [name for name in os.listdir(directory) if name.endswith(".tmp")]


@given(st.dictionaries(names, arrays, max_size=5))
def test_round_trip_preserves_names_dtypes_shapes_and_values(tmp_path_factory, state):
    path = tmp_path_factory.mktemp("ckpt") / "state.npz"
    io.save(state, path)
    assert_same_arrays(io.load(path), state)
    assert leftover_temp_files(path.parent) == []


def test_round_trip_of_zero_d_and_nonfinite_values(tmp_path):
    state = {"step": np.array(7), "lr": np.float64(0.1), "flag": np.True_,
             "w": np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float32)}
    io.save(state, tmp_path / "a.npz")
    got = io.load(tmp_path / "a.npz")
    assert_same_arrays(got, state)
    assert np.signbit(got["w"][3])


def test_keys_that_collide_with_np_savez_arguments(tmp_path):
    state = {"file": np.ones(2), "allow_pickle": np.zeros(3), "fc1.weight": np.eye(2)}
    io.save(state, tmp_path / "a.npz")
    assert_same_arrays(io.load(tmp_path / "a.npz"), state)


def test_archive_is_readable_by_numpy_and_uncompressed_by_default(tmp_path):
    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    io.save(state, tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["a"], state["a"])
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert [m.compress_type for m in archive.infolist()] == [zipfile.ZIP_STORED]
    io.save(state, tmp_path / "c.npz", compress=True)
    with zipfile.ZipFile(tmp_path / "c.npz") as archive:
        assert [m.compress_type for m in archive.infolist()] == [zipfile.ZIP_DEFLATED]
    assert_same_arrays(io.load(tmp_path / "c.npz"), state)


def test_same_arrays_give_the_same_bytes(tmp_path):
    state = {"a": np.arange(5), "b": np.ones((2, 2), dtype=np.float32)}
    io.save(state, tmp_path / "one.npz")
    io.save(state, tmp_path / "two.npz")
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()


def test_path_is_used_exactly(tmp_path):
    io.save({"a": np.ones(1)}, tmp_path / "checkpoint")
    io.save({"a": np.ones(1)}, tmp_path / "ckpt.bin")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt.bin"]


def test_saved_file_gets_the_permissions_of_a_normally_created_file(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    io.save({"a": np.ones(1)}, tmp_path / "a.npz")
    mode = lambda name: stat.S_IMODE(os.stat(tmp_path / name).st_mode)
    assert mode("a.npz") == mode("plain")


def test_object_with_state_dict_is_saved_through_it(tmp_path):
    class Holder:
        def state_dict(self):
            return {"fc.weight": np.full((2, 3), 0.5, dtype=np.float32), "fc.bias": np.zeros(2)}

    io.save(Holder(), tmp_path / "m.npz")
    assert_same_arrays(io.load(tmp_path / "m.npz"), Holder().state_dict())


def test_module_state_dict_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    io.save(model, tmp_path / "m.npz")
    assert_same_arrays(io.load(tmp_path / "m.npz"), model.state_dict())


def test_overwrite_replaces_existing_file(tmp_path):
    io.save({"a": np.ones(3)}, tmp_path / "a.npz")
    io.save({"b": np.zeros(2)}, tmp_path / "a.npz")
    assert_same_arrays(io.load(tmp_path / "a.npz"), {"b": np.zeros(2)})
    assert leftover_temp_files(tmp_path) == []


def test_interrupted_write_leaves_existing_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "a.npz"
    original = {"w": np.arange(4, dtype=np.float32)}
    io.save(original, path)
    before = path.read_bytes()

    real_write_array = np.lib.format.write_array
    calls = []

    def fail_on_second_member(fp, array, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"partial")
            raise KeyboardInterrupt("simulated interruption")
        real_write_array(fp, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", fail_on_second_member)
    with pytest.raises(KeyboardInterrupt):
        io.save({"x": np.ones(100), "y": np.zeros(100), "z": np.ones(3)}, path)
    assert len(calls) == 2
    assert path.read_bytes() == before
    assert leftover_temp_files(tmp_path) == []
    monkeypatch.undo()
    assert_same_arrays(io.load(path), original)


def test_object_values_are_refused_naming_the_key(tmp_path):
    with pytest.raises(TypeError, match="'bad'"):
        io.save({"good": np.ones(2), "bad": np.array([{"a": 1}], dtype=object)},
                tmp_path / "a.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("obj, match", [([np.ones(2)], "mapping"), ({1: np.ones(2)}, "keys")])
def test_non_mapping_or_non_string_keys_are_refused(tmp_path, obj, match):
    with pytest.raises(TypeError, match=match):
        io.save(obj, tmp_path / "a.npz")


def test_file_with_object_array_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, ok=np.ones(2), payload=np.array([None, "x"], dtype=object))
    with pytest.raises(ValueError, match=r"'payload'.*object array") as info:
        io.load(path)
    assert str(path) in str(info.value)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        io.load(path)


def test_non_archives_are_refused(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not an archive at all")
    with pytest.raises(ValueError, match="junk.npz"):
        io.load(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(ValueError, match="single .npy"):
        io.load(tmp_path / "single.npy")
