"""Agreement with torch.nn.utils.prune (skipped without torch): masks, amounts, parametrization."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import nn
from optim.prune import apply_mask, global_magnitude_masks, ln_structured_mask, magnitude_mask

from prune_helpers import SHAPES, amounts, float_arrays


def _holder(torch, w):
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.tensor(w))
    return module


@given(data=st.data(), shape=SHAPES)
def test_magnitude_mask_matches_torch_l1_unstructured(data, shape):
    torch = pytest.importorskip("torch")
    prune = pytest.importorskip("torch.nn.utils.prune")
    w = data.draw(float_arrays(shape, unique=True))
    assume(np.unique(np.abs(w)).size == w.size)  # torch breaks ties its own way
    amount = data.draw(amounts(w.size))
    holder = _holder(torch, w)
    prune.l1_unstructured(holder, "weight", amount)
    np.testing.assert_array_equal(magnitude_mask(w, amount), holder.weight_mask.numpy() == 1)


@given(data=st.data(), shape=hnp.array_shapes(min_dims=2, max_dims=3, max_side=5),
       n=st.sampled_from([1, 2, float("inf")]))
def test_ln_structured_mask_matches_torch(data, shape, n):
    torch = pytest.importorskip("torch")
    prune = pytest.importorskip("torch.nn.utils.prune")
    w = data.draw(float_arrays(shape, unique=True))  # torch prunes slices of >= 2-D tensors
    axis = data.draw(st.integers(0, len(shape) - 1))
    norms = np.linalg.norm(np.moveaxis(w, axis, 0).reshape(shape[axis], -1), ord=n, axis=1)
    assume(np.unique(norms).size == norms.size)
    amount = data.draw(amounts(shape[axis]))
    holder = _holder(torch, w)
    prune.ln_structured(holder, "weight", amount, n=n, dim=axis)
    np.testing.assert_array_equal(ln_structured_mask(w, amount, n=n, axis=axis),
                                  holder.weight_mask.numpy() == 1)


@given(data=st.data())
def test_global_magnitude_masks_match_torch_global_unstructured(data):
    torch = pytest.importorskip("torch")
    prune = pytest.importorskip("torch.nn.utils.prune")
    shapes = data.draw(st.lists(SHAPES, min_size=1, max_size=3))
    flat = data.draw(float_arrays((sum(int(np.prod(s)) for s in shapes),), unique=True))
    assume(np.unique(np.abs(flat)).size == flat.size)
    weights = np.split(flat, np.cumsum([int(np.prod(s)) for s in shapes])[:-1])
    weights = [w.reshape(s) for w, s in zip(weights, shapes)]
    amount = data.draw(amounts(flat.size))
    holders = [_holder(torch, w) for w in weights]
    prune.global_unstructured([(h, "weight") for h in holders],
                                             prune.L1Unstructured, amount=amount)
    for ours, h in zip(global_magnitude_masks(weights, amount), holders):
        np.testing.assert_array_equal(ours, h.weight_mask.numpy() == 1)


def test_pruned_linear_matches_torch_forward_and_parametrize_keys():
    torch = pytest.importorskip("torch")
    prune = pytest.importorskip("torch.nn.utils.prune")
    rng = np.random.default_rng(0)
    ours = nn.Linear(5, 3)
    theirs = torch.nn.Linear(5, 3)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.weight.data))
        theirs.bias.copy_(torch.tensor(ours.bias.data))
    mask = rng.random((3, 5)) > 0.5
    apply_mask(ours, "weight", mask)
    prune.custom_from_mask(theirs, "weight", torch.tensor(mask))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    with minnet.no_grad():
        y = ours(minnet.Tensor(x)).data
    np.testing.assert_allclose(y, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-6, atol=1e-6)
    # the mask is a parametrization: PyTorch's keys for a mask registered by
    # torch.nn.utils.parametrize (torch.nn.utils.prune's weight_orig / weight_mask are the
    # older hook-based form of the same product)
    parametrize = pytest.importorskip("torch.nn.utils.parametrize")

    class TorchMask(torch.nn.Module):
        def __init__(self, kept):
            super().__init__()
            self.register_buffer("mask", kept)

        def forward(self, w):
            return w * self.mask

    twin = torch.nn.Linear(5, 3)
    parametrize.register_parametrization(twin, "weight", TorchMask(torch.tensor(mask)))
    assert list(ours.state_dict()) == list(twin.state_dict())
    np.testing.assert_array_equal(ours.weight.data, theirs.weight.detach().numpy())
