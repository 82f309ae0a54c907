"""The global random generator behind dropout and initialisation, and its saved state.

``manual_seed(seed)`` makes runs reproducible; ``get_rng_state`` / ``set_rng_state`` move the
state through a uint8 array so it can live in an npz checkpoint.
"""
from __future__ import annotations

import json

import numpy as np

_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Reseed the global generator (``np.random.default_rng(seed)``)."""
    global _rng
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _rng = np.random.default_rng(int(seed))


def get_rng() -> np.random.Generator:
    """The global generator."""
    return _rng


def get_rng_state() -> np.ndarray:
    """The generator's state as a uint8 array (UTF-8 JSON of ``bit_generator.state``)."""
    return np.frombuffer(json.dumps(_rng.bit_generator.state).encode(), dtype=np.uint8).copy()


def set_rng_state(state: np.ndarray) -> None:
    """Restore a state returned by ``get_rng_state``."""
    state = np.asarray(state)
    if state.dtype != np.uint8 or state.ndim != 1:
        raise ValueError(f"state must be a 1-D uint8 array, got {state.dtype} of shape {state.shape}")
    decoded = json.loads(state.tobytes().decode())
    generator = getattr(np.random, decoded["bit_generator"])()
    generator.state = decoded
    global _rng
    _rng = np.random.Generator(generator)
