"""Test accuracy of LeNet-300-100 and LeNet-5 on the bundled split, minnet and PyTorch.

    python benchmarks/bench_accuracy.py [--seeds 0 1 2] [--epochs 20] [--no-torch]

Recipe (the foundation issue's): train on the 4,000 training images, Adam 1e-3, batch 64,
20 epochs, report accuracy on the 1,000 test images, mean ± std over seeds. PyTorch, when
importable, trains the same architectures with its own default initialisation and shuffling.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import minnet
from minnet import models, optimizers
from minnet.data import load_mnist
from minnet.train import evaluate, fit
from torch_reference import torch_model


def minnet_accuracy(name: str, seed: int, epochs: int, data) -> float:
    (x, y), test = data
    minnet.manual_seed(seed)
    model = models.lenet5() if name == "lenet5" else models.lenet_300_100()
    fit(model, optimizers.Adam(model.parameters(), lr=1e-3), (x, y), epochs, batch_size=64,
        seed=seed, progress=False)
    return evaluate(model, test)["accuracy"]


def torch_accuracy(name: str, seed: int, epochs: int, data) -> float:
    import torch

    (x, y), (xt, yt) = data
    torch.manual_seed(seed)
    model = torch_model(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        predictions = model(torch.from_numpy(xt)).argmax(1).numpy()
    return float((predictions == yt).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    data = (load_mnist("train"), load_mnist("test"))
    runners = {"minnet": minnet_accuracy}
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            runners["torch"] = torch_accuracy
        except ImportError:
            pass
    print(f"| model | framework | accuracy % (mean ± std over seeds {args.seeds}) | per seed | seconds |")
    print("|---|---|---|---|---|")
    for name in ("lenet300", "lenet5"):
        for framework, run in runners.items():
            start = time.perf_counter()
            accs = [100 * run(name, seed, args.epochs, data) for seed in args.seeds]
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(f"| {name} | {framework} | {np.mean(accs):.2f} ± {spread:.2f} | "
                  f"{', '.join(f'{a:.1f}' for a in accs)} | {time.perf_counter() - start:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
