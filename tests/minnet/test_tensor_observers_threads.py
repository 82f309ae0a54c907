"""Op observers are per thread: a tracer in one thread does not record another thread's ops
(a Dask worker with several threads traces architectures at once)."""
import threading

import numpy as np

import minnet
from minnet.tensor import observe_ops


def test_an_observer_sees_only_its_own_threads_ops():
    seen, started, done = [], threading.Event(), threading.Event()

    def other_thread():
        started.wait()
        for _ in range(50):
            minnet.Tensor(np.ones(3)) + 1.0
        done.set()

    worker = threading.Thread(target=other_thread)
    worker.start()
    with observe_ops(lambda fn, inputs, attrs, out: seen.append(fn.__name__)):
        started.set()
        done.wait()
        minnet.Tensor(np.ones(3)) * 2.0
    worker.join()
    assert seen == ["Mul"]
