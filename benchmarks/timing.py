"""Wall-clock timing shared by the benchmark scripts."""
from __future__ import annotations

import time


def step_times(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times
