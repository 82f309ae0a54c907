"""Sequential and ModuleList: composition, child names "0", "1", ..., indexing and
registration of their members' parameters."""
import numpy as np
import pytest

import minnet
from minnet import nn


def _layers():
    return [nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)]


def test_sequential_is_the_composition_of_its_modules():
    a, b, c = _layers()
    x = minnet.tensor(np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32))
    np.testing.assert_array_equal(nn.Sequential(a, b, c)(x).data, c(b(a(x))).data)
    assert nn.Sequential()(x) is x


def test_sequential_names_children_by_position():
    model = nn.Sequential(*_layers())
    assert [name for name, _ in model.named_children()] == ["0", "1", "2"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    nested = nn.Sequential(nn.Sequential(*_layers()), nn.ReLU())
    assert [name for name, _ in nested.named_parameters()] == [
        "0.0.weight", "0.0.bias", "0.2.weight", "0.2.bias"]


def test_sequential_indexing_slicing_and_append():
    layers = _layers()
    model = nn.Sequential(*layers)
    assert len(model) == 3 and list(model) == layers
    assert model[0] is layers[0] and model[-1] is layers[2]
    head = model[1:]
    assert isinstance(head, nn.Sequential) and list(head) == layers[1:]
    assert [name for name, _ in head.named_children()] == ["0", "1"]
    extra = nn.ReLU()
    assert model.append(extra) is model and model[3] is extra
    assert [name for name, _ in model.named_children()] == ["0", "1", "2", "3"]


def test_module_list_registers_its_members():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
            self.layers.append(nn.Linear(2, 1))

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    model = Stack()
    assert [name for name, _ in model.named_parameters()] == [
        f"layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    x = np.ones((4, 2), np.float32)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert len(model.layers) == 3 and model.layers[-1].out_features == 1
    assert isinstance(model.layers[:2], nn.ModuleList) and len(model.layers[:2]) == 2
    assert len(model.layers.extend([nn.ReLU(), nn.ReLU()])) == 5


def test_containers_accept_only_modules():
    with pytest.raises(TypeError, match="argument 1.*function"):
        nn.Sequential(nn.ReLU(), lambda x: x)
    with pytest.raises(TypeError, match="int"):
        nn.ModuleList([nn.ReLU(), 3])
