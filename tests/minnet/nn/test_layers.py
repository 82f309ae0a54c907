"""Layers: Linear and BatchNorm against PyTorch with the same weights, activation, dropout,
shape and loss modules against their functional forms, and constructor validation."""
import numpy as np
import pytest

import helpers
import minnet
from minnet import functional as F
from minnet import nn


def _rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("leading", [(), (5,), (2, 3)])
def test_linear_is_x_times_weight_transposed_plus_bias(bias, leading):
    layer = nn.Linear(4, 3, bias=bias)
    assert layer.weight.shape == (3, 4) and (layer.bias.shape == (3,) if bias else layer.bias is None)
    x = _rng().standard_normal(leading + (4,)).astype(np.float32)
    expected = x @ layer.weight.data.T + (layer.bias.data if bias else 0)
    np.testing.assert_allclose(layer(x).data, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_with_the_same_weights(bias):
    torch = pytest.importorskip("torch")
    ours, theirs = nn.Linear(4, 3, bias=bias), torch.nn.Linear(4, 3, bias=bias)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = _rng().standard_normal((6, 4)).astype(np.float32)
    xt = torch.from_numpy(x)
    out, expected = ours(x), theirs(xt)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    upstream = _rng().standard_normal((6, 3)).astype(np.float32)
    out.backward(upstream)
    expected.backward(torch.from_numpy(upstream))
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, getattr(theirs, name).grad.numpy(), rtol=1e-5, atol=1e-5)


def _torch_batch_norm(torch, cls_name, channels, **kwargs):
    return getattr(torch.nn, cls_name)(channels, dtype=torch.float64, **kwargs)


@pytest.mark.parametrize("cls_name, shape", [("BatchNorm1d", (8, 3)), ("BatchNorm1d", (4, 3, 5)),
                                             ("BatchNorm2d", (4, 3, 2, 5))])
@pytest.mark.parametrize("track_running_stats", [True, False])
def test_batch_norm_module_matches_torch_over_training_steps_then_eval(cls_name, shape,
                                                                       track_running_stats):
    torch = pytest.importorskip("torch")
    kwargs = dict(momentum=0.3, track_running_stats=track_running_stats)
    ours = getattr(nn, cls_name)(shape[1], dtype=np.float64, **kwargs)
    theirs = _torch_batch_norm(torch, cls_name, shape[1], **kwargs)
    rng = _rng()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2, shape[1])))
        theirs.bias.copy_(torch.from_numpy(rng.standard_normal(shape[1])))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for step, training in enumerate([True, True, True, False]):
        ours.train(training), theirs.train(training)
        x = rng.normal(step, 1 + step, shape)
        xt = torch.tensor(x, requires_grad=True)
        out, expected = ours(minnet.tensor(x)), theirs(xt)
        np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-10)
        ours.zero_grad(), theirs.zero_grad()
        upstream = rng.standard_normal(shape)
        out.backward(upstream)
        expected.backward(torch.from_numpy(upstream))
        for name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad, getattr(theirs, name).grad.numpy(), rtol=1e-9, atol=1e-10)
        state = {k: v.numpy() for k, v in theirs.state_dict().items()}
        assert list(ours.state_dict()) == list(state)
        for key, value in ours.state_dict().items():
            np.testing.assert_allclose(value, state[key], rtol=1e-12)


def test_batch_norm_counts_successful_training_batches_only():
    bn = nn.BatchNorm1d(2)
    x = _rng().standard_normal((4, 2)).astype(np.float32)
    bn(x), bn(x)
    with pytest.raises(ValueError):
        bn(np.ones((4, 3), np.float32))  # wrong number of channels: no state changes
    bn.eval()
    bn(x)
    assert bn.num_batches_tracked == 2


def test_batch_norm_rejects_the_wrong_number_of_dimensions():
    with pytest.raises(ValueError, match=r"BatchNorm2d.*\(4,\).*\(2, 3\)"):
        nn.BatchNorm2d(3)(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d.*\(2, 3\).*\(2, 3, 4, 4\)"):
        nn.BatchNorm1d(3)(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="num_features.*0"):
        nn.BatchNorm1d(0)


# ---- modules that wrap a functional op ---------------------------------------------------

WRAPPERS = [
    (nn.ReLU(), F.relu), (nn.Sigmoid(), F.sigmoid), (nn.Tanh(), F.tanh), (nn.GELU(), F.gelu),
    (nn.LeakyReLU(0.2), lambda x: F.leaky_relu(x, 0.2)), (nn.LeakyReLU(), F.leaky_relu),
    (nn.Hardsigmoid(), F.hardsigmoid), (nn.Hardswish(), F.hardswish),
    (nn.Flatten(), lambda x: x.reshape(x.shape[0], -1)),
    (nn.Flatten(0, 1), lambda x: x.reshape(-1, *x.shape[2:])),
]


@pytest.mark.parametrize("module, functional", WRAPPERS, ids=lambda v: type(v).__name__)
def test_modules_compute_their_functional_op(module, functional):
    x = _rng().standard_normal((2, 3, 4))
    np.testing.assert_array_equal(module(minnet.tensor(x)).data, functional(minnet.tensor(x)).data)


def test_identity_returns_its_input():
    x = minnet.tensor(np.ones(3))
    assert nn.Identity()(x) is x


def test_dropout_module_drops_in_training_only():
    layer = nn.Dropout(0.5)
    x = minnet.tensor(np.ones(1000))
    with helpers.fixed_seed(0):
        assert np.any(layer(x).data == 0)
    layer.eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match="p must be in \\[0, 1\\], got -0.1"):
        nn.Dropout(-0.1)


LOSSES = [
    (nn.CrossEntropyLoss(), lambda x, t: F.cross_entropy(x, t), "classes"),
    (nn.CrossEntropyLoss("sum", label_smoothing=0.2),
     lambda x, t: F.cross_entropy(x, t, "sum", label_smoothing=0.2), "classes"),
    (nn.NLLLoss("none"), lambda x, t: F.nll_loss(x, t, "none"), "classes"),
    (nn.MSELoss(), F.mse_loss, "values"),
    (nn.KLDivLoss("batchmean"), lambda x, t: F.kl_div(x, t, "batchmean"), "probabilities"),
    (nn.KLDivLoss("sum", log_target=True), lambda x, t: F.kl_div(x, t, "sum", log_target=True),
     "values"),
    (nn.BCEWithLogitsLoss("sum"), lambda x, t: F.binary_cross_entropy_with_logits(x, t, "sum"),
     "probabilities"),
]


@pytest.mark.parametrize("module, functional, target_kind", LOSSES, ids=lambda v: type(v).__name__)
def test_loss_modules_compute_their_functional_loss(module, functional, target_kind):
    rng = _rng()
    x = rng.standard_normal((4, 3))
    target = {"classes": np.array([0, 2, 1, 2]), "values": rng.standard_normal((4, 3)),
              "probabilities": rng.dirichlet(np.ones(3), size=4)}[target_kind]
    np.testing.assert_array_equal(module(x, target).data, functional(x, target).data)


# ---- constructor validation --------------------------------------------------------------


def test_conv2d_parameter_shapes_follow_pytorch():
    conv = nn.Conv2d(4, 6, 3, groups=2)
    assert conv.weight.shape == (6, 2, 3, 3) and conv.bias.shape == (6,)
    assert nn.Conv2d(1, 2, (3, 5), bias=False).weight.shape == (2, 1, 3, 5)
    assert [name for name, _ in nn.Conv2d(1, 2, 3, bias=False).named_parameters()] == ["weight"]


def test_layer_constructors_reject_bad_sizes():
    with pytest.raises(ValueError, match="groups=4.*in_channels=6.*out_channels=8"):
        nn.Conv2d(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="kernel_size.*0"):
        nn.Conv2d(1, 1, 0)
    with pytest.raises(ValueError, match="in_features.*-1"):
        nn.Linear(-1, 2)
    with pytest.raises(ValueError, match="out_features.*2.5"):
        nn.Linear(2, 2.5)
