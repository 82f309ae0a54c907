"""Convolution and pooling kernels at LeNet-5 shapes: NumPy reference vs Numba fast path vs PyTorch.

    python benchmarks/bench_kernels.py [--repeats 30] [--warmup 5] [--threads 2] [--batches 64 1]

Each figure is the median of ``--repeats`` timed calls after ``--warmup`` untimed ones, in ms.
minnet is timed at the kernel level (``minnet.kernels``), as the ops call it; a backward pass is
what LeNet-5 training needs: conv1 only the weight and bias gradients (its input is the data),
conv2 also the input gradient. PyTorch (if importable, with ``torch.set_num_threads(--threads)``)
runs the same shapes through ``torch.nn.functional`` with autograd: forward, then
``backward(retain_graph=True)`` of a saved output. ``--threads`` also caps the BLAS threads of
NumPy (OPENBLAS_NUM_THREADS etc., set before NumPy is imported unless already set).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1])
    return parser.parse_args()


ARGS = parse_args()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))

import numpy as np  # noqa: E402  (after the thread caps)

from minnet.kernels import conv as KC  # noqa: E402
from minnet.kernels import pool as KP  # noqa: E402
from minnet.kernels.backend import HAVE_NUMBA, use_backend  # noqa: E402
from timing import step_times  # noqa: E402


def median_ms(fn, repeats: int, warmup: int) -> float:
    return 1e3 * statistics.median(step_times(fn, repeats, warmup))


# ---- cases: (name, minnet forward, minnet backward, torch forward, torch backward) --------


def conv_case(batch: int, c_in: int, size: int, c_out: int, padding: int, input_grad: bool, rng):
    x = rng.standard_normal((batch, c_in, size, size), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in, 5, 5), dtype=np.float32)
    b = rng.standard_normal(c_out, dtype=np.float32)
    geometry = ((1, 1), (padding, padding), (1, 1))
    y, cols = KC.conv2d_forward(x, w, *geometry, 1)
    g = rng.standard_normal(y.shape, dtype=np.float32)

    def forward():
        out, _ = KC.conv2d_forward(x, w, *geometry, 1)
        out += b.reshape(-1, 1, 1)

    def backward():
        if input_grad:
            KC.conv2d_input_grad(g, w, x.shape, *geometry, 1)
        KC.conv2d_weight_grad(g, cols, w.shape, 1)
        g.sum(axis=(0, 2, 3))

    def torch_pair(torch):
        tx = torch.from_numpy(x).requires_grad_(input_grad)
        tw, tb = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
        tg = torch.from_numpy(g)
        conv = lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=padding)  # noqa: E731
        ty = conv()
        return conv, lambda: ty.backward(tg, retain_graph=True)

    return forward, backward, torch_pair


def pool_case(batch: int, channels: int, size: int, rng):
    x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
    window = ((2, 2), (2, 2), (0, 0))
    y, idx = KP.max_pool2d_forward(x, *window)
    g = rng.standard_normal(y.shape, dtype=np.float32)

    def torch_pair(torch):
        tx = torch.from_numpy(x).requires_grad_()
        pool = lambda: torch.nn.functional.max_pool2d(tx, 2)  # noqa: E731
        ty = pool()
        return pool, lambda: ty.backward(torch.from_numpy(g), retain_graph=True)

    return (lambda: KP.max_pool2d_forward(x, *window),
            lambda: KP.max_pool2d_backward(g, idx, x.shape), torch_pair)


CASES = [
    ("conv1 1->6 5x5 pad 2, 28x28", lambda b, rng: conv_case(b, 1, 28, 6, 2, False, rng)),
    ("maxpool1 2x2, 6x28x28", lambda b, rng: pool_case(b, 6, 28, rng)),
    ("conv2 6->16 5x5, 14x14", lambda b, rng: conv_case(b, 6, 14, 16, 0, True, rng)),
    ("maxpool2 2x2, 16x10x10", lambda b, rng: pool_case(b, 16, 10, rng)),
]


def main() -> None:
    try:
        import torch
        torch.set_num_threads(ARGS.threads)
        torch_version = torch.__version__
    except ImportError:
        torch, torch_version = None, "not installed"
    backends = ["numpy", "numba"] if HAVE_NUMBA else ["numpy"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; python "
          f"{platform.python_version()}, numpy {np.__version__}, numba "
          f"{'installed' if HAVE_NUMBA else 'not installed'}, torch {torch_version}; threads "
          f"{ARGS.threads}; median of {ARGS.repeats} after {ARGS.warmup} warm-up; ms")
    print("| batch | kernel | pass | numpy | numba | torch | numba / torch |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for batch in ARGS.batches:
        for name, make in CASES:
            times = {}
            if torch is not None:
                times["torch"] = tuple(median_ms(fn, ARGS.repeats, ARGS.warmup)
                                       for fn in make(batch, rng)[2](torch))
            for backend in backends:
                with use_backend(backend):
                    forward, backward, _ = make(batch, rng)
                    times[backend] = (median_ms(forward, ARGS.repeats, ARGS.warmup),
                                      median_ms(backward, ARGS.repeats, ARGS.warmup))
            for k, label in enumerate(("forward", "backward")):
                cells = [f"{times[b][k]:.3f}" if b in times else "-" for b in ("numpy", "numba", "torch")]
                fast = times.get("numba", times["numpy"])[k]
                ratio = f"{fast / times['torch'][k]:.2f}" if "torch" in times else "-"
                print(f"| {batch} | {name} | {label} | {' | '.join(cells)} | {ratio} |")


if __name__ == "__main__":
    main()
