"""The one dispatch point between NumPy reference kernels and their Numba fast paths.

``MINNET_BACKEND=numpy|numba`` (default ``numba``) picks the backend at import time;
``use_backend`` switches it temporarily. If Numba is not installed, the NumPy backend is used
and a single warning says so.
"""
from __future__ import annotations

import contextlib
import os
import warnings

_VALID = ("numpy", "numba")

try:
    import numba  # noqa: F401

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False


def _initial_backend() -> str:
    requested = os.environ.get("MINNET_BACKEND", "numba").strip().lower()
    if requested not in _VALID:
        raise ValueError(f"MINNET_BACKEND must be one of {_VALID}, got {requested!r}")
    if requested == "numba" and not HAVE_NUMBA:
        warnings.warn("numba is not installed; minnet uses its NumPy kernels", RuntimeWarning,
                      stacklevel=2)
        return "numpy"
    return requested


_backend = _initial_backend()


def get_backend() -> str:
    """Name of the active kernel backend: ``"numpy"`` or ``"numba"``."""
    return _backend


def set_backend(name: str) -> None:
    """Select the kernel backend for all later calls."""
    global _backend
    if name not in _VALID:
        raise ValueError(f"backend must be one of {_VALID}, got {name!r}")
    if name == "numba" and not HAVE_NUMBA:
        raise ValueError("backend 'numba' requested but numba is not installed")
    _backend = name


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run the block with backend ``name``, then restore the previous one."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def dispatch(numpy_impl, numba_impl):
    """Return a function that calls ``numba_impl`` under the Numba backend, else ``numpy_impl``."""
    def kernel(*args, **kwargs):
        impl = numba_impl if _backend == "numba" else numpy_impl
        return impl(*args, **kwargs)

    kernel.__name__ = numpy_impl.__name__.removesuffix("_numpy")
    kernel.__doc__ = numpy_impl.__doc__
    kernel.numpy = numpy_impl
    kernel.numba = numba_impl
    return kernel


def jit(*args, **kwargs):
    """``numba.njit(cache=True, error_model="numpy", ...)`` when Numba is installed; otherwise
    the function unchanged. NumPy's error model (x/0 gives inf or nan, no exception) matches the
    NumPy references and lets loops with divisions vectorize. Kernels stay single-threaded:
    Numba's parallel threads and OpenBLAS's both spin-wait, and on two cores they stall each
    other (a parallel im2col before a matmul ran 8x slower).

    Use as ``@jit`` or ``@jit(parallel=True)``. Without Numba the decorated function is plain
    Python; it is never dispatched to, because the backend is then ``numpy``.
    """
    if args and callable(args[0]) and len(args) == 1 and not kwargs:
        return jit()(args[0])
    if not HAVE_NUMBA:
        return lambda fn: fn
    import numba

    kwargs.setdefault("cache", True)
    kwargs.setdefault("error_model", "numpy")
    return numba.njit(*args, **kwargs)
