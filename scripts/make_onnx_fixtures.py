"""Write the small ONNX fixtures that tests/optim/graph/test_graph_onnx_fixtures.py imports.

Five PyTorch networks, each exported by both torch exporters (TorchScript, ``dynamo=False``,
opset 17; and the default ``dynamo=True`` exporter, which needs onnxscript) with a dynamic
batch axis:

- ``mlp``: Linear-ReLU-Linear-ReLU-Linear;
- ``lenet5``: LeNet-5 whose classifier input is ``x.view(x.size(0), -1)``;
- ``resnet``: a residual CNN with BatchNorm (identity and 1x1 projection shortcuts);
- ``mobilenet``: a MobileNetV2 inverted residual block (1x1 expand, 3x3 depthwise, 1x1
  project, ReLU6, residual add);
- ``mixed``: Concat, AveragePool, GlobalAveragePool, Gemm, Softmax, LeakyReLU and Dropout.

Weights come from a fixed seed; BatchNorm statistics are perturbed so that folding them is
visible. PyTorch is needed only here, never by the tests. Run from the repository root:

    python scripts/make_onnx_fixtures.py [--out tests/optim/graph/fixtures]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import warnings

import torch
from torch import nn
import torch.nn.functional as F

INPUTS = {"mlp": (2, 20), "lenet5": (2, 1, 28, 28), "resnet": (2, 3, 16, 16),
          "mobilenet": (2, 8, 12, 12), "mixed": (2, 3, 16, 16)}


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(20, 32), nn.Linear(32, 16), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1, self.layer2 = Block(8, 8, 1), Block(8, 16, 2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, channels=8, expand=4):
        super().__init__()
        hidden = channels * expand
        self.block = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(), nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.block(x)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(8, 12, 3, padding=1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = torch.cat([F.leaky_relu(self.a(x), 0.1), F.leaky_relu(self.b(x), 0.1)], dim=1)
        x = F.avg_pool2d(x, 2)
        x = F.leaky_relu(self.c(x), 0.2)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.softmax(self.fc(self.drop(x)), dim=1)


MODELS = {"mlp": MLP, "lenet5": LeNet5, "resnet": ResNet, "mobilenet": InvertedResidual,
          "mixed": Mixed}


def build(name: str) -> nn.Module:
    torch.manual_seed(sum(map(ord, name)))
    model = MODELS[name]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model.eval()


def export(model: nn.Module, example: torch.Tensor, dynamo: bool) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["x"],
                                        output_names=["y"],
                                        dynamic_shapes={"x": {0: torch.export.Dim("N", min=1, max=1024)}},
                                        verbose=False)
            program.save(buffer)
        else:
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=17,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("tests", "optim", "graph", "fixtures"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
        exporters = {"torchscript": False, "dynamo": True}
    except ImportError:
        print("onnxscript is not installed: writing TorchScript exports only", file=sys.stderr)
        exporters = {"torchscript": False}
    for name in MODELS:
        model = build(name)
        example = torch.randn(INPUTS[name])
        for tag, dynamo in exporters.items():
            data = export(model, example, dynamo)
            path = os.path.join(args.out, f"{name}_{tag}.onnx")
            with open(path, "wb") as f:
                f.write(data)
            print(f"{path}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
