"""Models for the graph tests, the benchmark and the example: a residual CNN with BatchNorm and
a generator of random architectures (MLPs and CNNs with BatchNorm, residual adds, pooling,
dropout and assorted activations), each with non-trivial BatchNorm statistics.
"""
from __future__ import annotations

import numpy as np

import minnet
from minnet import nn

__all__ = ["Residual", "residual_cnn", "resnet_mnist", "random_model", "randomize_batchnorm"]


class Residual(nn.Module):
    """y = act(shortcut(x) + body(x)) (He et al. 2016): the shortcut is the identity, or a
    projection (a 1x1 convolution) when the body changes the shape."""

    def __init__(self, body: nn.Module, activation: nn.Module | None = None,
                 shortcut: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.activation = activation if activation is not None else nn.Identity()
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x):
        return self.activation(self.shortcut(x) + self.body(x))


def _conv_bn(c_in: int, c_out: int, k: int, **kw) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, padding=k // 2, **kw), nn.BatchNorm2d(c_out)]


def residual_cnn(num_classes: int = 10, channels: int = 8) -> nn.Sequential:
    """Stem conv-BN-ReLU, two residual blocks (conv-BN-ReLU-conv-BN + skip, ReLU), max pool,
    global average pool, linear: a small ResNet for 1x28x28 inputs."""
    def block():
        return Residual(nn.Sequential(*_conv_bn(channels, channels, 3), nn.ReLU(),
                                      *_conv_bn(channels, channels, 3)), nn.ReLU())
    model = nn.Sequential(*_conv_bn(1, channels, 3), nn.ReLU(), block(), nn.MaxPool2d(2), block(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
    randomize_batchnorm(model, np.random.default_rng(0))
    return model


def resnet_mnist(num_classes: int = 10, width: int = 16) -> nn.Sequential:
    """A ResNet for 1x28x28 inputs with 8 convolutions, each followed by BatchNorm: stem
    conv-BN-ReLU and max pool (14x14), an identity block at ``width`` channels, a block to
    2·``width`` channels at stride 2 (7x7) with a 1x1 projection shortcut, an identity block,
    global average pooling and a linear classifier (3 residual adds, 38k parameters at 16)."""
    def block(c_in: int, c_out: int, stride: int = 1) -> Residual:
        body = nn.Sequential(*_conv_bn(c_in, c_out, 3, stride=stride), nn.ReLU(),
                             *_conv_bn(c_out, c_out, 3))
        shortcut = None if stride == 1 and c_in == c_out else \
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride), nn.BatchNorm2d(c_out))
        return Residual(body, nn.ReLU(), shortcut)
    return nn.Sequential(*_conv_bn(1, width, 3), nn.ReLU(), nn.MaxPool2d(2), block(width, width),
                         block(width, 2 * width, 2), block(2 * width, 2 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


def randomize_batchnorm(model: nn.Module, rng: np.random.Generator) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics (var in [0.5, 2])."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.weight.data[...] = rng.uniform(0.5, 1.5, c)
            m.bias.data[...] = rng.normal(0, 0.2, c)
            m.running_mean[...] = rng.normal(0, 0.2, c)
            m.running_var[...] = rng.uniform(0.5, 2.0, c)
    return model


_ACTIVATIONS = (nn.ReLU, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.GELU)


def _activation(rng: np.random.Generator) -> nn.Module:
    return _ACTIVATIONS[rng.integers(len(_ACTIVATIONS))]()


def _random_cnn(rng: np.random.Generator) -> tuple[nn.Module, tuple[int, ...]]:
    c, size = int(rng.choice([1, 3])), int(rng.choice([8, 12, 16, 20]))
    shape = (int(rng.choice([1, 2, 4])), c, size, size)
    layers: list[nn.Module] = []
    for _ in range(rng.integers(1, 4)):
        c_out, k = int(rng.choice([4, 6, 8, 12])), int(rng.choice([1, 3, 5]))
        stride = int(rng.choice([1, 1, 2])) if size >= 8 else 1
        groups = int(rng.choice([1, c])) if c_out % c == 0 and c > 1 else 1
        layers.append(nn.Conv2d(c, c_out, k, stride=stride, padding=k // 2, groups=groups,
                                bias=bool(rng.random() < 0.7)))
        size = (size + 2 * (k // 2) - k) // stride + 1
        if rng.random() < 0.6:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(_activation(rng))
        c = c_out
        if rng.random() < 0.4:
            body = nn.Sequential(*_conv_bn(c, c, 3), _activation(rng))
            layers.append(Residual(body, nn.ReLU() if rng.random() < 0.5 else None))
        if size >= 4 and rng.random() < 0.5:
            layers.append(nn.MaxPool2d(2) if rng.random() < 0.5 else nn.AvgPool2d(2))
            size //= 2
        if rng.random() < 0.2:
            layers.append(nn.Dropout(0.3))
    if rng.random() < 0.3:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        features = c
    else:
        layers.append(nn.Flatten())
        features = c * size * size
    layers += _random_head(rng, features)
    return nn.Sequential(*layers), shape


def _random_head(rng: np.random.Generator, features: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(rng.integers(0, 3)):
        width = int(rng.choice([16, 32, 64]))
        layers.append(nn.Linear(features, width, bias=bool(rng.random() < 0.8)))
        if rng.random() < 0.4:
            layers.append(nn.BatchNorm1d(width))
        layers.append(_activation(rng))
        if rng.random() < 0.2:
            layers.append(nn.Identity())
        features = width
    layers.append(nn.Linear(features, 10))
    return layers


def random_model(seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    """A random MLP (1 in 4) or CNN and its input shape (batch 1, 2 or 4), deterministic in
    ``seed``; weights seeded, BatchNorm statistics randomized."""
    rng = np.random.default_rng(seed)
    minnet.manual_seed(seed)
    if rng.random() < 0.25:
        features = int(rng.choice([32, 64, 196]))
        shape = (int(rng.choice([1, 3, 8])), features)
        model = nn.Sequential(*_random_head(rng, features))
    else:
        model, shape = _random_cnn(rng)
    return randomize_batchnorm(model, rng), shape
