"""SGD, Adam and AdamW: agreement with torch.optim, closed-form laws, state, validation."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import optimizers
from minnet.nn import Parameter


def _arrays(seed, shapes, steps, dtype=np.float64):
    """Initial parameters and a gradient sequence, one gradient per parameter per step."""
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=s).astype(dtype) for s in shapes]
    grads = [[rng.normal(size=s).astype(dtype) for s in shapes] for _ in range(steps)]
    return params, grads


def _run(make_optimizer, params, grads, group_sizes=None):
    """Step an optimizer over the gradient sequence; return the final parameter arrays."""
    ps = [Parameter(p.copy()) for p in params]
    opt = make_optimizer(_grouped(ps, group_sizes))
    for step_grads in grads:
        for p, g in zip(ps, step_grads):
            p.grad = g.copy()
        opt.step()
    return [p.data for p in ps]


def _run_torch(torch, make_optimizer, params, grads, group_sizes=None):
    ps = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = make_optimizer(_grouped(ps, group_sizes))
    for step_grads in grads:
        for p, g in zip(ps, step_grads):
            p.grad = torch.tensor(g.copy())
        opt.step()
    return [p.detach().numpy() for p in ps]


def _grouped(ps, group_sizes):
    """Split ``ps`` into consecutive groups of the given sizes (None: one plain list)."""
    if group_sizes is None:
        return ps
    bounds = np.cumsum([0] + list(group_sizes))
    return [dict(params=ps[a:b], **options)
            for (a, b), options in zip(zip(bounds[:-1], bounds[1:]), _GROUP_OPTIONS)]


_GROUP_OPTIONS = [{}, {"lr": 0.05, "weight_decay": 0.2}]
SHAPES = [(3, 4), (5,), ()]
seeds = st.integers(0, 2**32 - 1)
steps = st.integers(1, 6)


def _assert_match_torch(torch, ours, theirs, seed, n_steps, dtype=np.float64, rtol=1e-12,
                        group_sizes=None):
    params, grads = _arrays(seed, SHAPES, n_steps, dtype)
    got = _run(ours, params, grads, group_sizes)
    want = _run_torch(torch, theirs, params, grads, group_sizes)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)


# ---- agreement with PyTorch -----------------------------------------------------------------
@given(seed=seeds, n_steps=steps, lr=st.floats(1e-4, 1.0), momentum=st.floats(0.0, 0.99),
       dampening=st.floats(0.0, 0.9), nesterov=st.booleans(), weight_decay=st.floats(0.0, 0.1))
def test_sgd_matches_torch(seed, n_steps, lr, momentum, dampening, nesterov, weight_decay):
    torch = pytest.importorskip("torch")
    if nesterov:
        momentum, dampening = max(momentum, 0.1), 0.0
    kw = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
              weight_decay=weight_decay)
    _assert_match_torch(torch, lambda ps: optimizers.SGD(ps, **kw),
                        lambda ps: torch.optim.SGD(ps, **kw), seed, n_steps)


@given(seed=seeds, n_steps=steps, lr=st.floats(1e-4, 1.0), beta1=st.floats(0.0, 0.99),
       beta2=st.floats(0.0, 0.9999), eps=st.floats(1e-10, 1e-3),
       weight_decay=st.floats(0.0, 0.1), amsgrad=st.booleans(), decoupled=st.booleans())
def test_adam_matches_torch(seed, n_steps, lr, beta1, beta2, eps, weight_decay, amsgrad,
                            decoupled):
    torch = pytest.importorskip("torch")
    ours, theirs = ((optimizers.AdamW, torch.optim.AdamW) if decoupled
                    else (optimizers.Adam, torch.optim.Adam))
    kw = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
    _assert_match_torch(torch, lambda ps: ours(ps, **kw), lambda ps: theirs(ps, **kw), seed,
                        n_steps, rtol=1e-10)


@pytest.mark.parametrize("name, kw", [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01, amsgrad=True)),
])
def test_param_groups_and_float32_match_torch(name, kw):
    torch = pytest.importorskip("torch")
    ours, theirs = getattr(optimizers, name), getattr(torch.optim, name)
    for dtype, rtol in [(np.float64, 1e-12), (np.float32, 1e-5)]:
        _assert_match_torch(torch, lambda ps: ours(ps, **kw), lambda ps: theirs(ps, **kw),
                            seed=7, n_steps=5, dtype=dtype, rtol=rtol, group_sizes=[2, 1])


def test_add_param_group_matches_torch():
    torch = pytest.importorskip("torch")
    params, grads = _arrays(3, SHAPES, 6)
    ours = [Parameter(p.copy()) for p in params]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = optimizers.Adam(ours[:1], lr=0.1)
    topt = torch.optim.Adam(theirs[:1], lr=0.1)
    for t, step_grads in enumerate(grads):
        if t == 2:
            opt.add_param_group({"params": ours[1:], "lr": 0.02, "betas": (0.5, 0.9)})
            topt.add_param_group({"params": theirs[1:], "lr": 0.02, "betas": (0.5, 0.9)})
        for p, tp, g in zip(ours, theirs, step_grads):
            p.grad, tp.grad = g.copy(), torch.tensor(g.copy())
        opt.step()
        topt.step()
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-12)


# ---- laws --------------------------------------------------------------------------------
@given(seed=seeds, log_scale=st.floats(-3, 3), lr=st.floats(1e-4, 1.0),
       beta1=st.floats(0.0, 0.99), beta2=st.floats(0.0, 0.9999))
def test_adam_first_step_is_lr_times_sign_of_gradient(seed, log_scale, lr, beta1, beta2):
    """Step 1: m̂ = g and v̂ = g², so the step is lr * g / (|g| + eps) ≈ lr * sign(g)."""
    rng = np.random.default_rng(seed)
    grad = rng.choice([-1.0, 1.0], size=20) * rng.uniform(0.5, 2.0, size=20) * 10.0 ** log_scale
    p = Parameter(np.zeros(20))
    p.grad = grad
    optimizers.Adam([p], lr=lr, betas=(beta1, beta2), eps=1e-8).step()
    step = -p.data
    np.testing.assert_allclose(step, lr * np.sign(grad), rtol=1e-8 / np.abs(grad).min() + 1e-12)


@given(n_steps=st.integers(1, 30), lr=st.floats(1e-3, 1.0), momentum=st.floats(0.01, 0.99),
       dampening=st.floats(0.0, 0.9), g=st.floats(-10, 10))
def test_sgd_momentum_on_constant_gradient_is_a_geometric_series(n_steps, lr, momentum,
                                                                  dampening, g):
    r"""b_1 = g, b_k = μ b_{k-1} + (1-τ) g, so Σ_{k=1}^n b_k = g (S + (1-τ)(n - S)/(1-μ))
    with S = (1-μ^n)/(1-μ), and θ_n = θ_0 - lr Σ b_k."""
    p = Parameter(np.zeros(1))
    opt = optimizers.SGD([p], lr=lr, momentum=momentum, dampening=dampening)
    for _ in range(n_steps):
        p.grad = np.array([g])
        opt.step()
    s = (1 - momentum ** n_steps) / (1 - momentum)
    expected = -lr * g * (s + (1 - dampening) * (n_steps - s) / (1 - momentum))
    np.testing.assert_allclose(p.data[0], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_with_zero_gradient_only_decays(dtype, amsgrad):
    theta0 = np.random.default_rng(0).normal(size=(4, 3)).astype(dtype)
    lr, wd = 0.1, 0.3
    p = Parameter(theta0.copy())
    opt = optimizers.AdamW([p], lr=lr, weight_decay=wd, amsgrad=amsgrad)
    expected = theta0.copy()
    for _ in range(5):
        p.grad = np.zeros_like(theta0)
        opt.step()
        expected *= 1 - lr * wd
        np.testing.assert_array_equal(p.data, expected)


def test_adam_weight_decay_is_l2_added_to_the_gradient():
    """Adam's weight_decay λ acts exactly as a gradient g + λθ with no decay."""
    params, grads = _arrays(5, [(6,)], 4)
    wd = 0.25
    with_decay = _run(lambda ps: optimizers.Adam(ps, lr=0.1, weight_decay=wd), params, grads)
    p = Parameter(params[0].copy())
    opt = optimizers.Adam([p], lr=0.1)
    for (g,) in grads:
        p.grad = g + wd * p.data
        opt.step()
    np.testing.assert_array_equal(with_decay[0], p.data)


OPTIMIZERS = [
    (optimizers.SGD, dict(lr=0.1)),
    (optimizers.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (optimizers.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optimizers.Adam, dict(lr=0.01, weight_decay=0.01)),
    (optimizers.Adam, dict(lr=0.01, amsgrad=True)),
    (optimizers.AdamW, dict(lr=0.01)),
]


@pytest.mark.parametrize("cls, kw", OPTIMIZERS)
def test_params_without_grad_or_requires_grad_are_untouched(cls, kw):
    params, grads = _arrays(1, [(3,), (3,), (3,)], 3)
    active, no_grad, frozen = (Parameter(p.copy()) for p in params)
    frozen.requires_grad = False
    opt = cls([active, no_grad, frozen], **kw)
    for g, _, g_frozen in grads:
        active.grad, frozen.grad = g.copy(), g_frozen.copy()
        opt.step()
    assert not np.array_equal(active.data, params[0])
    np.testing.assert_array_equal(no_grad.data, params[1])
    np.testing.assert_array_equal(frozen.data, params[2])
    assert id(no_grad) not in opt.state and id(frozen) not in opt.state


@pytest.mark.parametrize("cls, kw", OPTIMIZERS)
@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
def test_update_is_in_place_and_keeps_float32(cls, kw, grad_dtype):
    data = np.random.default_rng(2).normal(size=(2, 3)).astype(np.float32)
    p = Parameter(data)
    row = p.data[0]
    before = row.copy()
    opt = cls([p], **kw)
    for _ in range(2):
        p.grad = np.ones((2, 3), dtype=grad_dtype)
        opt.step()
    assert p.data is data and p.data.dtype == np.float32
    assert not np.array_equal(row, before)
    for value in opt.state[id(p)].values():
        assert isinstance(value, int) or value.dtype == np.float32


@pytest.mark.parametrize("cls, kw", OPTIMIZERS)
def test_state_dict_round_trip_resumes_bitwise(cls, kw, tmp_path):
    """Save after 3 steps (through an npz file), restore into a fresh optimizer built with
    other hyperparameters, take 3 more steps: bitwise the uninterrupted run."""
    params, grads = _arrays(4, SHAPES, 6)
    uninterrupted = _run(lambda ps: cls(_grouped(ps, [2, 1]), **kw), params, grads)

    first = [Parameter(p.copy()) for p in params]
    opt = cls(_grouped(first, [2, 1]), **kw)
    for step_grads in grads[:3]:
        for p, g in zip(first, step_grads):
            p.grad = g.copy()
        opt.step()
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        saved = dict(f)

    resumed = [Parameter(p.data.copy()) for p in first]
    opt = cls(_grouped(resumed, [2, 1]), **{**kw, "lr": 123.0})
    opt.load_state_dict(saved)
    for step_grads in grads[3:]:
        for p, g in zip(resumed, step_grads):
            p.grad = g.copy()
        opt.step()
    for got, want in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(got.data, want)
    again = opt.state_dict()
    assert all(type(v) is np.ndarray for v in again.values())
    assert opt.param_groups[0]["lr"] == kw["lr"]


def test_state_dict_restores_every_option_exactly():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    opt = optimizers.Adam([{"params": [p]}, {"params": [q], "betas": (0.3, 0.7)}], lr=0.1 / 3,
                          eps=1e-7, amsgrad=True)
    saved = opt.state_dict()
    other = optimizers.Adam([{"params": [Parameter(np.zeros(2))]},
                             {"params": [Parameter(np.zeros(3))]}])
    other.load_state_dict(saved)
    for mine, theirs in zip(other.param_groups, opt.param_groups):
        assert {k: v for k, v in mine.items() if k != "params"} == \
               {k: v for k, v in theirs.items() if k != "params"}
    assert other.param_groups[1]["betas"] == (0.3, 0.7)
    assert isinstance(other.param_groups[0]["amsgrad"], bool)


def test_load_state_dict_rejects_a_mismatched_optimizer():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    opt = optimizers.SGD([p, q], lr=0.1, momentum=0.9)
    p.grad, q.grad = np.ones(2), np.ones(3)
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="parameter group 0 has 1 parameters"):
        optimizers.SGD([Parameter(np.zeros(2))], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="parameter groups"):
        optimizers.SGD([{"params": [Parameter(np.zeros(2))]},
                        {"params": [Parameter(np.zeros(3))]}], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"shape \(2,\), its parameter has shape \(3,\)"):
        optimizers.SGD([Parameter(np.zeros(3)), Parameter(np.zeros(2))],
                       lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="unexpected key 'momentum'"):
        opt.load_state_dict({**saved, "momentum": np.array(0.5)})
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.load_state_dict({**saved, "param_groups.0.lr": np.array(-1.0)})
    assert opt.param_groups[0]["lr"] == 0.1


def test_zero_grad():
    p, q = Parameter(np.ones(2)), Parameter(np.ones(3))
    opt = optimizers.SGD([p, q], lr=0.1)
    grad = np.ones(2)
    p.grad = grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad and not grad.any() and q.grad is None
    opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_step_calls_the_closure_and_returns_its_value():
    p = Parameter(np.array([2.0]))
    opt = optimizers.SGD([p], lr=0.25)

    def closure():
        p.grad = 2 * p.data  # gradient of p**2
        return float(p.data[0] ** 2)

    assert opt.step(closure) == 4.0
    np.testing.assert_array_equal(p.data, [1.0])


# ---- validation --------------------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda ps: optimizers.SGD(ps, lr=-0.1), r"lr must be >= 0.0, got -0.1"),
    (lambda ps: optimizers.SGD(ps, lr=0.1, momentum=-0.5), r"momentum must be >= 0.0, got -0.5"),
    (lambda ps: optimizers.SGD(ps, lr=0.1, weight_decay=-1.0), r"weight_decay must be >= 0.0"),
    (lambda ps: optimizers.SGD(ps, lr=0.1, nesterov=True), r"nesterov=True requires momentum"),
    (lambda ps: optimizers.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     r"dampening=0.1"),
    (lambda ps: optimizers.SGD(ps, lr=float("nan")), r"lr must not be NaN"),
    (lambda ps: optimizers.Adam(ps, lr=-1e-3), r"lr must be >= 0.0, got -0.001"),
    (lambda ps: optimizers.Adam(ps, betas=(1.0, 0.999)), r"betas\[0\] must be < 1.0, got 1.0"),
    (lambda ps: optimizers.Adam(ps, betas=(0.9, -0.1)), r"betas\[1\] must be >= 0.0, got -0.1"),
    (lambda ps: optimizers.Adam(ps, betas=(0.9,)), r"betas must be a pair"),
    (lambda ps: optimizers.Adam(ps, eps=-1e-8), r"eps must be >= 0.0, got -1e-08"),
    (lambda ps: optimizers.AdamW(ps, weight_decay=-0.01), r"weight_decay must be >= 0.0"),
    (lambda ps: optimizers.SGD([{"params": ps, "lr": -2.0}], lr=0.1), r"lr must be >= 0.0"),
    (lambda ps: optimizers.SGD([], lr=0.1), r"params is empty"),
    (lambda ps: optimizers.SGD(ps + ps, lr=0.1), r"more than once"),
    (lambda ps: optimizers.SGD([ps[0] * 2.0], lr=0.1), r"non-leaf"),
    (lambda ps: optimizers.SGD([{"lr": 0.1}], lr=0.1), r"'params' key"),
])
def test_bad_arguments_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make([Parameter(np.zeros(2))])


@pytest.mark.parametrize("make, message", [
    (lambda ps: optimizers.SGD([np.zeros(2)], lr=0.1), r"only tensors, got ndarray"),
    (lambda ps: optimizers.SGD(ps[0], lr=0.1), r"iterable of tensors or of dicts, got Parameter"),
    (lambda ps: optimizers.SGD([ps[0], {"params": ps}], lr=0.1), r"a mix"),
    (lambda ps: optimizers.SGD([_IntTensor()], lr=0.1), r"only floating tensors"),
    (lambda ps: optimizers.SGD(ps, lr="0.1"), r"lr must be a real number, got '0.1'"),
    (lambda ps: optimizers.SGD(ps, lr=0.1, momentum=0.9, nesterov=1), r"nesterov must be a bool"),
])
def test_bad_arguments_raise_type_error(make, message):
    with pytest.raises(TypeError, match=message):
        make([Parameter(np.zeros(2))])


class _IntTensor:
    """A tensor-like object holding integers (minnet refuses such a Parameter)."""
    data = np.zeros(2, dtype=np.int64)
    grad = None
    requires_grad = True


def test_gradient_of_the_wrong_shape_is_an_error():
    p = Parameter(np.zeros(3))
    p.grad = np.zeros(4)
    with pytest.raises(ValueError, match=r"gradient of shape \(4,\).*shape \(3,\)"):
        optimizers.SGD([p], lr=0.1).step()


def test_sgd_positional_arguments_follow_the_documented_order():
    """SGD(params, lr, momentum, nesterov, weight_decay): the same run as by keyword."""
    params, grads = _arrays(6, [(4,)], 3)
    by_position = _run(lambda ps: optimizers.SGD(ps, 0.1, 0.9, True, 0.01), params, grads)
    by_keyword = _run(lambda ps: optimizers.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                                weight_decay=0.01), params, grads)
    np.testing.assert_array_equal(by_position[0], by_keyword[0])
    with pytest.raises(TypeError):
        optimizers.SGD([Parameter(np.zeros(1))], 0.1, 0.9, False, 0.0, 0.1)
