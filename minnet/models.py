"""Reference architectures used by the examples, benchmarks and the compression pipeline."""
from __future__ import annotations

from minnet import nn


def lenet_300_100(num_classes: int = 10) -> nn.Sequential:
    """LeNet-300-100 (LeCun et al. 1998; the MLP pruned by Han et al. 2015): 784-300-100-10, ReLU."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300), nn.ReLU(),
        nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, num_classes),
    )


def lenet5(num_classes: int = 10, batch_norm: bool = False) -> nn.Sequential:
    """LeNet-5 with ReLU and max pooling on 1×28×28 inputs: conv 6@5×5 (pad 2), pool 2,
    conv 16@5×5, pool 2, 400-120-84-10. ``batch_norm`` inserts BatchNorm after each conv."""
    def conv_block(c_in: int, c_out: int, padding: int) -> list[nn.Module]:
        layers = [nn.Conv2d(c_in, c_out, 5, padding=padding)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        return layers + [nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *conv_block(1, 6, 2),
        *conv_block(6, 16, 0),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Flatten, then Linear layers of the given sizes with ``activation`` between them."""
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output size, got {sizes}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)
