"""minnet.nn.parametrize against its definition and against torch.nn.utils.parametrize."""
import copy

import numpy as np
import pytest

import minnet
from minnet import nn, optimizers as optim
from minnet.nn import parametrize as P


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = nn.Parameter(np.float32(factor))

    def forward(self, w):
        return w * self.factor

    def right_inverse(self, w):
        return w / self.factor.data


class AddOne(nn.Module):
    def forward(self, w):
        return w + 1.0


class Double(nn.Module):
    def forward(self, w):
        return w * 2.0


class Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", np.asarray(mask, dtype=bool))

    def forward(self, w):
        return w * minnet.Tensor(self.mask.astype(w.dtype))


def _linear(seed=0):
    minnet.manual_seed(seed)
    return nn.Linear(4, 3)


def test_value_is_the_chain_in_registration_order():
    layer = _linear()
    w = layer.weight.data.copy()
    P.register_parametrization(layer, "weight", AddOne())
    P.register_parametrization(layer, "weight", Scale(2.0))
    np.testing.assert_array_equal(layer.weight.data, (w + 1) * np.float32(2))
    other = _linear()
    P.register_parametrization(other, "weight", Scale(2.0))
    P.register_parametrization(other, "weight", AddOne())  # Scale's right_inverse: original w/2
    np.testing.assert_array_equal(other.weight.data, w + 1)


def test_gradient_reaches_the_original_and_the_parametrizations_parameters():
    layer = _linear()
    w = layer.weight.data.copy()
    P.register_parametrization(layer, "weight", Scale(3.0))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    layer(minnet.Tensor(x)).sum().backward()
    chain = layer.parametrizations.weight
    # y = x (3 v)^T + b with v = w / 3 (right_inverse): dL/dv = 3 * sum_n x_n per output row,
    # dL/dfactor = sum(v * colsum(x))
    np.testing.assert_allclose(chain.original.data, w / np.float32(3), rtol=1e-6)
    np.testing.assert_allclose(chain.original.grad, 3 * np.tile(x.sum(0), (3, 1)), rtol=1e-6)
    np.testing.assert_allclose(chain[0].factor.grad, (w / 3 * x.sum(0)).sum(), rtol=1e-5)


def test_state_dict_keys_and_values_match_torch():
    torch = pytest.importorskip("torch")
    tp = pytest.importorskip("torch.nn.utils.parametrize")

    class TorchMask(torch.nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", torch.tensor(mask))

        def forward(self, w):
            return w * self.mask

    mask = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 0]], dtype=bool)
    ours = _linear()
    theirs = torch.nn.Linear(4, 3)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.weight.data))
        theirs.bias.copy_(torch.tensor(ours.bias.data))
    P.register_parametrization(ours, "weight", Mask(mask))
    tp.register_parametrization(theirs, "weight", TorchMask(mask))
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for key in ours_state:
        np.testing.assert_array_equal(ours_state[key], theirs_state[key].numpy())
    np.testing.assert_array_equal(ours.weight.data, theirs.weight.detach().numpy())


def test_state_dict_round_trip_is_bitwise():
    source = _linear(0)
    P.register_parametrization(source, "weight", Mask(np.random.default_rng(0).random((3, 4)) > .5))
    P.register_parametrization(source, "weight", Scale(0.7))
    target = _linear(1)
    P.register_parametrization(target, "weight", Mask(np.ones((3, 4), bool)))
    P.register_parametrization(target, "weight", Scale(1.0))
    target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(target.weight.data, source.weight.data)
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value)


def test_remove_bakes_the_value_in_or_keeps_the_original():
    layer = _linear()
    original = layer.weight
    w = original.data.copy()
    P.register_parametrization(layer, "weight", Double())
    x = minnet.Tensor(np.ones((2, 4), np.float32))
    before = layer(x).data
    P.remove_parametrizations(layer, "weight")
    assert layer.weight is original and not P.is_parametrized(layer)
    assert "parametrizations" not in layer._modules
    np.testing.assert_array_equal(layer(x).data, before)
    np.testing.assert_array_equal(layer.weight.data, w * 2)
    P.register_parametrization(layer, "weight", Double())
    P.remove_parametrizations(layer, "weight", leave_parametrized=False)
    np.testing.assert_array_equal(layer.weight.data, w * 2)


def test_assignment_writes_the_original_through_right_inverse():
    layer = _linear()
    P.register_parametrization(layer, "weight", Scale(4.0))
    target = np.full((3, 4), 2.0, np.float32)
    layer.weight = target
    np.testing.assert_array_equal(layer.parametrizations.weight.original.data, target / 4)
    np.testing.assert_array_equal(layer.weight.data, target)


def test_first_registration_applies_right_inverse():
    layer = _linear()
    w = layer.weight.data.copy()
    P.register_parametrization(layer, "weight", Scale(4.0))
    np.testing.assert_allclose(layer.weight.data, w, rtol=1e-6)


def test_optimizer_built_before_keeps_training_the_original():
    layer = _linear()
    opt = optim.SGD(layer.parameters(), lr=0.1)
    mask = np.array([[1, 0, 1, 1]] * 3, dtype=bool)
    P.register_parametrization(layer, "weight", Mask(mask))
    before = layer.parametrizations.weight.original.data.copy()
    layer(minnet.Tensor(np.ones((2, 4), np.float32))).sum().backward()
    opt.step()
    after = layer.parametrizations.weight.original.data
    assert np.all(after[:, mask[0]] != before[:, mask[0]])
    np.testing.assert_array_equal(after[:, ~mask[0]], before[:, ~mask[0]])
    assert np.all(layer.weight.data[:, ~mask[0]] == 0)


def test_deepcopy_keeps_the_parametrization():
    layer = _linear()
    P.register_parametrization(layer, "weight", Scale(2.0))
    clone = copy.deepcopy(layer)
    clone.parametrizations.weight[0].factor.data[...] = 3.0
    assert P.is_parametrized(clone, "weight")
    np.testing.assert_array_equal(clone.weight.data,
                                  layer.parametrizations.weight.original.data * np.float32(3))


def test_bad_registrations_raise_and_change_nothing():
    layer = _linear()
    with pytest.raises(TypeError, match="module"):
        P.register_parametrization("layer", "weight", AddOne())
    with pytest.raises(TypeError, match="parametrization"):
        P.register_parametrization(layer, "weight", lambda w: w)
    with pytest.raises(ValueError, match="'kernel'"):
        P.register_parametrization(layer, "kernel", AddOne())

    class Flatten(nn.Module):
        def forward(self, w):
            return w.reshape(-1)

    with pytest.raises(ValueError, match="shape"):
        P.register_parametrization(layer, "weight", Flatten())
    assert not P.is_parametrized(layer) and "weight" in layer._parameters
    with pytest.raises(ValueError, match="no parametrization"):
        P.remove_parametrizations(layer, "weight")
    P.register_parametrization(layer, "weight", Flatten(), unsafe=True)
    assert layer.weight.shape == (12,)
