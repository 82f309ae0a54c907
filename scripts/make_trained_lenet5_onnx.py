"""Write ``examples/lenet5_trained.onnx``: the fixtures' PyTorch LeNet-5 trained on the bundled
MNIST-5k (10 epochs, Adam 1e-3, batch 64, seed 0) and exported by the TorchScript exporter with
a dynamic batch axis — a model from outside the project for ``examples/imported.toml``.
PyTorch is needed only here. Run from the repository root:

    python scripts/make_trained_lenet5_onnx.py [--out examples/lenet5_trained.onnx]
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from make_onnx_fixtures import LeNet5, export
from minnet.data import load_mnist
from minnet.io import atomic_write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/lenet5_trained.onnx")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x, y = (torch.from_numpy(a) for a in load_mnist("train"))
    x_test, y_test = (torch.from_numpy(a) for a in load_mnist("test"))
    model = LeNet5()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(y)).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    data = export(model, x[:2], dynamo=False)
    with atomic_write(args.out) as f:
        f.write(data)
    print(f"{args.out}: {len(data)} bytes, test accuracy {accuracy:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
