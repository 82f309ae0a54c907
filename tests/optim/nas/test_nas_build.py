"""Architectures decoded into minnet models: shapes, shortcuts, closed-form cost, MACs budget."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import nn
from optim import metrics
from optim.nas import RandomSearch, cnn_space, mlp_space, search
from optim.nas.build import Residual, build_cnn, cnn_cost, describe, macs_at_most, mlp_cost

SEEDS = st.integers(0, 2**32 - 1)
BATCH = 3


def check_model(space, cost, arch):
    model = space.decode(arch)
    out = model(minnet.Tensor(np.random.default_rng(0).random((BATCH, 1, 28, 28), dtype=np.float32)))
    assert out.shape == (BATCH, 10) and out.dtype == np.float32
    expected = cost(arch)
    assert metrics.count_params(model) == expected.params
    assert metrics.macs(model, (BATCH, 1, 28, 28)) == BATCH * expected.macs
    residuals = [m for m in model.modules() if isinstance(m, Residual)]
    assert len(residuals) == sum(arch[f"skip_{i}"] for i in range(1, arch["n_blocks"]))


@given(SEEDS)
def test_mlp_builds_and_costs_match_closed_form(seed):
    space = mlp_space()
    check_model(space, mlp_cost, space.sample(np.random.default_rng(seed)))


@given(SEEDS)
def test_cnn_builds_and_costs_match_closed_form(seed):
    space = cnn_space()
    check_model(space, cnn_cost, space.sample(np.random.default_rng(seed)))


def lenet_like(**changes):
    arch = {"n_blocks": 2, "padding": "same", "activation": "relu", "fc_width": 32,
            "channels_0": 6, "kernel_0": 5, "pool_0": "max",
            "channels_1": 6, "kernel_1": 3, "pool_1": "avg", "skip_1": True,
            "channels_2": 4, "kernel_2": 1, "pool_2": "none", "skip_2": False,
            "channels_3": 4, "kernel_3": 1, "pool_3": "none", "skip_3": False}
    arch.update(changes)
    return arch


def test_cnn_cost_by_hand():
    # conv 1->6 5x5 same: 28x28x6 outputs of 25 MACs, relu, max pool to 14x14;
    # conv 6->6 3x3 same: 14x14x6 outputs of 54 MACs, relu, shortcut add, avg pool to 7x7;
    # 294 features -> 32 -> relu -> 10
    macs = (784 * 6 * 25 + 784 * 6 + 196 * 6 * 4 + 196 * 6 * 54 + 196 * 6 + 196 * 6
            + 49 * 6 * 4 + 294 * 32 + 32 + 320)
    params = 6 * 25 + 6 + 6 * 54 + 6 + 294 * 32 + 32 + 32 * 10 + 10
    assert tuple(cnn_cost(lenet_like())) == (params, macs)


def test_residual_adds_the_input_and_passes_gradients_to_both_paths():
    minnet.manual_seed(0)
    conv = nn.Conv2d(2, 2, 3, padding=1).double()
    block = Residual(conv)
    x = minnet.Tensor(np.random.default_rng(1).random((2, 2, 5, 5)), requires_grad=True)
    block(x).sum().backward()
    np.testing.assert_allclose(block(x).data, conv(x).data + x.data, rtol=1e-6)
    x_grad = x.grad.copy()
    x.grad = None
    conv(x).sum().backward()
    np.testing.assert_allclose(x_grad, x.grad + 1, rtol=1e-6)
    assert block.state_dict().keys() == {"body.weight", "body.bias"}
    with pytest.raises(ValueError, match="shape"):
        Residual(nn.Conv2d(2, 3, 1).double())(x)


def test_cnn_agrees_with_torch_on_the_same_weights():
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class TorchResidual(tnn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x) + x

    arch = lenet_like(n_blocks=3, activation="tanh", padding="same", skip_2=True, channels_2=6)
    model = build_cnn(arch)
    twin = tnn.Sequential(
        tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.Tanh()), tnn.MaxPool2d(2),
        TorchResidual(tnn.Sequential(tnn.Conv2d(6, 6, 3, padding=1), tnn.Tanh())), tnn.AvgPool2d(2),
        TorchResidual(tnn.Sequential(tnn.Conv2d(6, 6, 1), tnn.Tanh())),
        tnn.Flatten(), tnn.Linear(294, 32), tnn.Tanh(), tnn.Linear(32, 10)).double()
    assert list(model.state_dict()) == list(twin.state_dict())
    twin.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in model.state_dict().items()})
    x = np.random.default_rng(2).random((4, 1, 28, 28))
    np.testing.assert_allclose(model.double()(minnet.Tensor(x)).data,
                               twin(torch.from_numpy(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_build_rejects_a_map_that_shrinks_below_one_pixel():
    arch = lenet_like(n_blocks=4, padding="valid", kernel_0=7, kernel_1=7, skip_1=False,
                      pool_2="max", pool_3="max")
    with pytest.raises(ValueError, match="1x1"):
        build_cnn(arch)
    with pytest.raises(ValueError, match="1x1"):
        cnn_cost(arch)
    assert not macs_at_most(1e12)(arch)


@given(SEEDS, st.sampled_from([60_000, 150_000, 429_332]))
def test_macs_budget_constrains_sampling(seed, budget):
    space = cnn_space().with_constraints(macs_at_most(budget))
    arch = space.sample(np.random.default_rng(seed))
    assert cnn_cost(arch).macs <= budget
    assert metrics.macs(space.decode(arch), (1, 1, 28, 28)) <= budget


def test_macs_budget_rejects_before_training():
    budget = 60_000
    unconstrained = mlp_space()
    space = unconstrained.with_constraints(macs_at_most(budget, cost=mlp_cost))
    trained = []

    def evaluate(trial):
        trained.append(trial.id)
        return mlp_cost(trial.arch).macs

    history = search(space, RandomSearch(unconstrained, seed=3), evaluate, budget=40)
    over = {r.id for r in history.records if mlp_cost(r.arch).macs > budget}
    assert over and over.isdisjoint(trained)
    assert over == {r.id for r in history.records if r.status == "invalid"}


@pytest.mark.parametrize("budget", [0, -5, float("nan"), True, "1e5"])
def test_macs_budget_must_be_positive(budget):
    with pytest.raises(ValueError, match="budget"):
        macs_at_most(budget)


def test_describe_lists_the_used_blocks():
    assert describe(lenet_like()) == "same: 6c5 max, 6c3+skip avg; fc 32; relu"
    arch = mlp_space().sample(np.random.default_rng(0))
    arch.update(n_blocks=2, width_0=64, width_1=64, skip_1=True, activation="tanh")
    assert describe(arch) == "64, 64+skip; tanh"


@pytest.mark.parametrize("space", [
    cnn_space(max_blocks=2, channels=(4,), kernel_sizes=(1, 3), fc_widths=(0,), activations=("relu",)),
    mlp_space(max_blocks=3, widths=(16,), activations=("relu",))], ids=["cnn", "mlp"])
def test_same_canonical_form_iff_same_model(space):
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(40)]
    models = [repr(space.decode(a)) for a in archs]
    assert len(set(models)) < len({tuple(a.values()) for a in archs})  # genes that build nothing
    for a, model_a in zip(archs, models):
        assert space.is_valid(space.canonical(a)) and repr(space.decode(space.canonical(a))) == model_a
        for b, model_b in zip(archs, models):
            assert (space.key(a) == space.key(b)) == (model_a == model_b)


@given(SEEDS)
def test_mutation_changes_the_model(seed):
    rng = np.random.default_rng(seed)
    space = cnn_space()
    arch = space.sample(rng)
    assert repr(build_cnn(space.mutate(arch, rng))) != repr(build_cnn(arch))
