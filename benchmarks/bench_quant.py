"""Quantization acceptance experiments on LeNet-5, and int8 vs fp32 inference speed.

    python benchmarks/bench_quant.py [--seeds 0 1 2] [--epochs 20] [--no-torch] [--speed-only]
                                     [--speed-epochs 1] [--rounds 5]
    python benchmarks/bench_quant.py --mixed [--seeds 0]

Recipe: LeNet-5 trained with ``minnet.train.fit`` on the 4,000 bundled training images (Adam
1e-3, batch 64, 20 epochs), once per seed and cached in a temporary directory for the run;
accuracy on the 1,000 test images. Then, from the cached float model:

- int8 PTQ: weights per-channel symmetric, activations per-tensor affine (uint8), min-max
  ranges from every training batch (63 of 64 images);
- weight-only per-channel PTQ at 4, 3, 2 bits with min-max and with MSE ranges;
- QAT with 2-bit weights and 8-bit activations: 5 epochs of Adam 3e-4 from the float model,
  LSQ weight steps (and the clipped STE with min-max ranges beside it);
- k-means weight sharing, 16 clusters per layer, then 3 epochs of Adam 1e-4 on the centroids
  and biases; storage with and without Huffman-coded indices;
- integer-only inference of the int8 model over the test set: NumPy reference vs Numba,
  agreement with the fake-quant simulation.

Mixed precision (``--mixed``, only this section, first seed): one-layer-at-a-time loss
sensitivity of LeNet-5 (weight-only, per-channel MSE ranges, 8/4/3/2 bits, on the first 1,000
training images), the greedy allocation at the weight budget of uniform 3-bit (and 2-bit)
weights, against uniform min-max and MSE weights of those widths.

Speed (``--speed-only`` runs only this; ``--speed-epochs`` trains the timed models, default 1:
the timings do not depend on the weights): LeNet-300-100 and LeNet-5, this project's fp32
forward (``no_grad``) vs the integer-only int8 model at batch 1 / 8 / 64 / 256, interleaved
rounds, medians; PyTorch's fp32 vs dynamic int8 (``quantize_dynamic``) on LeNet-300-100's
weights when importable. Then the routes for an exact int8 GEMM on the first layer's shape
(256 x 784 x 300): the portable int16 Numba loops, the AVX512-VNNI micro-kernel, float32 BLAS
on exact depth blocks, float64 BLAS, beside the fp32 sgemm itself (its GMAC/s is the peak used
for the physical bounds).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist
from minnet.kernels.backend import use_backend
from minnet.train import evaluate, fit
from optim.quant import (
    IntegerModel,
    calibrate,
    convert,
    greedy_bit_allocation,
    layer_sensitivity,
    layer_weight_counts,
    mixed_model_bytes,
    prepare,
    prepare_qat,
    quantize_mixed,
    quantized_model_bytes,
    share_weights,
    sharing_sizes,
    weight_bytes,
)
from timing import step_times


class FloatCache:
    """Trains each (architecture, seed) once and reloads fresh copies from a temp dir."""

    def __init__(self, directory: str, epochs: int, train):
        self.directory, self.epochs, self.train = directory, epochs, train

    def model(self, name: str, seed: int):
        path = os.path.join(self.directory, f"{name}_{seed}.npz")
        build = models.lenet5 if name == "lenet5" else models.lenet_300_100
        model = build()
        if not os.path.exists(path):
            minnet.manual_seed(seed)
            model = build()
            fit(model, optimizers.Adam(model.parameters(), lr=1e-3), self.train, self.epochs,
                batch_size=64, seed=seed, progress=False)
            minnet.save(model.state_dict(), path)
        model.load_state_dict(minnet.load(path))
        return model.eval()


def accuracy(model, test) -> float:
    return 100 * evaluate(model, test)["accuracy"]


def fine_tune(model, train, epochs: int, lr: float, seed: int):
    fit(model, optimizers.Adam(model.parameters(), lr=lr), train, epochs, batch_size=64,
        seed=seed, progress=False)
    return model


def lenet5_rows(cache: FloatCache, seed: int, train, test) -> tuple[dict, dict]:
    """Accuracy (and bytes) of every method for one seed, plus the integer-inference check."""
    x_train = train[0]
    float_model = cache.model("lenet5", seed)
    fp32_bytes = quantized_model_bytes(convert(prepare(float_model, weight_only=True)))["fp32"]
    rows = {("fp32", "32/32"): (accuracy(float_model, test), fp32_bytes)}

    int8 = convert(calibrate(prepare(float_model), x_train, batch_size=64, max_batches=100))
    rows[("PTQ min-max", "8/8")] = (accuracy(int8, test), quantized_model_bytes(int8)["total"])
    for bits in (4, 3, 2):
        for observer, label in (("minmax", "min-max"), ("mse", "MSE")):
            model = convert(prepare(float_model, weight_bits=bits, weight_observer=observer,
                                    weight_only=True))
            rows[(f"PTQ weight-only {label}", f"{bits}/32")] = (
                accuracy(model, test), quantized_model_bytes(model)["total"])
    for method in ("lsq", "ste"):
        qat = prepare_qat(cache.model("lenet5", seed), weight_bits=2, activation_bits=8,
                          weight_method=method)
        frozen = convert(fine_tune(qat, train, 5, 3e-4, seed))
        rows[(f"QAT {method.upper()} (5 epochs)", "2/8")] = (
            accuracy(frozen, test), quantized_model_bytes(frozen)["total"])
    shared = share_weights(cache.model("lenet5", seed), n_clusters=16)
    rows[("k-means sharing k=16", "4-bit idx")] = (accuracy(shared, test),
                                                   sharing_sizes(shared)["shared"] / 8)
    tuned = accuracy(fine_tune(shared, train, 3, 1e-4, seed), test)
    sizes = sharing_sizes(shared)
    rows[("k-means sharing k=16 + fine-tune", "4-bit idx")] = (tuned, sizes["shared"] / 8)
    rows[("  + Huffman-coded indices", "Huffman idx")] = (tuned, sizes["shared_huffman"] / 8)
    return rows, integer_check(int8, test)


def mixed_rows(cache: FloatCache, seed: int, train, test) -> tuple[list, dict]:
    """Greedy mixed precision vs uniform weights at the same weight budget (LeNet-5)."""
    model = cache.model("lenet5", seed)
    table = layer_sensitivity(model, train, bits=(8, 4, 3, 2))
    sizes = layer_weight_counts(model)
    fp32 = quantized_model_bytes(convert(prepare(model, weight_only=True)))["fp32"]
    rows = [("fp32", "32", accuracy(model, test), fp32)]
    for bits in (3, 2):
        for observer, label in (("minmax", "min-max"), ("mse", "MSE")):
            uniform = convert(prepare(model, weight_bits=bits, weight_observer=observer,
                                      weight_only=True))
            rows.append((f"uniform {label}", str(bits), accuracy(uniform, test),
                         quantized_model_bytes(uniform)["total"]))
        budget = weight_bytes(sizes, dict.fromkeys(sizes, bits))
        assignment = greedy_bit_allocation(table, sizes, budget)
        mixed = quantize_mixed(model, assignment)
        rows.append((f"greedy mixed MSE (budget: uniform {bits}-bit weights)",
                     "/".join(str(b) for b in assignment.values()), accuracy(mixed, test),
                     mixed_model_bytes(mixed)["total"]))
    return rows, table


def print_mixed_tables(rows, table, sizes) -> None:
    fp32 = rows[0][3]
    print("| method (LeNet-5, weight-only) | bits per layer | test accuracy % | drop pp | bytes "
          "| × fp32 |")
    print("|---|---|---|---|---|---|")
    for name, bits, acc, size in rows:
        print(f"| {name} | {bits} | {acc:.1f} | {rows[0][2] - acc:.1f} | {size:,} | "
              f"{size / fp32:.3f} |")
    widths = list(next(iter(table.values())))
    print("\n| layer | weights | " + " | ".join(f"loss increase at {b} bits" for b in widths)
          + " |")
    print("|---|---|" + "---|" * len(widths))
    for name, row in table.items():
        print(f"| {name} | {sizes[name]:,} | " + " | ".join(f"{row[b]:+.4f}" for b in widths)
              + " |")


def integer_check(int8, test) -> dict:
    x_test, y_test = test
    integer = IntegerModel(int8)
    codes = integer.quantize_input(x_test)
    outputs, seconds = {}, {}
    for backend in ("numpy", "numba"):
        with use_backend(backend):
            integer.forward_codes(codes[:8])  # compile / warm up
            start = time.perf_counter()
            outputs[backend] = integer.forward_codes(codes)
            seconds[backend] = time.perf_counter() - start
    with minnet.no_grad():
        simulated = int8(minnet.Tensor(x_test)).data.argmax(axis=1)
    predicted = outputs["numba"].argmax(axis=1)
    return {"bitwise": bool(np.array_equal(outputs["numpy"], outputs["numba"])),
            "agreement": 100 * float(np.mean(predicted == simulated)),
            "accuracy": 100 * float(np.mean(predicted == y_test)),
            "numpy_s": seconds["numpy"], "numba_s": seconds["numba"]}


def interleaved_medians(functions: dict, repeats: int, rounds: int) -> dict:
    """Median seconds of each function over ``rounds`` rounds of ``repeats`` calls, the
    functions taking turns every round, so drift of a shared machine hits all of them."""
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            times[name] += step_times(fn, repeats, warmup=1)
    return {name: statistics.median(t) for name, t in times.items()}


SPEED_BATCHES = (1, 8, 64, 256)


def timing_rows(cache: FloatCache, train, test, use_torch: bool, rounds: int) -> tuple[list, list]:
    x_all = test[0]
    rows, gemm = [], None
    for name in ("lenet300", "lenet5"):
        model = cache.model(name, 0)
        int8 = IntegerModel(convert(calibrate(prepare(model), train[0], max_batches=100)))
        if gemm is None:
            gemm = gemm_rows(int8, x_all[:256], rounds)
        for batch in SPEED_BATCHES:
            x = x_all[:batch]
            tensor = minnet.Tensor(x)

            def fp32():
                with minnet.no_grad():
                    model(tensor)

            repeats = max(4, 400 // batch)
            row = {"model": name, "batch": batch,
                   **interleaved_medians({"fp32": fp32, "int8": lambda: int8(x)}, repeats,
                                         rounds)}
            rows.append(row)
    if use_torch:  # after minnet's rows: PyTorch's threads then compete with nothing of ours
        for row in rows:
            if row["model"] == "lenet300":
                row.update(torch_timing(cache.model("lenet300", 0), x_all[:row["batch"]],
                                        max(4, 400 // row["batch"]), rounds))
    return rows, gemm


def gemm_rows(int8: IntegerModel, x: np.ndarray, rounds: int) -> list:
    """Exact int8 GEMM routes on the first layer's shape (requantization included for the
    integer kernels), beside float32 and float64 BLAS on the same codes."""
    from optim.quant import int_gemm, int_linear

    layer = next(op for op in int8.ops if hasattr(op, "w_q"))
    codes = int8.quantize_input(x).reshape(len(x), -1)
    args = (codes, layer.in_zero_point, layer.w_q, layer.bias_q, layer.M0, layer.shift,
            layer.out_zero_point, layer.qmin, layer.qmax, layer.relu)
    u, _ = int_gemm.unsigned_codes(codes, layer.in_zero_point)
    xf, wf = codes.astype(np.float32), np.ascontiguousarray(layer.w_q.astype(np.float32).T)
    xd, wd = codes.astype(np.float64), np.ascontiguousarray(layer.w_q.astype(np.float64).T)
    routes = {"int8 Numba int16 loops (portable, + requantize)":
              lambda: int_linear.linear_rows_int16(*args),
              "int8 float32 BLAS, exact depth blocks (int32 sums only)":
              lambda: int_gemm.gemm_u8s8_blas(u, layer.w_q),
              "float64 BLAS on the codes (exact; product only)": lambda: xd @ wd,
              "fp32 sgemm (BLAS; product only)": lambda: xf @ wf}
    if int_gemm.HAVE_VNNI:
        routes["int8 AVX512-VNNI micro-kernel (+ requantize)"] = (
            lambda: int_linear.linear_rows_vnni(*args))
    seconds = interleaved_medians(routes, 20, rounds)
    macs = codes.shape[0] * codes.shape[1] * layer.w_q.shape[0]
    return [(name, s, macs / s / 1e9) for name, s in seconds.items()]


def torch_timing(model, x, repeats: int, rounds: int) -> dict:
    import torch

    linears = [m for m in model.modules() if isinstance(m, minnet.nn.Linear)]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 300), torch.nn.ReLU(),
                              torch.nn.Linear(300, 100), torch.nn.ReLU(),
                              torch.nn.Linear(100, 10)).eval()
    for mine, theirs in zip(linears, [m for m in net if isinstance(m, torch.nn.Linear)]):
        theirs.weight.data = torch.from_numpy(mine.weight.data.copy())
        theirs.bias.data = torch.from_numpy(mine.bias.data.copy())
    dynamic = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        return interleaved_medians({"torch fp32": lambda: net(xt),
                                    "torch dynamic int8": lambda: dynamic(xt)}, repeats, rounds)


def mean_std(values) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{np.mean(values):.2f} ± {spread:.2f}"


def print_accuracy_tables(seeds, per_seed) -> None:
    rows = [r for r, _ in per_seed]
    base = [r[("fp32", "32/32")][0] for r in rows]
    fp32_bytes = rows[0][("fp32", "32/32")][1]
    print("| method (LeNet-5) | bits W/A | test accuracy % | drop pp (mean) | bytes | × fp32 "
          "| per seed |")
    print("|---|---|---|---|---|---|---|")
    for key in rows[0]:
        accs = [r[key][0] for r in rows]
        drop = np.mean([b - a for a, b in zip(accs, base)])
        size = rows[0][key][1]
        print(f"| {key[0]} | {key[1]} | {mean_std(accs)} | {drop:.2f} | {size:,.0f} | "
              f"{size / fp32_bytes:.3f} | {', '.join(f'{a:.1f}' for a in accs)} |")

    print("\n| seed | integer-only accuracy % | agrees with fake-quant % | Numba == NumPy "
          "bitwise | NumPy int64 s | Numba s |")
    print("|---|---|---|---|---|---|")
    for seed, (_, check) in zip(seeds, per_seed):
        print(f"| {seed} | {check['accuracy']:.1f} | {check['agreement']:.1f} | "
              f"{check['bitwise']} | {check['numpy_s']:.3f} | {check['numba_s']:.3f} |")


def print_speed_tables(timing, gemm) -> None:
    print("\nMedians of interleaved rounds.\n")
    print("| model | batch | minnet fp32 ms | integer-only int8 ms | int8 speed-up | "
          "torch fp32 ms | torch dynamic int8 ms | torch int8 speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for row in timing:
        torch_cells = ("| – | – | – |" if "torch fp32" not in row else
                       f"| {1e3 * row['torch fp32']:.3f} | {1e3 * row['torch dynamic int8']:.3f} "
                       f"| {row['torch fp32'] / row['torch dynamic int8']:.2f}× |")
        print(f"| {row['model']} | {row['batch']} | {1e3 * row['fp32']:.3f} | "
              f"{1e3 * row['int8']:.3f} | {row['fp32'] / row['int8']:.2f}× " + torch_cells)

    sgemm = next(s for name, s, _ in gemm if name.startswith("fp32 sgemm"))
    print("\n| first layer, 256×784×300 (60.2 M MACs) | ms | GMAC/s | vs fp32 sgemm |")
    print("|---|---|---|---|")
    for name, seconds, rate in gemm:
        print(f"| {name} | {1e3 * seconds:.3f} | {rate:.1f} | {sgemm / seconds:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--speed-only", action="store_true",
                        help="skip the LeNet-5 accuracy experiments")
    parser.add_argument("--speed-epochs", type=int, default=1,
                        help="training epochs of the models timed by --speed-only")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--mixed", action="store_true",
                        help="only the mixed-precision experiment (first seed)")
    args = parser.parse_args()
    use_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            use_torch = True
        except ImportError:
            pass
    train, test = load_mnist("train"), load_mnist("test")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numpy {np.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"seeds {args.seeds}, {args.epochs} epochs\n")
    started = time.perf_counter()
    if args.mixed:
        with tempfile.TemporaryDirectory() as directory:
            cache = FloatCache(directory, args.epochs, train)
            rows, table = mixed_rows(cache, args.seeds[0], train, test)
            sizes = layer_weight_counts(cache.model("lenet5", args.seeds[0]))
        print_mixed_tables(rows, table, sizes)
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
        return
    with tempfile.TemporaryDirectory() as directory:
        cache = FloatCache(directory, args.speed_epochs if args.speed_only else args.epochs,
                           train)
        per_seed = [] if args.speed_only else [lenet5_rows(cache, seed, train, test)
                                               for seed in args.seeds]
        timing, gemm = timing_rows(cache, train, test, use_torch, args.rounds)
    if per_seed:
        print_accuracy_tables(args.seeds, per_seed)
    print_speed_tables(timing, gemm)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
