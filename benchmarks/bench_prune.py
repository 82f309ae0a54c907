"""Pruning experiments on the bundled MNIST split, and sparse/shrunk inference speed.

    python benchmarks/bench_prune.py [--seeds 0 1 2] [--sections iterative criteria filters speed]

Sections (each prints a markdown table):

- ``iterative``: LeNet-300-100 (Adam 1e-3, batch 64, 20 epochs), global magnitude pruning to
  50 / 75 / 87.5 / 92 / 95 % with 3 epochs of fine-tuning after each step (Han et al. 2015's
  prune-retrain loop) at two fine-tuning rates, and AGP's cubic schedule to 95 % with the same
  15 fine-tuning epochs; accuracy change against the dense model, mean and worst over seeds.
- ``criteria``: every unstructured criterion, one-shot global pruning of the trained
  LeNet-300-100 to 50 / 80 / 90 / 95 %, accuracy before and after 1 epoch of fine-tuning
  (after training SNIP ranks exactly as Taylor: both are |w g|).
- ``at_init``: SNIP's setting: prune the untrained network once (SNIP, magnitude, random),
  then train it 20 epochs.
- ``filters``: LeNet-5, 50 % of the filters of both conv layers removed (L1 norm, Taylor,
  FPGM), physically shrunk; output gap masked vs shrunk, accuracy after 5 fine-tuning epochs,
  inference time of the shrunk and dense models at batch 64.
- ``speed``: a 784→300 Linear with magnitude-pruned weights, minnet's dense layer against the
  CSR layer (Numba kernel), over sparsities and batch sizes; LeNet-300-100 at 95 %.
- ``bounds``: where the time of the 90 %-sparse layer at batch 1 goes: the raw dense GEMV, the
  raw CSR kernel, and one flat gathered dot product over all its non-zeros (the same loads and
  multiply-adds without the per-row structure, which Numba's LLVM vectorises with gathers).

Timings are the best of several interleaved repeats (the machine may be shared), with BLAS
limited to one thread unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS are set: the CSR kernels
are serial, so both sides of each comparison run on one core.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads its BLAS

import argparse  # noqa: E402
import copy  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import minnet  # noqa: E402
from minnet import models, nn, optimizers  # noqa: E402
from minnet.data import load_mnist  # noqa: E402
from minnet.train import evaluate, fit  # noqa: E402
from optim.prune import (SparseLinear, agp_sparsity, magnitude_mask, prune_channels, prune_model,
                         prune_rounds, remove_all, shrink, sparsify)  # noqa: E402
from minnet.kernels.csr import csr_matmul, to_csr  # noqa: E402

TRAIN, TEST = load_mnist("train"), load_mnist("test")
STEPS = [0.5, 0.75, 0.875, 0.92, 0.95]
CRITERIA = ["magnitude", "taylor", "snip", "obd_fisher", "obd_hutchinson", "influence", "random"]


def accuracy(model) -> float:
    return evaluate(model, TEST)["accuracy"]


def train(model, epochs: int, lr: float, seed: int):
    fit(model, optimizers.Adam(model.parameters(), lr=lr), TRAIN, epochs, batch_size=64, seed=seed,
        progress=False)
    return model


def trained(name: str, seed: int, cache={}):
    if (name, seed) not in cache:
        minnet.manual_seed(seed)
        model = models.lenet5() if name == "lenet5" else models.lenet_300_100()
        cache[name, seed] = train(model, 20, 1e-3, seed)
    return copy.deepcopy(cache[name, seed])


def scoring_data(seed: int, n: int):
    index = np.random.default_rng(seed).permutation(len(TRAIN[0]))[:n]
    return TRAIN[0][index], TRAIN[1][index]


def pp(values) -> str:
    return f"{100 * statistics.mean(values):+.2f} (worst {100 * min(values):+.2f})"


# ---- iterative pruning ------------------------------------------------------------------------

def iterative(seeds):
    recipes = {
        "Han steps, FT 3 ep @ 1e-3": (STEPS, 3, 1e-3),
        "Han steps, FT 3 ep @ 3e-4": (STEPS, 3, 3e-4),
        "AGP cubic 10 steps + 5, FT 1 ep @ 3e-4":
            ([agp_sparsity(k, 0.0, 0.95, 0, 10) for k in range(1, 11)] + [0.95] * 5, 1, 3e-4),
    }
    drops = {name: {} for name in recipes}
    base = []
    for seed in seeds:
        dense = trained("mlp", seed)
        base.append(accuracy(dense))
        for name, (sparsities, epochs, lr) in recipes.items():
            model = copy.deepcopy(dense)
            history = prune_rounds(
                model, sparsities,
                lambda m, k: train(m, epochs, lr, 1000 * seed + k), evaluate=accuracy)
            for s, acc in zip(history["sparsity"], history["metric"]):
                drops[name].setdefault(round(s, 3), []).append(acc - base[-1])
    print(f"\n### LeNet-300-100, iterative global magnitude pruning ({len(seeds)} seeds; "
          f"dense {100 * statistics.mean(base):.2f} %)\n")
    print("| schedule | sparsity | accuracy change, pp: mean (worst) |\n|---|---:|---:|")
    for name, by_sparsity in drops.items():
        shown = STEPS if "Han" in name else [0.95]
        for s in shown:
            values = by_sparsity[round(s, 3)][-len(seeds):]  # AGP: after its final epochs
            print(f"| {name} | {100 * s:.1f} % | {pp(values)} |")


# ---- criteria table -------------------------------------------------------------------------

def criteria(seeds):
    sparsities = [0.5, 0.8, 0.9, 0.95]
    rows = {(c, scope): {s: ([], []) for s in sparsities}
            for c, scope in [(c, "global") for c in CRITERIA] + [("magnitude", "layer")]}
    timing = {}
    for seed in seeds:
        dense = trained("mlp", seed)
        base = accuracy(dense)
        for (criterion, scope), by_s in rows.items():
            data = scoring_data(seed, 256 if criterion in ("obd_fisher", "influence") else 512)
            for s in sparsities:
                model = copy.deepcopy(dense)
                started = time.perf_counter()
                prune_model(model, s, criterion, scope=scope, data=data, rng=seed, n_samples=10)
                timing[criterion, scope] = time.perf_counter() - started
                by_s[s][0].append(accuracy(model) - base)
                train(model, 1, 3e-4, 500 + seed)
                by_s[s][1].append(accuracy(model) - base)
    print(f"\n### LeNet-300-100, one-shot pruning by criterion ({len(seeds)} seeds): accuracy "
          "change in pp, without fine-tuning / after 1 epoch @ 3e-4\n")
    print("| criterion | scope | " + " | ".join(f"{100 * s:.0f} %" for s in sparsities)
          + " | scoring time |\n|---|---|" + "---:|" * (len(sparsities) + 1))
    for (criterion, scope), by_s in rows.items():
        cells = [f"{100 * statistics.mean(a):+.1f} / {100 * statistics.mean(b):+.1f}"
                 for a, b in by_s.values()]
        print(f"| {criterion} | {scope} | " + " | ".join(cells)
              + f" | {timing[criterion, scope]:.2f} s |")


def at_init(seeds):
    sparsities = [0.5, 0.8, 0.9, 0.95]
    rows = {c: {s: [] for s in sparsities} for c in ("snip", "magnitude", "random")}
    for seed in seeds:
        base = accuracy(trained("mlp", seed))
        for criterion, by_s in rows.items():
            for s in sparsities:
                minnet.manual_seed(seed)
                model = models.lenet_300_100()
                prune_model(model, s, criterion, data=scoring_data(seed, 512), rng=seed)
                by_s[s].append(accuracy(train(model, 20, 1e-3, seed)) - base)
    print(f"\n### LeNet-300-100 pruned at initialisation, then trained 20 epochs ({len(seeds)} "
          "seeds): accuracy change against the dense model, pp\n")
    print("| criterion | " + " | ".join(f"{100 * s:.0f} %" for s in sparsities)
          + " |\n|---|" + "---:|" * len(sparsities))
    for criterion, by_s in rows.items():
        print(f"| {criterion} | " + " | ".join(f"{100 * statistics.mean(v):+.1f}"
                                               for v in by_s.values()) + " |")


# ---- filters --------------------------------------------------------------------------------

def best_time(fn, repeats: int = 15, number: int = 20) -> float:
    """Best (smallest) mean time of ``number`` calls over ``repeats`` rounds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def compare_speed(a, b, x, repeats: int = 15, number: int = 20) -> tuple[float, float]:
    """Interleaved best times of models ``a`` and ``b`` on ``x`` (eval mode, no graph)."""
    a.eval()
    b.eval()
    x = minnet.Tensor(x)
    ta = tb = float("inf")
    with minnet.no_grad():
        for _ in range(repeats):
            ta = min(ta, best_time(lambda: a(x), 1, number))
            tb = min(tb, best_time(lambda: b(x), 1, number))
    return ta, tb


def filters(seeds):
    results = {c: [] for c in ("l1", "taylor", "fpgm")}
    for seed in seeds:
        dense = trained("lenet5", seed)
        base = accuracy(dense)
        for criterion, rows in results.items():
            masked = copy.deepcopy(dense)
            prune_channels(masked, 0.5, criterion, layers=["0", "3"],
                           data=scoring_data(seed, 512), rng=seed)
            shrunk = shrink(masked)
            masked.eval()
            shrunk.eval()
            with minnet.no_grad():
                x = minnet.Tensor(TEST[0])
                gap = float(np.abs(masked(x).data - shrunk(x).data).max())
            before = accuracy(shrunk) - base
            train(shrunk, 5, 3e-4, 700 + seed)
            t_dense, t_shrunk = compare_speed(dense, shrunk, TEST[0][:64], repeats=5, number=10)
            rows.append((gap, before, accuracy(shrunk) - base, t_dense / t_shrunk,
                         shrunk[0].out_channels, shrunk[3].out_channels))
    print(f"\n### LeNet-5, 50 % of conv filters removed and shrunk ({len(seeds)} seeds)\n")
    print("| criterion | filters left | max \\|masked − shrunk\\| | change before FT "
          "| after 5 ep @ 3e-4 | shrunk speed-up at b64 |\n|---|---|---:|---:|---:|---:|")
    for criterion, rows in results.items():
        gap, before, after, speedup, c1, c2 = zip(*rows)
        print(f"| {criterion} | {c1[0]} + {c2[0]} | {max(gap):.1e} | {pp(before)} | {pp(after)} "
              f"| {statistics.mean(speedup):.2f}× |")


# ---- speed ----------------------------------------------------------------------------------

def speed(_seeds):
    minnet.manual_seed(0)
    source = nn.Linear(784, 300)
    print("\n### 784→300 Linear: dense (minnet) vs CSR (Numba), best of interleaved repeats\n")
    print("| sparsity | batch | dense µs | CSR µs | speed-up |\n|---:|---:|---:|---:|---:|")
    for s in (0.5, 0.8, 0.9, 0.95, 0.98):
        dense = copy.deepcopy(source)
        dense.weight.data *= magnitude_mask(dense.weight.data, s)
        sparse = SparseLinear(dense)
        for batch in (1, 4, 8, 64):
            x = np.random.default_rng(batch).random((batch, 784)).astype(np.float32)
            t_dense, t_sparse = compare_speed(dense, sparse, x, repeats=20, number=50)
            print(f"| {100 * s:.0f} % | {batch} | {1e6 * t_dense:.1f} | {1e6 * t_sparse:.1f} | "
                  f"{t_dense / t_sparse:.2f}× |")
    model = trained("mlp", 0)
    prune_model(model, 0.95)
    remove_all(model)  # a plain dense model holding the zeros, without the masking hooks
    fast = sparsify(model)
    print("\n### LeNet-300-100 pruned to 95 % (global magnitude): dense vs sparsify()\n")
    print("| batch | dense µs | sparse µs | speed-up |\n|---:|---:|---:|---:|")
    for batch in (1, 64):
        t_dense, t_sparse = compare_speed(model, fast, TEST[0][:batch], repeats=20, number=20)
        print(f"| {batch} | {1e6 * t_dense:.1f} | {1e6 * t_sparse:.1f} | "
              f"{t_dense / t_sparse:.2f}× |")


@numba.njit(fastmath=True, error_model="numpy")
def flat_gather_dot(x, data, columns):
    """sum_k data_k x[columns_k]: every product of the CSR kernel, one running sum."""
    total = data.dtype.type(0)
    for k in range(data.shape[0]):
        total += data[k] * x[columns[k]]
    return total


def bounds(_seeds):
    minnet.manual_seed(0)
    layer = nn.Linear(784, 300)
    weight = layer.weight.data * magnitude_mask(layer.weight.data, 0.9)
    csr = to_csr(weight)
    x = np.random.default_rng(1).random((1, 784)).astype(np.float32)
    columns = csr.indices.view(np.uint32)
    flat_gather_dot(x[0], csr.data, columns)
    csr_matmul(x, csr)
    runs = {"dense GEMV (x @ W.T)": lambda: x @ weight.T,
            "CSR kernel (csr_matmul)": lambda: csr_matmul(x, csr),
            "flat gathered dot over all non-zeros": lambda: flat_gather_dot(x[0], csr.data, columns)}
    times = {name: [] for name in runs}
    for _ in range(15):
        for name, fn in runs.items():
            times[name].append(best_time(fn, 1, 200))
    print(f"\n### 90 %-sparse 784→300 at batch 1 ({csr.data.size:,} non-zeros): median of 15 "
          "interleaved rounds\n")
    medians = {name: statistics.median(values) for name, values in times.items()}
    dense = medians["dense GEMV (x @ W.T)"]
    print("| computation | µs | speed-up over dense |\n|---|---:|---:|")
    for name, median in medians.items():
        print(f"| {name} | {1e6 * median:.1f} | {dense / median:.2f}× |")


SECTIONS = {"iterative": iterative, "criteria": criteria, "at_init": at_init, "filters": filters,
            "speed": speed, "bounds": bounds}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args()
    print(f"numpy {np.__version__}, numba {numba.__version__}, python "
          f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}")
    for section in args.sections:
        started = time.perf_counter()
        SECTIONS[section](args.seeds)
        print(f"\n({section}: {time.perf_counter() - started:.0f} s)")
