"""Learning-rate schedulers: agreement with torch.optim.lr_scheduler, closed-form laws, state."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minnet import optimizers
from minnet.nn import Parameter

BASE_LRS = (0.1, 0.03)
EPOCHS = 40


def _optimizer(lrs=BASE_LRS):
    return optimizers.SGD([{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in lrs],
                          lr=1.0)


def _lrs(scheduler, epochs=EPOCHS):
    """The rates of epochs 0..epochs-1: the constructor's, then one per ``step``."""
    out = [scheduler.get_last_lr()]
    for _ in range(epochs - 1):
        scheduler.step()
        out.append(scheduler.get_last_lr())
    return np.array(out)


def _torch_lrs(torch, make_scheduler, epochs=EPOCHS):
    params = [torch.zeros(2, requires_grad=True) for _ in BASE_LRS]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, BASE_LRS)], lr=1.0)
    scheduler = make_scheduler(torch.optim.lr_scheduler, opt)
    out = [scheduler.get_last_lr()]
    for _ in range(epochs - 1):
        opt.step()
        scheduler.step()
        out.append(scheduler.get_last_lr())
    return np.array(out)


def _assert_match_torch(make_scheduler):
    torch = pytest.importorskip("torch")
    ours = _lrs(make_scheduler(optimizers, _optimizer()))
    theirs = _torch_lrs(torch, make_scheduler)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


# ---- agreement with PyTorch -----------------------------------------------------------------
@given(step_size=st.integers(1, 12), gamma=st.floats(0.05, 1.0))
def test_step_lr_matches_torch(step_size, gamma):
    _assert_match_torch(lambda m, opt: m.StepLR(opt, step_size, gamma=gamma))


@given(T_max=st.integers(1, 25), eta_min=st.sampled_from([0.0, 1e-3, 0.02]))
def test_cosine_annealing_lr_matches_torch(T_max, eta_min):
    _assert_match_torch(lambda m, opt: m.CosineAnnealingLR(opt, T_max, eta_min=eta_min))


@given(start_factor=st.floats(0.01, 1.0), end_factor=st.floats(0.0, 1.0),
       total_iters=st.integers(1, 30))
def test_linear_lr_matches_torch(start_factor, end_factor, total_iters):
    _assert_match_torch(lambda m, opt: m.LinearLR(opt, start_factor=start_factor,
                                                  end_factor=end_factor, total_iters=total_iters))


@given(warmup=st.integers(1, 10), T_max=st.integers(1, 25))
def test_warmup_then_cosine_sequential_lr_matches_torch(warmup, T_max):
    def make(m, opt):
        schedulers = [m.LinearLR(opt, start_factor=0.1, total_iters=warmup),
                      m.CosineAnnealingLR(opt, T_max, eta_min=1e-3)]
        return m.SequentialLR(opt, schedulers, milestones=[warmup])
    _assert_match_torch(make)


def test_three_stage_sequential_lr_matches_torch():
    def make(m, opt):
        schedulers = [m.LinearLR(opt, start_factor=0.25, total_iters=4), m.StepLR(opt, 3, 0.5),
                      m.CosineAnnealingLR(opt, 10)]
        return m.SequentialLR(opt, schedulers, milestones=[5, 17])
    _assert_match_torch(make)


# ---- laws --------------------------------------------------------------------------------
@given(step_size=st.integers(1, 12), gamma=st.floats(0.05, 0.95))
def test_step_lr_decays_by_gamma_every_step_size_epochs(step_size, gamma):
    lrs = _lrs(optimizers.StepLR(_optimizer(), step_size, gamma=gamma))
    np.testing.assert_array_equal(lrs[0], BASE_LRS)
    for t in range(1, EPOCHS):
        ratio = lrs[t] / lrs[t - 1]
        if t % step_size:
            np.testing.assert_array_equal(ratio, 1.0)
        else:
            np.testing.assert_allclose(ratio, gamma, rtol=1e-12)


@given(T_max=st.integers(1, 25), eta_min=st.floats(0.0, 0.02))
def test_cosine_annealing_lr_endpoints_symmetry_and_bounds(T_max, eta_min):
    lrs = _lrs(optimizers.CosineAnnealingLR(_optimizer(), T_max, eta_min=eta_min),
               epochs=2 * T_max + 1)
    np.testing.assert_allclose(lrs[0], BASE_LRS, rtol=1e-15)
    np.testing.assert_allclose(lrs[T_max], eta_min, atol=1e-15)
    np.testing.assert_allclose(lrs[:T_max + 1], lrs[T_max:][::-1], rtol=1e-12, atol=1e-15)
    assert np.all(np.diff(lrs[:T_max + 1], axis=0) <= 1e-15)
    assert np.all(lrs >= eta_min - 1e-15) and np.all(lrs <= np.array(BASE_LRS) + 1e-15)


@given(start_factor=st.floats(0.01, 1.0), end_factor=st.floats(0.0, 1.0),
       total_iters=st.integers(1, 30))
def test_linear_lr_ramps_monotonically_between_the_factors(start_factor, end_factor,
                                                            total_iters):
    lrs = _lrs(optimizers.LinearLR(_optimizer(), start_factor, end_factor, total_iters))
    base = np.array(BASE_LRS)
    np.testing.assert_allclose(lrs[0], base * start_factor, rtol=1e-12)
    np.testing.assert_allclose(lrs[total_iters:], np.broadcast_to(
        base * end_factor, lrs[total_iters:].shape), rtol=1e-12, atol=1e-15)
    steps = np.diff(lrs[:total_iters + 1], axis=0)
    np.testing.assert_allclose(steps, np.broadcast_to(
        base * (end_factor - start_factor) / total_iters, steps.shape), rtol=1e-9, atol=1e-15)


@given(warmup=st.integers(1, 10), T_max=st.integers(1, 25))
def test_sequential_lr_is_the_first_schedule_then_the_second_restarted(warmup, T_max):
    opt = _optimizer()
    schedulers = [optimizers.LinearLR(opt, start_factor=0.1, total_iters=warmup),
                  optimizers.CosineAnnealingLR(opt, T_max)]
    lrs = _lrs(optimizers.SequentialLR(opt, schedulers, milestones=[warmup]))
    first = _lrs(optimizers.LinearLR(_optimizer(), start_factor=0.1, total_iters=warmup))
    second = _lrs(optimizers.CosineAnnealingLR(_optimizer(), T_max))
    np.testing.assert_array_equal(lrs[:warmup], first[:warmup])
    np.testing.assert_array_equal(lrs[warmup:], second[:EPOCHS - warmup])


def test_constructing_a_scheduler_sets_the_initial_lr():
    opt = _optimizer()
    optimizers.LinearLR(opt, start_factor=0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.5 * lr for lr in BASE_LRS]
    assert [g["initial_lr"] for g in opt.param_groups] == list(BASE_LRS)
    second = optimizers.StepLR(opt, 2)
    assert second.base_lrs == list(BASE_LRS)


def test_the_optimizer_steps_with_the_scheduled_lr():
    p = Parameter(np.zeros(1))
    opt = optimizers.SGD([p], lr=1.0)
    scheduler = optimizers.StepLR(opt, step_size=1, gamma=0.5)
    for epoch in range(4):
        before = p.data.copy()
        p.grad = np.ones(1)
        opt.step()
        np.testing.assert_array_equal(before - p.data, [0.5 ** epoch])
        scheduler.step()


def _warmup_cosine(opt):
    schedulers = [optimizers.LinearLR(opt, start_factor=0.2, total_iters=3),
                  optimizers.CosineAnnealingLR(opt, T_max=8)]
    return optimizers.SequentialLR(opt, schedulers, milestones=[3])


@pytest.mark.parametrize("make", [
    lambda opt: optimizers.StepLR(opt, 3, gamma=0.3),
    lambda opt: optimizers.CosineAnnealingLR(opt, 10, eta_min=0.01),
    lambda opt: optimizers.LinearLR(opt, 0.1, 0.9, 7),
    _warmup_cosine,
])
def test_state_dict_round_trip_resumes_the_schedule(make, tmp_path):
    """Save optimizer and scheduler after 5 epochs (through npz), rebuild both, load, go on:
    the same learning rates as the uninterrupted schedule."""
    uninterrupted = _lrs(make(_optimizer()), epochs=15)
    opt = _optimizer()
    scheduler = make(opt)
    for _ in range(4):
        scheduler.step()
    np.savez(tmp_path / "s.npz", **{f"opt.{k}": v for k, v in opt.state_dict().items()},
             **{f"sched.{k}": v for k, v in scheduler.state_dict().items()})
    with np.load(tmp_path / "s.npz", allow_pickle=False) as f:
        saved = dict(f)

    opt = _optimizer(lrs=(5.0, 7.0))
    scheduler = make(opt)
    opt.load_state_dict({k[4:]: v for k, v in saved.items() if k.startswith("opt.")})
    scheduler.load_state_dict({k[6:]: v for k, v in saved.items() if k.startswith("sched.")})
    resumed = _lrs(scheduler, epochs=11)
    np.testing.assert_array_equal(resumed, uninterrupted[4:])
    np.testing.assert_array_equal([g["lr"] for g in opt.param_groups], uninterrupted[-1])


# ---- validation --------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, message", [
    (lambda opt: optimizers.StepLR(opt, 0), ValueError, r"step_size must be >= 1, got 0"),
    (lambda opt: optimizers.StepLR(opt, 2.5), TypeError, r"step_size must be an integer"),
    (lambda opt: optimizers.StepLR(opt, 2, gamma=-0.1), ValueError, r"gamma must be >= 0.0"),
    (lambda opt: optimizers.CosineAnnealingLR(opt, 0), ValueError, r"T_max must be >= 1, got 0"),
    (lambda opt: optimizers.CosineAnnealingLR(opt, 5, eta_min=-1.0), ValueError, r"eta_min"),
    (lambda opt: optimizers.LinearLR(opt, start_factor=0.0), ValueError,
     r"start_factor must be > 0.0, got 0.0"),
    (lambda opt: optimizers.LinearLR(opt, start_factor=1.5), ValueError,
     r"start_factor must be <= 1.0, got 1.5"),
    (lambda opt: optimizers.LinearLR(opt, end_factor=1.2), ValueError, r"end_factor must be <="),
    (lambda opt: optimizers.LinearLR(opt, total_iters=0), ValueError, r"total_iters must be >= 1"),
    (lambda opt: optimizers.StepLR("sgd", 2), TypeError, r"optimizer must be an Optimizer"),
    (lambda opt: optimizers.SequentialLR(opt, [], []), ValueError, r"schedulers is empty"),
    (lambda opt: optimizers.SequentialLR(opt, [optimizers.StepLR(opt, 2)] * 2, []), ValueError,
     r"milestones must have len\(schedulers\) - 1 = 1 entries, got \[\]"),
    (lambda opt: optimizers.SequentialLR(opt, [optimizers.StepLR(opt, 2)] * 3, [4, 4]),
     ValueError, r"milestones\[1\] must be >= 5, got 4"),
    (lambda opt: optimizers.SequentialLR(opt, [optimizers.StepLR(_optimizer(), 2)], []),
     ValueError, r"schedulers\[0\] belongs to another optimizer"),
    (lambda opt: optimizers.SequentialLR(opt, [opt], []), TypeError,
     r"schedulers\[0\] must be an LRScheduler, got SGD"),
])
def test_bad_arguments_raise(make, error, message):
    with pytest.raises(error, match=message):
        make(_optimizer())


def test_load_state_dict_rejects_a_mismatched_scheduler():
    saved = optimizers.StepLR(_optimizer(), 2).state_dict()
    with pytest.raises(ValueError, match=r"expected \(1,\)"):
        optimizers.StepLR(_optimizer(lrs=(0.1,)), 2).load_state_dict(saved)
    with pytest.raises(ValueError, match="state_dict keys"):
        optimizers.StepLR(_optimizer(), 2).load_state_dict({**saved, "gamma": np.array(0.5)})


def test_closed_form_functions_match_their_definitions():
    assert optimizers.step_lr(0.2, 7, 3, 0.5) == 0.2 * 0.25
    assert optimizers.cosine_annealing_lr(0.2, 5, 10, 0.0) == pytest.approx(0.1, rel=1e-15)
    assert optimizers.cosine_annealing_lr(0.2, 10, 10, 0.05) == pytest.approx(0.05, rel=1e-15)
    assert optimizers.linear_lr(0.2, 2, 0.5, 1.0, 4) == pytest.approx(0.15, rel=1e-15)
    assert optimizers.linear_lr(0.2, 9, 0.5, 1.0, 4) == 0.2
    assert math.isclose(optimizers.cosine_annealing_lr(1.0, 1, 4, 0.0),
                        (1 + math.cos(math.pi / 4)) / 2)
