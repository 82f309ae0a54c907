"""Module protocol: registration, names like PyTorch, state_dict / load_state_dict, modes,
forward hooks, deepcopy, buffers, gradients and freezing."""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import functional as F
from minnet import nn


def make_net(nn, ones):
    """The same model in minnet.nn or torch.nn (``ones`` makes a buffer array of that library).
    ``head`` is registered before ``body`` although it runs last."""
    class Block(nn.Module):
        def __init__(self, features):
            super().__init__()
            self.fc = nn.Linear(features, features)
            self.bn = nn.BatchNorm1d(features)
            self.register_buffer("scale", ones(features))
            self.register_buffer("cache", ones(1), persistent=False)

        def forward(self, x):
            return self.bn(self.fc(x)) * self.scale

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)
            self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), Block(4))
            self.extra = nn.ModuleList([Block(4)])

        def forward(self, x):
            return self.head(self.extra[0](self.body(x)))

    return Net()


def _net():
    return make_net(nn, lambda n: np.ones(n, dtype=np.float32))


def _torch_net():
    torch = pytest.importorskip("torch")
    return make_net(torch.nn, lambda n: torch.ones(n))


PARAMETER_NAMES = ["head.weight", "head.bias", "body.0.weight", "body.0.bias",
                   "body.2.fc.weight", "body.2.fc.bias", "body.2.bn.weight", "body.2.bn.bias",
                   "extra.0.fc.weight", "extra.0.fc.bias", "extra.0.bn.weight", "extra.0.bn.bias"]


def _block_state(prefix):
    return [f"{prefix}.scale", f"{prefix}.fc.weight", f"{prefix}.fc.bias", f"{prefix}.bn.weight",
            f"{prefix}.bn.bias", f"{prefix}.bn.running_mean", f"{prefix}.bn.running_var",
            f"{prefix}.bn.num_batches_tracked"]


STATE_KEYS = (["head.weight", "head.bias", "body.0.weight", "body.0.bias"]
              + _block_state("body.2") + _block_state("extra.0"))


def test_names_follow_registration_order_like_pytorch():
    net = _net()
    assert [name for name, _ in net.named_parameters()] == PARAMETER_NAMES
    assert [name for name, _ in net.named_children()] == ["head", "body", "extra"]
    assert [name for name, _ in net.named_modules()] == [
        "", "head", "body", "body.0", "body.1", "body.2", "body.2.fc", "body.2.bn",
        "extra", "extra.0", "extra.0.fc", "extra.0.bn"]
    assert list(net.state_dict()) == STATE_KEYS
    assert list(net.children()) == [net.head, net.body, net.extra]


def test_names_equal_torch():
    ours, theirs = _net(), _torch_net()
    for method in ("named_parameters", "named_modules", "named_children", "named_buffers"):
        assert [n for n, _ in getattr(ours, method)()] == [n for n, _ in getattr(theirs, method)()], method
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_a_torch_state_dict_loads_and_gives_torch_outputs():
    torch = pytest.importorskip("torch")
    ours, theirs = _net(), _torch_net()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.eval(), theirs.eval()
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(x).data, theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_a_shared_submodule_appears_under_every_name_in_the_state_dict():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert [name for name, _ in model.named_modules()] == ["", "0", "1"]
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    model.load_state_dict(model.state_dict())


def test_shared_parameters_are_listed_once():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    assert len(list(model.parameters())) == 3
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]


# ---- state_dict and load_state_dict ------------------------------------------------------


def test_state_dict_holds_copies():
    net = _net()
    state = net.state_dict()
    state["head.weight"][...] = 123.0
    assert not np.any(net.head.weight.data == 123.0)


def test_load_state_dict_copies_in_place_and_keeps_dtypes():
    source, target = _net(), _net()
    source.body[2].bn.running_mean[...] = 0.5
    source.body[2].bn.num_batches_tracked[...] = 7
    arrays = {name: a for name, a in target.named_buffers()}
    arrays.update({name: p.data for name, p in target.named_parameters()})
    state = {k: v.astype(np.float64) if v.dtype == np.float32 else v
             for k, v in source.state_dict().items()}
    target.load_state_dict(state)
    for name, p in target.named_parameters():
        assert p.data is arrays[name] and p.dtype == np.float32
    for name, b in target.named_buffers():
        assert b is arrays[name]
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value)


def test_strict_load_names_missing_unexpected_and_wrong_shape_keys():
    net = _net()
    state = net.state_dict()
    del state["head.bias"]
    state["head.gamma"] = np.ones(2)
    state["body.0.weight"] = np.ones((5, 3))
    with pytest.raises(ValueError) as info:
        net.load_state_dict(state)
    message = str(info.value)
    assert "head.bias" in message and "head.gamma" in message
    assert "body.0.weight" in message and "(5, 3)" in message and "(4, 3)" in message


def test_non_strict_load_returns_the_key_lists_and_loads_the_rest():
    net = _net()
    state = {"head.weight": np.full((2, 4), 2.0), "unknown": np.ones(1)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert unexpected == ["unknown"]
    assert missing == [k for k in STATE_KEYS if k != "head.weight"]
    np.testing.assert_array_equal(net.head.weight.data, 2.0)


def test_non_strict_load_still_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"head.weight.*\(4, 2\).*\(2, 4\)"):
        _net().load_state_dict({"head.weight": np.ones((4, 2))}, strict=False)


# ---- modes, gradients, freezing ----------------------------------------------------------


def test_train_and_eval_recurse_and_return_the_module():
    net = _net()
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert net.train() is net
    assert all(m.training for m in net.modules())
    net.body.eval()
    assert net.training and not net.body[2].bn.training and net.extra[0].bn.training


def _loss(net):
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    return net(x).sum()


def test_zero_grad_clears_or_zeroes_every_gradient():
    net = _net()
    _loss(net).backward()
    assert all(p.grad is not None for p in net.parameters())
    grads = [p.grad for p in net.parameters()]
    net.zero_grad(set_to_none=False)
    assert all(p.grad is g and not g.any() for p, g in zip(net.parameters(), grads))
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_requires_grad_false_freezes_parameters():
    net = _net()
    net.body.requires_grad_(False)
    x = minnet.tensor(np.ones((4, 3), np.float32), requires_grad=True)
    net(x).sum().backward()
    assert all(p.grad is None for p in net.body.parameters())
    assert net.head.weight.grad is not None and x.grad is not None
    net.body.requires_grad_(True)
    assert all(p.requires_grad for p in net.parameters())


def test_parameters_require_grad_and_registration_is_type_checked():
    layer = nn.Linear(2, 3)
    assert isinstance(layer.weight, nn.Parameter) and layer.weight.requires_grad
    with pytest.raises(TypeError, match="'weight'"):
        layer.weight = minnet.tensor(np.ones((3, 2)))
    layer.weight = nn.Parameter(np.zeros((3, 2), np.float32))
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]


def test_module_without_base_init_fails_clearly():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match="Module.__init__"):
        Broken()


def test_double_and_float_cast_parameters_and_floating_buffers():
    net = _net().double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.body[2].bn.running_var.dtype == np.float64
    assert net.body[2].bn.num_batches_tracked.dtype == np.int64
    assert _loss(net).dtype == np.float64
    assert all(p.dtype == np.float32 for p in net.float().parameters())


# ---- buffers -----------------------------------------------------------------------------


def test_persistent_and_non_persistent_buffers():
    net = _net()
    buffers = [name for name, _ in net.named_buffers()]
    assert "body.2.cache" in buffers and "body.2.scale" in buffers
    assert "body.2.cache" not in net.state_dict() and "body.2.scale" in net.state_dict()
    net.body[2].scale = np.full(4, 3.0, np.float32)  # assignment replaces the buffer
    np.testing.assert_array_equal(net.state_dict()["body.2.scale"], 3.0)
    with pytest.raises(ValueError, match="'a.b'"):
        net.register_buffer("a.b", np.ones(1))


# ---- forward hooks -----------------------------------------------------------------------


def test_forward_pre_hook_sees_and_may_replace_the_inputs():
    layer = nn.Identity()
    seen = []
    layer.register_forward_pre_hook(lambda module, args: seen.append((module, args)))
    handle = layer.register_forward_pre_hook(lambda module, args: args[0] * 2)  # non-tuple: wrapped
    x = minnet.tensor(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(layer(x).data, [2.0, 4.0])
    assert seen[0][0] is layer and seen[0][1] == (x,)
    handle.remove()
    np.testing.assert_array_equal(layer(x).data, [1.0, 2.0])


def test_forward_hook_sees_inputs_and_output_and_may_replace_the_output():
    layer = nn.ReLU()
    log = []
    layer.register_forward_pre_hook(lambda module, args: (args[0] - 1,))
    layer.register_forward_hook(lambda module, args, out: log.append((args[0].data, out.data)))
    handle = layer.register_forward_hook(lambda module, args, out: out + 10)
    out = layer(minnet.tensor(np.array([0.0, 3.0])))
    np.testing.assert_array_equal(log[0][0], [-1.0, 2.0])  # the args after the pre-hook
    np.testing.assert_array_equal(log[0][1], [0.0, 2.0])
    np.testing.assert_array_equal(out.data, [10.0, 12.0])
    handle.remove()
    handle.remove()  # idempotent
    np.testing.assert_array_equal(layer(minnet.tensor(np.array([0.0, 3.0]))).data, [0.0, 2.0])


def test_hooks_run_in_registration_order():
    layer, order = nn.Identity(), []
    for i in range(3):
        layer.register_forward_hook(lambda module, args, out, i=i: order.append(i))
    layer(minnet.tensor(np.ones(1)))
    assert order == [0, 1, 2]


def test_hooks_survive_deepcopy_and_the_copy_is_independent():
    net = _net()
    calls = []
    handle = net.head.register_forward_hook(lambda module, args, out: calls.append(module))
    clone = copy.deepcopy(net)
    _loss(clone)
    assert calls == [clone.head]  # the hook runs on the copy, with the copy as module
    handle.remove()  # removes it from the original only
    _loss(clone), _loss(net)
    assert calls == [clone.head, clone.head]
    clone.head.weight.data[...] = 0.0
    assert net.head.weight.data.any()
    assert not np.shares_memory(clone.body[2].bn.running_mean, net.body[2].bn.running_mean)


# ---- resizable buffers and the post-load hook --------------------------------------------


class _Lazy(nn.Module):
    """A resizable ``stat`` (None until ``forward`` sees data), an ordinary ``count`` buffer,
    and ``seen``: state outside the buffers that ``_load_state_dict_post`` rebuilds."""

    def __init__(self):
        super().__init__()
        self.register_buffer("stat", None, resizable=True)
        self.register_buffer("count", np.zeros(2, dtype=np.int64))
        self.seen = None

    def forward(self, x):
        self.stat = x.data.max(axis=0)
        self.seen = self.stat.shape
        return x

    def _load_state_dict_post(self):
        self.seen = None if self.stat is None else self.stat.shape


def _lazy_pair():
    return nn.Sequential(nn.Linear(2, 2), _Lazy())


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_resizable_buffer_is_replaced_by_the_saved_array(shape, dtype):
    trained, fresh = _lazy_pair(), _lazy_pair()
    trained[1](minnet.Tensor(np.arange(np.prod(shape) * 2, dtype=dtype).reshape(2, *shape)))
    assert "1.stat" not in fresh.state_dict()
    fresh.load_state_dict(trained.state_dict())  # strict: the None buffer's key is expected
    saved = trained[1].stat
    assert fresh[1].stat.shape == saved.shape and fresh[1].stat.dtype == saved.dtype
    np.testing.assert_array_equal(fresh[1].stat, saved)
    assert fresh[1].stat is not saved and fresh[1].seen == saved.shape  # a copy; hook ran
    other = np.ones((5,), dtype=np.float64)  # a different shape replaces it too, keeping dtype
    fresh.load_state_dict({**trained.state_dict(), "1.stat": other})
    assert fresh[1].stat.shape == (5,) and fresh[1].stat.dtype == saved.dtype


def test_state_of_a_model_that_saw_no_data_loads_strictly():
    trained, fresh = _lazy_pair(), _lazy_pair()
    trained[1](minnet.Tensor(np.ones((2, 2), np.float32)))
    fresh.load_state_dict(_lazy_pair().state_dict())
    assert fresh[1].stat is None and fresh[1].seen is None
    with pytest.raises(ValueError, match=r"missing keys \['1.stat'\]"):  # no longer optional
        trained.load_state_dict(_lazy_pair().state_dict())
    assert trained.load_state_dict(_lazy_pair().state_dict(), strict=False).missing_keys == ["1.stat"]
    assert trained[1].stat is not None


def test_ordinary_buffers_keep_their_shape_check_next_to_resizable_ones():
    trained = _lazy_pair()
    trained[1](minnet.Tensor(np.ones((2, 2), np.float32)))
    state = {**trained.state_dict(), "1.count": np.zeros(3, dtype=np.int64)}
    with pytest.raises(ValueError, match=r"1.count: checkpoint \(3,\), model \(2,\)"):
        _lazy_pair().load_state_dict(state)


def test_non_persistent_resizable_buffer_is_neither_saved_nor_expected():
    module = nn.Identity()
    module.register_buffer("cache", None, persistent=False, resizable=True)
    module.cache = np.ones(3)
    assert "cache" not in module.state_dict()
    with pytest.raises(ValueError, match="unexpected keys"):
        module.load_state_dict({"cache": np.ones(3)})
