"""Mini-batches over equal-length arrays, with reproducible per-epoch shuffling.

The order of epoch ``k`` is a pure function of ``(seed, k)``:

    order_k = arange(n)                                           if not shuffle
    order_k = np.random.default_rng([seed, k]).permutation(n)     if shuffle

(``default_rng([seed, k])`` seeds a PCG64 through ``SeedSequence(entropy=[seed, k])``, so each
epoch gets an independent stream.) A resumed run therefore reproduces epoch ``k`` exactly by
restoring ``seed`` and ``epoch`` — ``state_dict()`` / ``load_state_dict()`` or ``set_epoch(k)``
— without replaying earlier epochs.
"""
from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Mapping

import numpy as np

__all__ = ["DataLoader"]


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class DataLoader:
    """Iterate over tuples of batches ``(a[idx], b[idx], ...)`` of equal-length arrays.

    Parameters
    ----------
    *arrays : one or more arrays with the same length along axis 0.
    batch_size : rows per batch (the last batch may be smaller unless ``drop_last``).
    shuffle : visit rows in a new random order each epoch (see the module docstring).
    seed : non-negative integer for the shuffling; ``None`` draws one from the OS, readable
        afterwards as ``.seed``.
    drop_last : drop a final batch smaller than ``batch_size``.

    Each iteration (``iter(loader)``) is one epoch and advances ``epoch`` by one. Batches are
    copies, never views of the input arrays. Tested in ``tests/minnet/data/test_loader.py``.

    >>> loader = DataLoader(np.arange(10), batch_size=4, shuffle=True, seed=0)
    >>> [len(xb) for (xb,) in loader]
    [4, 4, 2]
    """

    def __init__(self, *arrays, batch_size: int = 64, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False) -> None:
        if not arrays:
            raise ValueError("DataLoader needs at least one array")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        for i, a in enumerate(self.arrays):
            if a.ndim == 0:
                raise ValueError(f"arrays[{i}] must have at least one dimension, got a 0-d array")
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) > 1:
            raise ValueError(f"arrays must have the same length along axis 0, "
                             f"got lengths {lengths}")
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = secrets.randbits(63) if seed is None else _check_int(seed, "seed", 0)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.arrays[0])

    def __len__(self) -> int:
        """Batches per epoch: ``floor(n / b)`` with ``drop_last``, else ``ceil(n / b)``."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Row indices of epoch ``epoch`` in visiting order (a permutation of ``arange(n)``)."""
        epoch = _check_int(epoch, "epoch", 0)
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``."""
        self.epoch = _check_int(epoch, "epoch", 0)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        order = self.order(self.epoch)
        self.epoch += 1
        return self._batches(order)

    def _batches(self, order: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
        for k in range(len(self)):
            index = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield tuple(a[index] for a in self.arrays)

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{"seed", "epoch"}`` as 0-d int64 arrays (so it can go into an npz checkpoint)."""
        return {"seed": np.array(self.seed, dtype=np.int64),
                "epoch": np.array(self.epoch, dtype=np.int64)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore ``seed`` and ``epoch`` from ``state_dict()``: the next epoch is the saved one."""
        missing = {"seed", "epoch"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        self.seed = _check_int(int(state["seed"]), "state['seed']", 0)
        self.set_epoch(int(state["epoch"]))

    def __repr__(self) -> str:
        return (f"DataLoader(n={self.num_samples}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")
