"""Physical shrinking: random networks with random unit masks keep their outputs; the
dependency analysis handles BatchNorm, pooling and Flatten and names what it cannot shrink."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import models, nn
from optim.prune import apply_mask, expand_channel_mask, flat_layers, prune_channels, shrink

from prune_helpers import forward, randomize_batch_norm

ACTIVATIONS = [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.GELU]


@st.composite
def mlps(draw):
    sizes = draw(st.lists(st.integers(2, 7), min_size=3, max_size=5))
    layers = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=draw(st.booleans())))
        if i < len(sizes) - 2:
            if draw(st.booleans()):
                layers.append(nn.BatchNorm1d(b))
            layers.append(draw(st.sampled_from(ACTIVATIONS))())
            if draw(st.booleans()):
                layers.append(nn.Dropout(0.3))
    return nn.Sequential(*layers), (sizes[0],)


@st.composite
def cnns(draw):
    c0, c1, c2 = draw(st.integers(1, 3)), draw(st.integers(2, 5)), draw(st.integers(2, 5))
    first = [nn.Conv2d(c0, c1, 3, padding=draw(st.integers(0, 1)), bias=draw(st.booleans()))]
    if draw(st.booleans()):
        first.append(nn.BatchNorm2d(c1))
    first.append(draw(st.sampled_from(ACTIVATIONS))())
    first.append(draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Identity()])))
    second = [nn.Conv2d(c1, c2, 2), draw(st.sampled_from(ACTIVATIONS))()]
    if draw(st.booleans()):
        second.append(nn.BatchNorm2d(c2))
    # 8x8 input -> conv3 (pad p) -> pool -> conv2 -> flatten
    side = 8 - 2 + 2 * first[0].padding
    side = side // 2 if isinstance(first[-1], (nn.MaxPool2d, nn.AvgPool2d)) else side
    side -= 1
    hidden = draw(st.integers(2, 6))
    model = nn.Sequential(nn.Sequential(*first), nn.Sequential(*second), nn.Flatten(),
                          nn.Linear(c2 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, 3))
    return model, (c0, 8, 8)


def _mask_random_units(model, rng):
    """Remove a random non-empty proper subset of units from every producer but the last, and
    zero some single weights of the first (shrinking must leave those in place)."""
    producers = [m for _, m in flat_layers(model) if isinstance(m, (nn.Linear, nn.Conv2d))]
    for i, module in enumerate(producers[:-1]):
        n = module.weight.shape[0]
        keep = np.zeros(n, dtype=bool)
        keep[rng.permutation(n)[:rng.integers(1, n)]] = True
        mask = expand_channel_mask(keep, module.weight.shape)
        if i == 0:
            scattered = (rng.random(module.weight.shape) > 0.2).reshape(n, -1)
            scattered[:, 0] = True  # every kept unit keeps a weight
            mask &= scattered.reshape(module.weight.shape)
        apply_mask(module, "weight", mask)
        if module.bias is not None:
            module.bias.data[...] = rng.normal(size=n)  # non-zero constants to fold


@given(case=st.one_of(mlps(), cnns()), seed=st.integers(0, 10_000))
def test_shrinking_random_masks_preserves_outputs(case, seed):
    model, input_shape = case
    rng = np.random.default_rng(seed)
    minnet.manual_seed(seed)
    model.double()
    randomize_batch_norm(model, rng)
    _mask_random_units(model, rng)
    x = rng.normal(size=(4,) + input_shape)
    shrunk = shrink(model)
    np.testing.assert_allclose(forward(shrunk, x), forward(model, x), rtol=1e-9, atol=1e-9)
    n_params = lambda m: sum(p.size for p in m.parameters())  # noqa: E731
    assert n_params(shrunk) < n_params(model)


def test_lenet5_half_filters_shrunk_equals_masked_in_float32():
    minnet.manual_seed(0)
    rng = np.random.default_rng(0)
    model = models.lenet5(batch_norm=True)
    randomize_batch_norm(model, rng)
    prune_channels(model, 0.5, "l1", layers=["0", "4"])
    shrunk = shrink(model)
    assert shrunk[0].out_channels == 3 and shrunk[4].in_channels == 3
    assert shrunk[4].out_channels == 8 and shrunk[1].num_features == 3
    assert shrunk[9].in_features == 8 * 5 * 5  # Flatten: each removed channel owned 25 inputs
    x = rng.random((16, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(forward(shrunk, x), forward(model, x), rtol=1e-5, atol=1e-5)


def test_shrink_leaves_the_input_model_unchanged():
    model = models.mlp([6, 5, 3])
    apply_mask(model[1], "weight", expand_channel_mask(np.array([1, 0, 1, 1, 0], bool), (5, 6)))
    shrink(model)
    assert model[1].weight.shape == (5, 6) and model[3].weight.shape == (3, 5)


def test_shrink_creates_a_bias_to_fold_into():
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2, bias=False))
    apply_mask(model[0], "weight", expand_channel_mask(np.array([1, 0, 1, 1], bool), (4, 3)))
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    shrunk = shrink(model)
    assert shrunk[2].bias is not None  # sigmoid(b_1) * W[:, 1] folded
    np.testing.assert_allclose(forward(shrunk, x), forward(model, x), rtol=1e-6, atol=1e-6)


def _remove_first_unit(module):
    keep = np.ones(module.weight.shape[0], dtype=bool)
    keep[0] = False
    apply_mask(module, "weight", expand_channel_mask(keep, module.weight.shape))


class Doubler(nn.Module):
    def forward(self, x):
        return x * 2


@pytest.mark.parametrize("build, message", [
    (lambda: nn.Sequential(nn.Linear(3, 4), Doubler(), nn.Linear(4, 2)),
     r"layer '1' \(Doubler\): unknown layer type"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1)),
     r"layer '2' \(Conv2d\): zero padding"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 2)),
     r"layer '1' \(Linear\): a Linear on a 4-D input needs a Flatten"),
    (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Conv2d(4, 2, 1)),
     r"layer '0' \(Conv2d\): removing outputs of a grouped convolution"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(2), nn.Linear(4, 2)),
     r"layer '1' \(Flatten\): only Flatten\(start_dim=1"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2, padding=1), nn.Conv2d(2, 2, 1)),
     r"layer '1' \(AvgPool2d\): zero padding"),
])
def test_unsupported_graphs_name_the_layer(build, message):
    model = build()
    first = model[0]
    if first.bias is not None:
        first.bias.data[...] = 1.0
    _remove_first_unit(first)
    with pytest.raises(ValueError, match=message):
        shrink(model)


def test_shrink_refuses_non_sequential_models_and_empty_layers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(ValueError, match="supports nn.Sequential models, got Net"):
        shrink(Net())
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    apply_mask(model[0], "weight", np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="layer '0' would lose all of its 2 output units"):
        shrink(model)
