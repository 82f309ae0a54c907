"""The reference architectures in PyTorch, for side-by-side benchmarks (torch is optional)."""
from __future__ import annotations


def torch_model(name: str, batch_norm: bool = False, weights_from=None):
    """PyTorch twin of ``minnet.models.lenet5`` ("lenet5") or ``lenet_300_100`` ("lenet300"),
    with the same layer order and state_dict keys; ``weights_from`` (a minnet model) copies its
    weights and buffers."""
    import torch
    from torch import nn

    if name == "lenet5":
        def conv_block(c_in, c_out, padding):
            layers = [nn.Conv2d(c_in, c_out, 5, padding=padding)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            return layers + [nn.ReLU(), nn.MaxPool2d(2)]

        model = nn.Sequential(*conv_block(1, 6, 2), *conv_block(6, 16, 0), nn.Flatten(),
                              nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                              nn.Linear(84, 10))
    elif name == "lenet300":
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                              nn.ReLU(), nn.Linear(100, 10))
    else:
        raise ValueError(f"name must be 'lenet5' or 'lenet300', got {name!r}")
    if weights_from is not None:
        model.load_state_dict({k: torch.from_numpy(v.copy())
                               for k, v in weights_from.state_dict().items()})
    return model
