"""DataLoader: coverage per epoch, batch sizes, reproducible shuffling, resumption, validation."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import io
from minnet.data import DataLoader

sizes = st.integers(0, 60)
batch_sizes = st.integers(1, 70)
seeds = st.integers(0, 2**63 - 1)


def epoch_indices(loader):
    """The row indices visited in one epoch, batch by batch (arrays hold their own index)."""
    return [batch[0].tolist() for batch in loader]


@given(n=sizes, batch_size=batch_sizes, shuffle=st.booleans(), seed=seeds)
def test_every_index_appears_exactly_once_per_epoch(n, batch_size, shuffle, seed):
    loader = DataLoader(np.arange(n), batch_size=batch_size, shuffle=shuffle, seed=seed)
    for _ in range(2):
        batches = epoch_indices(loader)
        assert len(batches) == len(loader) == math.ceil(n / batch_size)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert all(len(b) == batch_size for b in batches[:-1])


@given(n=sizes, batch_size=batch_sizes, shuffle=st.booleans(), seed=seeds)
def test_drop_last_keeps_only_full_batches(n, batch_size, shuffle, seed):
    loader = DataLoader(np.arange(n), batch_size=batch_size, shuffle=shuffle, seed=seed,
                        drop_last=True)
    batches = epoch_indices(loader)
    assert len(batches) == len(loader) == n // batch_size
    assert all(len(b) == batch_size for b in batches)
    visited = [i for b in batches for i in b]
    assert len(set(visited)) == len(visited) == n - n % batch_size


@given(n=sizes, batch_size=batch_sizes)
def test_without_shuffle_rows_come_in_order(n, batch_size):
    batches = epoch_indices(DataLoader(np.arange(n), batch_size=batch_size))
    assert [i for b in batches for i in b] == list(range(n))


@given(n=st.integers(1, 40), seed=seeds)
def test_batches_of_several_arrays_stay_aligned(n, seed):
    x = np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3)
    y = np.arange(n) * 10
    for xb, yb in DataLoader(x, y, batch_size=7, shuffle=True, seed=seed):
        assert xb.shape[1:] == (2, 3) and xb.dtype == np.float32
        np.testing.assert_array_equal(xb[:, 0, 0] / 6 * 10, yb)


@given(seed=seeds)
def test_same_seed_same_orders(seed):
    a = DataLoader(np.arange(50), batch_size=8, shuffle=True, seed=seed)
    b = DataLoader(np.arange(50), batch_size=8, shuffle=True, seed=seed)
    for _ in range(3):
        assert epoch_indices(a) == epoch_indices(b)


@given(seed=seeds)
def test_different_epochs_and_seeds_give_different_orders(seed):
    # 50! orders: two independent draws coincide with probability ~3e-65.
    loader = DataLoader(np.arange(50), batch_size=50, shuffle=True, seed=seed)
    orders = [epoch_indices(loader)[0] for _ in range(3)]
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    other = DataLoader(np.arange(50), batch_size=50, shuffle=True, seed=(seed + 1) % 2**63)
    assert epoch_indices(other)[0] != orders[0]


@given(seed=seeds, k=st.integers(0, 20))
def test_epoch_order_is_default_rng_of_seed_and_epoch(seed, k):
    loader = DataLoader(np.arange(30), batch_size=30, shuffle=True, seed=seed)
    loader.set_epoch(k)
    expected = np.random.default_rng([seed, k]).permutation(30)
    assert epoch_indices(loader)[0] == expected.tolist()
    np.testing.assert_array_equal(loader.order(k), expected)


def test_resume_from_state_dict_reproduces_the_next_epochs(tmp_path):
    run = DataLoader(np.arange(40), batch_size=16, shuffle=True)  # seed drawn from the OS
    for _ in range(2):
        epoch_indices(run)
    io.save(run.state_dict(), tmp_path / "loader.npz")
    later = [epoch_indices(run) for _ in range(2)]

    resumed = DataLoader(np.arange(40), batch_size=16, shuffle=True, seed=1)
    resumed.load_state_dict(io.load(tmp_path / "loader.npz"))
    assert resumed.seed == run.seed and resumed.epoch == 2
    assert [epoch_indices(resumed) for _ in range(2)] == later


def test_iter_starts_the_epoch_immediately():
    loader = DataLoader(np.arange(20), batch_size=5, shuffle=True, seed=3)
    first, second = iter(loader), iter(loader)
    assert loader.epoch == 2
    assert [b[0].tolist() for b in first] != [b[0].tolist() for b in second]


def test_batches_are_copies():
    data = np.arange(6)
    for (batch,) in DataLoader(data, batch_size=4):
        batch[:] = -1
    np.testing.assert_array_equal(data, np.arange(6))


@pytest.mark.parametrize("arrays, kwargs, error, match", [
    ((np.arange(3), np.arange(4)), {}, ValueError, r"same length.*\[3, 4\]"),
    ((), {}, ValueError, "at least one array"),
    ((np.float32(1.0),), {}, ValueError, r"arrays\[0\].*0-d"),
    ((np.arange(3),), {"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
    ((np.arange(3),), {"batch_size": 2.5}, TypeError, "batch_size"),
    ((np.arange(3),), {"batch_size": True}, TypeError, "batch_size"),
    ((np.arange(3),), {"seed": -1}, ValueError, "seed must be >= 0"),
])
def test_bad_arguments_are_refused(arrays, kwargs, error, match):
    with pytest.raises(error, match=match):
        DataLoader(*arrays, **kwargs)


def test_bad_epoch_and_state_are_refused():
    loader = DataLoader(np.arange(3))
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        loader.set_epoch(-1)
    with pytest.raises(ValueError, match="missing keys"):
        loader.load_state_dict({"seed": np.array(0)})


def test_random_subset_takes_the_same_rows_of_every_array_in_order():
    from minnet.data import random_subset

    x, y = np.arange(100) * 10, np.arange(100)
    xs, ys = random_subset(x, y, n=30, seed=1)
    assert len(ys) == 30 and np.array_equal(xs, ys * 10) and np.all(np.diff(ys) > 0)
    assert len(set(ys)) == 30 and not np.array_equal(ys, np.arange(30))
    assert random_subset(x, y, n=None)[1] is y
    with pytest.raises(ValueError, match="n must be"):
        random_subset(x, y, n=0)
    with pytest.raises(ValueError, match="equal lengths"):
        random_subset(x, y[:5], n=3)
