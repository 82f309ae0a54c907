"""The global random generator behind dropout and initialisation, and its saved state.

``manual_seed(seed)`` makes runs reproducible; ``get_rng_state`` / ``set_rng_state`` move the
state through a uint8 array so it can live in an npz checkpoint. A saved state is untrusted
input: ``decode_rng_state`` accepts only the bit generators in ``BIT_GENERATORS`` (looked up
in that table, never by a name taken from the file) and checks every field's type and range.
"""
from __future__ import annotations

import json

import numpy as np

__all__ = ["manual_seed", "get_rng", "get_rng_state", "set_rng_state", "decode_rng_state",
           "BIT_GENERATORS"]

_rng = np.random.default_rng()

#: The bit generators a saved state may name: ``np.random.default_rng`` makes PCG64.
BIT_GENERATORS: dict[str, type[np.random.BitGenerator]] = {"PCG64": np.random.PCG64}

# Saved states are small (the PCG64 JSON is about 150 bytes); anything far longer is refused
# before it is parsed.
_MAX_STATE_BYTES = 1024


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


def _is_uint(value, bits: int) -> bool:
    return type(value) is int and 0 <= value < 1 << bits


def decode_rng_state(state: np.ndarray) -> np.random.Generator:
    """A new ``np.random.Generator`` in the state ``state`` (from ``get_rng_state``), checked.

    The state must be a 1-D uint8 array of at most 1 KiB holding UTF-8 JSON of the form
    ``{"bit_generator": "PCG64", "state": {"state": s, "inc": i}, "has_uint32": h,
    "uinteger": u}`` with :math:`0 \\le s, i < 2^{128}`, :math:`h \\in \\{0, 1\\}`,
    :math:`0 \\le u < 2^{32}` (NumPy's ``PCG64.state`` layout). Raises ``ValueError`` naming
    what is wrong otherwise. Test:
    ``tests/adversarial/test_minnet_state.py::test_bad_rng_state_is_refused``.
    """
    state = np.asarray(state)
    if state.dtype != np.uint8 or state.ndim != 1:
        raise ValueError(f"rng state must be a 1-D uint8 array, got {state.dtype} of shape "
                         f"{state.shape}")
    if state.size > _MAX_STATE_BYTES:
        raise ValueError(f"rng state is {state.size} bytes long, more than {_MAX_STATE_BYTES}")
    try:
        decoded = json.loads(state.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"rng state is not UTF-8 JSON: {err}") from err
    expected = {"bit_generator", "state", "has_uint32", "uinteger"}
    if not isinstance(decoded, dict) or set(decoded) != expected:
        raise ValueError(f"rng state must be a JSON object with keys {sorted(expected)}, "
                         f"got {decoded!r:.200}")
    name = decoded["bit_generator"]
    if not isinstance(name, str) or name not in BIT_GENERATORS:
        raise ValueError(f"rng state names the bit generator {name!r:.100}; only "
                         f"{sorted(BIT_GENERATORS)} are accepted")
    inner = decoded["state"]
    if not (isinstance(inner, dict) and set(inner) == {"state", "inc"}
            and _is_uint(inner["state"], 128) and _is_uint(inner["inc"], 128)):
        raise ValueError(f"rng state field 'state' must be {{'state': s, 'inc': i}} with "
                         f"integers 0 <= s, i < 2**128, got {inner!r:.200}")
    if decoded["has_uint32"] not in (0, 1) or type(decoded["has_uint32"]) is not int:
        raise ValueError(f"rng state field 'has_uint32' must be 0 or 1, got "
                         f"{decoded['has_uint32']!r:.100}")
    if not _is_uint(decoded["uinteger"], 32):
        raise ValueError(f"rng state field 'uinteger' must be an integer in [0, 2**32), got "
                         f"{decoded['uinteger']!r:.100}")
    bit_generator = BIT_GENERATORS[name]()
    bit_generator.state = decoded
    return np.random.Generator(bit_generator)


def set_rng_state(state: np.ndarray) -> None:
    """Restore a state returned by ``get_rng_state`` (checked by ``decode_rng_state`` first:
    on a bad state the global generator is left as it was)."""
    global _rng
    _rng = decode_rng_state(state)
