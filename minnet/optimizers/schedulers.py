"""Learning-rate schedulers: step decay, cosine annealing, linear warm-up, and a sequence of them.

PyTorch's semantics: constructing a scheduler records each group's ``initial_lr`` (unless
already set) as its base rate and sets the learning rate of epoch 0; each ``step()`` advances
one epoch and writes the new rate into every parameter group. Every rate is computed in closed
form from the base rate and the epoch (``lr_at``), so the schedule does not depend on rounding
accumulated by earlier steps; a learning rate changed by hand between steps is overwritten at
the next step.

State dict (flat, npz-ready): ``"last_epoch"`` (0-d int64), ``"base_lrs"`` and ``"last_lr"``
(1-d float64, one entry per parameter group). Test:
``tests/minnet/test_schedulers.py::test_state_dict_round_trip_resumes_the_schedule``.
"""
from __future__ import annotations

import bisect
import math
from typing import Callable, Mapping, Sequence

import numpy as np

from minnet.optimizers.optimizer import Optimizer, check_int, check_real


def step_lr(base_lr: float, epoch: int, step_size: int, gamma: float) -> float:
    r"""Step decay: :math:`\eta_t = \eta_0\, \gamma^{\lfloor t / s \rfloor}`.

    Source: PyTorch's ``torch.optim.lr_scheduler.StepLR``. Tests:
    ``tests/minnet/test_schedulers.py::test_step_lr_matches_torch`` and
    ``::test_step_lr_decays_by_gamma_every_step_size_epochs``.
    """
    return base_lr * gamma ** (epoch // step_size)


def cosine_annealing_lr(base_lr: float, epoch: int, T_max: int, eta_min: float) -> float:
    r"""Cosine annealing:
    :math:`\eta_t = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})(1 + \cos(\pi t / T_{max}))`.

    Past :math:`T_{max}` the cosine continues (the rate rises again), as in PyTorch.
    Source: Loshchilov & Hutter, 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts",
    Eq. 5 (one cycle, no restart); PyTorch's ``CosineAnnealingLR``. Tests:
    ``tests/minnet/test_schedulers.py::test_cosine_annealing_lr_matches_torch`` and
    ``::test_cosine_annealing_lr_endpoints_symmetry_and_bounds``.
    """
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / T_max)) / 2


def linear_lr(base_lr: float, epoch: int, start_factor: float, end_factor: float,
              total_iters: int) -> float:
    r"""Linear ramp of the factor:
    :math:`\eta_t = \eta_0 \big(f_s + (f_e - f_s) \min(t, T) / T\big)`.

    Source: PyTorch's ``torch.optim.lr_scheduler.LinearLR`` (used for warm-up, Goyal et al.,
    2017, "Accurate, Large Minibatch SGD", Sec. 2.2). Tests:
    ``tests/minnet/test_schedulers.py::test_linear_lr_matches_torch`` and
    ``::test_linear_lr_ramps_monotonically_between_the_factors``.
    """
    return base_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters)
                      / total_iters)


class LRScheduler:
    """Base class: subclasses define ``lr_at(base_lr, epoch)``."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def lr_at(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set every group's learning rate."""
        self.last_epoch += 1
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(base_lr, self.last_epoch)
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rates set by the last ``step`` (or the constructor), one per group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"last_epoch": np.array(self.last_epoch, dtype=np.int64),
                "base_lrs": np.array(self.base_lrs, dtype=np.float64),
                "last_lr": np.array(self._last_lr, dtype=np.float64)}

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray]) -> None:
        """Restore the epoch counter and rates saved by ``state_dict``; the optimizer's own
        learning rates come from its state dict. All or nothing (``prepare_load_state_dict``)."""
        self.prepare_load_state_dict(state_dict)()

    def prepare_load_state_dict(self, state_dict: Mapping[str, np.ndarray]) -> Callable[[], None]:
        """Check ``state_dict`` (exactly the keys ``last_epoch``, a non-negative integer
        scalar, and ``base_lrs``, ``last_lr``, one real rate per group) without changing the
        scheduler; return a function that applies it. Raises ``ValueError`` naming the key."""
        keys = {"last_epoch", "base_lrs", "last_lr"}
        if not isinstance(state_dict, Mapping) or set(state_dict) != keys:
            got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict)
            raise ValueError(f"state_dict keys must be {sorted(keys)}, got {got}")
        last_epoch = np.asarray(state_dict["last_epoch"])
        if last_epoch.ndim != 0 or last_epoch.dtype.kind not in "iu" or last_epoch < 0:
            raise ValueError(f"state_dict entry 'last_epoch' must be a non-negative integer "
                             f"scalar, got {last_epoch.dtype} of shape {last_epoch.shape}")
        base_lrs = np.asarray(state_dict["base_lrs"])
        last_lr = np.asarray(state_dict["last_lr"])
        if base_lrs.shape != (len(self.base_lrs),) or last_lr.shape != base_lrs.shape:
            raise ValueError(f"state_dict has rates of shapes {base_lrs.shape} and "
                             f"{last_lr.shape}, expected ({len(self.base_lrs)},)")
        for name, rates in (("base_lrs", base_lrs), ("last_lr", last_lr)):
            if rates.dtype.kind not in "iuf":
                raise ValueError(f"state_dict entry {name!r} has dtype {rates.dtype}, expected "
                                 f"real numbers")

        def apply() -> None:
            self.last_epoch = int(last_epoch)
            self.base_lrs = base_lrs.tolist()
            self._last_lr = last_lr.tolist()

        return apply


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs (see ``step_lr``)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        check_int("step_size", step_size, low=1)
        check_real("gamma", gamma)
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return step_lr(base_lr, epoch, self.step_size, self.gamma)


class CosineAnnealingLR(LRScheduler):
    """Anneal from the base rate to ``eta_min`` over ``T_max`` epochs along a half cosine
    (see ``cosine_annealing_lr``)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        check_int("T_max", T_max, low=1)
        check_real("eta_min", eta_min)
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return cosine_annealing_lr(base_lr, epoch, self.T_max, self.eta_min)


class LinearLR(LRScheduler):
    """Scale the base rate by a factor going linearly from ``start_factor`` to ``end_factor``
    over ``total_iters`` epochs, then constant (see ``linear_lr``)."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5):
        check_real("start_factor", start_factor, low=0.0, low_open=True, high=1.0)
        check_real("end_factor", end_factor, high=1.0)
        check_int("total_iters", total_iters, low=1)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return linear_lr(base_lr, epoch, self.start_factor, self.end_factor, self.total_iters)


class SequentialLR(LRScheduler):
    """Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` restarted at its
    epoch 0, and so on (e.g. linear warm-up then cosine annealing), as PyTorch's
    ``SequentialLR``: at epoch t the active scheduler is the k-th, k = number of milestones
    <= t, at its own epoch t - milestones[k-1]. The given schedulers serve only for their
    formulas; their own epoch counters are not advanced. Tests:
    ``tests/minnet/test_schedulers.py::test_warmup_then_cosine_sequential_lr_matches_torch`` and
    ``::test_sequential_lr_is_the_first_schedule_then_the_second_restarted``."""

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler],
                 milestones: Sequence[int]):
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("schedulers is empty: SequentialLR needs at least one scheduler")
        for i, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(f"schedulers[{i}] must be an LRScheduler, got "
                                f"{type(scheduler).__name__}")
            if scheduler.optimizer is not optimizer:
                raise ValueError(f"schedulers[{i}] belongs to another optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"milestones must have len(schedulers) - 1 = {len(schedulers) - 1} "
                             f"entries, got {milestones!r}")
        for i, milestone in enumerate(milestones):
            check_int(f"milestones[{i}]", milestone, low=milestones[i - 1] + 1 if i else 1)
        self.schedulers, self.milestones = schedulers, milestones
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        k = bisect.bisect_right(self.milestones, epoch)
        return self.schedulers[k].lr_at(base_lr, epoch - (self.milestones[k - 1] if k else 0))
