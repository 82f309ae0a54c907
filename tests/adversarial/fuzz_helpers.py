"""Run a fuzzer (or any check) in a fresh interpreter, so that a crash fails a test instead of
killing pytest, and cap the child's address space so that an allocation beyond the cap fails
with ``MemoryError`` instead of swapping the machine.

``run_isolated(path, name)`` loads the Python file ``path`` in a child process (its imports
happen first, unlimited), then sets ``RLIMIT_AS`` to the child's current virtual size plus
``headroom`` bytes and calls the module-level function ``name()``. ``check_isolated`` does the
same and fails the calling test — naming the signal for a crash (SIGSEGV, SIGBUS, ...), the
timeout, or the child's exit code — with the child's output attached. A fuzzer is then a plain
function holding a ``@given`` test that it calls itself; hypothesis reports its falsifying
example on the child's stderr.

Tests of the helper itself (with the two child functions at the end of this file):
``tests/adversarial/test_minnet_files.py::test_isolated_runner_reports_a_segfault`` and
``::test_isolated_runner_caps_the_address_space``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Enough for a fuzzer's own work on small files; far below what a size field read as
# trusted (gigabytes) would make a reader allocate.
DEFAULT_HEADROOM = 256 << 20

_CHILD = textwrap.dedent("""
    import faulthandler, importlib.util, resource, sys
    faulthandler.enable()
    path, name, headroom = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spec = importlib.util.spec_from_file_location("isolated_target", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + headroom, size + headroom))
    getattr(module, name)()
""")


def run_isolated(path: str | os.PathLike, name: str, *, headroom: int = DEFAULT_HEADROOM,
                 timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Call ``name()`` from the file ``path`` in a child interpreter whose address space is
    capped at its size after the imports plus ``headroom`` bytes; return the finished process
    (``returncode`` < 0 means killed by that signal). Raises ``subprocess.TimeoutExpired``."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the address-space cap reads /proc/self/status (Linux only)")
    directory = Path(path).resolve().parent
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(directory), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", _CHILD, str(path), name, str(headroom)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=directory)


def describe(result: subprocess.CompletedProcess) -> str:
    """How the child ended, and its output (the tail of each stream)."""
    if result.returncode < 0:
        how = f"killed by {signal.Signals(-result.returncode).name}"
    else:
        how = f"exit code {result.returncode}"
    return (f"child {how}\n--- stdout ---\n{result.stdout[-4000:]}\n"
            f"--- stderr ---\n{result.stderr[-8000:]}")


def check_isolated(path: str | os.PathLike, name: str, *, headroom: int = DEFAULT_HEADROOM,
                   timeout: float = 120.0) -> subprocess.CompletedProcess:
    """``run_isolated``, failing the calling test unless the child exited with code 0."""
    try:
        result = run_isolated(path, name, headroom=headroom, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{name} in {path} did not finish within {timeout} s\n{err.stderr or ''}")
    if result.returncode != 0:
        pytest.fail(f"{name} in {path}: {describe(result)}")
    return result


# ---- children for the helper's own tests (this file imports little, so they start fast) ---
def crash_with_a_segfault():
    """Read address 0: the child dies by SIGSEGV."""
    import ctypes
    ctypes.string_at(0)


def allocate_a_gibibyte():
    """Ask for 1 GiB at once: beyond a smaller headroom this is a MemoryError."""
    bytearray(1 << 30)
