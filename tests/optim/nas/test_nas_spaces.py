"""The shipped MLP and CNN spaces: their constraints and the spatial-size check."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim.nas import SearchSpace, cnn_feature_shape, cnn_space, cnn_valid, conv_output_size, mlp_space


@given(st.integers(0, 40), st.integers(1, 7), st.integers(1, 3), st.integers(0, 3), st.integers(1, 3))
def test_conv_output_size_matches_sliding_windows(size, kernel, stride, padding, dilation):
    # count the window positions that fit inside the padded input
    span = dilation * (kernel - 1) + 1
    fitting = sum(1 for start in range(0, size + 2 * padding, stride) if start + span <= size + 2 * padding)
    assert max(conv_output_size(size, kernel, stride, padding, dilation), 0) == fitting


def test_conv_output_size_matches_torch():
    torch = pytest.importorskip("torch")
    for size, kernel, stride, padding, dilation in [(28, 5, 1, 0, 1), (28, 3, 2, 1, 1), (7, 3, 1, 0, 2),
                                                    (13, 2, 2, 0, 1), (5, 5, 1, 2, 1)]:
        conv = torch.nn.Conv2d(1, 1, kernel, stride, padding, dilation)
        out = conv(torch.zeros(1, 1, size, size))
        assert out.shape[-1] == conv_output_size(size, kernel, stride, padding, dilation)


def torch_feature_shape(torch, arch):
    """Run the CNN's convolution and pooling stack in PyTorch (None if a layer cannot apply)."""
    x = torch.zeros(1, 1, 28, 28)
    try:
        for i in range(arch["n_blocks"]):
            k = arch[f"kernel_{i}"]
            x = torch.nn.functional.conv2d(x, torch.zeros(arch[f"channels_{i}"], x.shape[1], k, k),
                                           padding=k // 2 if arch["padding"] == "same" else 0)
            if arch[f"pool_{i}"] == "max":
                x = torch.nn.functional.max_pool2d(x, 2)
            elif arch[f"pool_{i}"] == "avg":
                x = torch.nn.functional.avg_pool2d(x, 2)
    except RuntimeError:
        return None
    return tuple(x.shape[1:]) if min(x.shape[2:]) >= 1 else None


def test_cnn_constraint_is_spatial_check():
    torch = pytest.importorskip("torch")
    unconstrained = SearchSpace(cnn_space().genes)
    rng = np.random.default_rng(0)
    outcomes = set()
    with torch.no_grad():
        for _ in range(150):
            arch = unconstrained.sample(rng)
            expected = torch_feature_shape(torch, arch)
            outcomes.add(expected is None)
            if expected is None:
                with pytest.raises(ValueError, match="below 1x1"):
                    cnn_feature_shape(arch)
                assert not cnn_valid(arch)
            else:
                assert cnn_feature_shape(arch) == expected
    assert outcomes == {True, False}  # both cases were exercised


def test_cnn_spatial_sizes_by_hand():
    # 28 -conv7-> 22 -pool-> 11 -conv7-> 5 -pool-> 2 -conv7-> (-4): rejected
    arch = cnn_space().sample(np.random.default_rng(0))
    arch.update(n_blocks=3, padding="valid", **{f"kernel_{i}": 7 for i in range(4)},
                **{f"pool_{i}": "max" for i in range(4)}, **{f"skip_{i}": False for i in range(1, 4)})
    assert not cnn_valid(arch)
    arch["n_blocks"] = 2
    assert cnn_feature_shape(arch) == (arch["channels_1"], 2, 2) and cnn_valid(arch)
    arch.update(n_blocks=4, padding="same")  # 28 -> 14 -> 7 -> 3 -> 1
    assert cnn_feature_shape(arch)[1:] == (1, 1) and cnn_valid(arch)


def test_skips_need_matching_shapes():
    mlp = mlp_space()
    arch = {**mlp.sample(np.random.default_rng(0)), "n_blocks": 2, "width_0": 32, "skip_1": True}
    assert mlp.is_valid({**arch, "width_1": 32}) and not mlp.is_valid({**arch, "width_1": 64})
    assert mlp.is_valid({**arch, "width_1": 64, "n_blocks": 1})  # the skip's block is unused
    cnn = cnn_space()
    arch = {**cnn.sample(np.random.default_rng(1)), "n_blocks": 2, "padding": "same",
            "channels_0": 8, "channels_1": 8, "kernel_1": 3, "skip_1": True, "pool_0": "none"}
    assert cnn.is_valid(arch)
    assert not cnn.is_valid({**arch, "channels_1": 16})
    assert not cnn.is_valid({**arch, "padding": "valid"})
    assert cnn.is_valid({**arch, "padding": "valid", "kernel_1": 1, "kernel_0": 3})


@pytest.mark.parametrize("space", [mlp_space(), cnn_space(), cnn_space(max_blocks=2, input_size=8)],
                         ids=["mlp", "cnn", "cnn-8x8"])
def test_shipped_spaces_sample_valid_architectures(space):
    rng = np.random.default_rng(0)
    for _ in range(100):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert space.is_valid(arch) and space.is_valid(child)
        assert sum(arch[n] != child[n] for n in space.names) == 1
        assert space.is_valid(space.crossover(arch, child, rng))
        assert space.encode(arch).shape == (space.dim,)


@pytest.mark.parametrize("make, match", [
    (lambda: mlp_space(max_blocks=0), "max_blocks"), (lambda: mlp_space(widths=()), "widths"),
    (lambda: mlp_space(widths=(16, 0)), "widths"), (lambda: cnn_space(kernel_sizes=(3, 4)), "kernel_sizes"),
    (lambda: cnn_space(channels=(8.0,)), "channels"), (lambda: cnn_space(fc_widths=(-1,)), "fc_widths"),
    (lambda: cnn_space(input_size=0), "input_size"), (lambda: conv_output_size(28, 0), "kernel_size"),
    (lambda: conv_output_size(28, 3, stride=0), "stride")])
def test_bad_space_arguments_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()
