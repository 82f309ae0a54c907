"""Where a stage evaluates its candidates: ``"serial"`` (in the run's process), ``"processes"``
(a local process pool, one worker per core) or a Dask scheduler address such as
``"tcp://host:port"`` (a Dask cluster, for users who outgrow one machine;
``dask.distributed`` is imported only then). Any of them gives the same search history
(``optim.nas.search`` tells results in proposal order).
Tests: ``tests/optim/pipeline/test_pipeline_executor.py``.
"""
from __future__ import annotations

import contextlib
import os
import re
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Iterator

__all__ = ["executor_problem", "candidate_executor"]

_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc)://\S+$")  # Dask's scheduler address schemes


def executor_problem(spec: str) -> str | None:
    """Why ``spec`` names no executor, or None."""
    if spec in ("serial", "processes") or _ADDRESS.match(spec):
        return None
    return (f"must be 'serial', 'processes' or a Dask scheduler address 'tcp://host:port', "
            f"got {spec!r}")


@contextlib.contextmanager
def candidate_executor(spec: str) -> Iterator[Executor | None]:
    """The executor ``spec`` names, shut down (or disconnected) on exit; None for serial."""
    problem = executor_problem(spec)
    if problem:
        raise ValueError(f"executor {problem}")
    if spec == "serial":
        yield None
    elif spec == "processes":
        with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
            yield pool
    else:
        from distributed import Client
        with Client(spec) as client:
            yield client.get_executor()
