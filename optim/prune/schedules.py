r"""Pruning schedules: one-shot, iterative prune + fine-tune, automated gradual pruning (AGP)
and lottery-ticket rewinding.

A schedule is a list of total sparsities, one per round. ``prune_rounds`` runs
*prune to s_k, then fine-tune* for each round: one round is one-shot pruning; Han et al. 2015's
iterative pruning is a rising list (e.g. 50, 75, 87.5, 92 %); AGP is the cubic list of
``agp_sparsity`` with a little training between steps. ``lottery_ticket`` trains, prunes and
rewinds the surviving weights to their initial (or early) values every round. Both checkpoint
after every round and resume from the file. Tests: ``tests/optim/prune/test_prune_schedules.py``.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from minnet import nn
from minnet.io import load, save

from ._checks import check_fraction, check_positive_int
from .criteria import Target
from .model import prune_model, target_sparsity, prunable
from .parametrize import restore_pruning


def agp_sparsity(step: int, initial_sparsity: float, final_sparsity: float, begin_step: int,
                 end_step: int, frequency: int = 1) -> float:
    r"""The cubic schedule of automated gradual pruning:

    .. math:: s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{n \Delta t}\right)^3

    for :math:`t = t_0, t_0 + \Delta t, \dots, t_0 + n\Delta t` (``begin_step``,
    ``frequency``, ``end_step``); between updates the last value holds, before :math:`t_0` it
    is :math:`s_i` and from ``end_step`` on :math:`s_f`. It prunes fast while many redundant
    weights remain and slowly near the end. Source: Zhu & Gupta 2017, "To prune, or not to
    prune", eq. 1. Test: ``tests/optim/prune/test_prune_schedules.py::test_agp_hits_its_ends_and_is_monotone``.

    >>> round(agp_sparsity(5, 0.0, 0.8, 0, 10), 6)
    0.7
    """
    s_i = check_fraction(initial_sparsity, "initial_sparsity")
    s_f = check_fraction(final_sparsity, "final_sparsity")
    frequency = check_positive_int(frequency, "frequency")
    if not end_step > begin_step:
        raise ValueError(f"end_step must be > begin_step, got {end_step} and {begin_step}")
    if step >= end_step:
        return s_f
    t = begin_step + (step - begin_step) // frequency * frequency  # the last update step
    if t <= begin_step:
        return s_i
    return s_f + (s_i - s_f) * (1.0 - (t - begin_step) / (end_step - begin_step)) ** 3


def geometric_sparsities(rate: float, rounds: int) -> list[float]:
    r"""Prune a fraction ``rate`` of the remaining weights per round:
    :math:`s_k = 1 - (1 - p)^k` for :math:`k = 1..` ``rounds`` (Frankle & Carbin 2019, Sec. 2,
    use :math:`p = 0.2`). Test: ``tests/optim/prune/test_prune_schedules.py::test_geometric_sparsities``."""
    rate = check_fraction(rate, "rate")
    rounds = check_positive_int(rounds, "rounds")
    return [1.0 - (1.0 - rate) ** k for k in range(1, rounds + 1)]


def rewind(model: nn.Module, state: dict[str, np.ndarray]) -> nn.Module:
    """Reset every parameter and buffer of ``model`` to ``state`` (a ``state_dict`` taken
    before or after pruning) but keep the masks: ``original <- w_0`` and thus the effective
    weight becomes :math:`w_0 \\odot m` (lottery-ticket rewinding, Frankle & Carbin 2019,
    Algorithm step 4; to early weights, Frankle et al. 2020, "Linear Mode Connectivity and the
    Lottery Ticket Hypothesis": rewinding to iteration k). Returns ``model``."""
    own = model.state_dict()
    values = {}
    for key, value in state.items():
        head, _, name = key.rpartition(".")
        if key in own and not _is_mask_key(key):
            values[key] = value
        elif _original_key(head, name) in own:
            values[_original_key(head, name)] = value
        elif not _is_mask_key(key):
            raise ValueError(f"state has key {key!r} that the model lacks")
    model.load_state_dict(values, strict=False)
    return model


def _original_key(module_name: str, name: str) -> str:
    return f"{module_name}.parametrizations.{name}.original".lstrip(".")


def _is_mask_key(key: str) -> bool:
    parts = key.split(".")
    return len(parts) >= 4 and parts[-1] == "mask" and parts[-4] == "parametrizations"


def _load_round(path, model, extra: Sequence[str]) -> tuple[int, dict, dict]:
    state = load(path)
    restore_pruning(model, {k[6:]: v for k, v in state.items() if k.startswith("model.")})
    history = {k[8:]: v.tolist() for k, v in state.items() if k.startswith("history.")}
    sections = {name: {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
                for name in extra}
    return int(state["round"]), history, sections


def _save_round(path, model, round_: int, history: dict, sections: dict) -> None:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"history.{k}": np.asarray(v, dtype=np.float64) for k, v in history.items()})
    for name, section in sections.items():
        state.update({f"{name}.{k}": v for k, v in section.items()})
    state["round"] = np.asarray(round_, dtype=np.int64)
    save(state, path)


def _check_sparsities(sparsities: Sequence[float]) -> list[float]:
    values = [check_fraction(s, "sparsities[i]") for s in sparsities]
    if not values:
        raise ValueError("sparsities must not be empty")
    return values


def _metric(evaluate, model) -> float:
    return float(evaluate(model)) if evaluate is not None else float("nan")


def _run(model, sparsities, step: Callable[[int, float], float], checkpoint_path, resume,
         sections: dict, targets) -> dict[str, list[float]]:
    """Run ``step(k, s_k) -> metric`` for the rounds not yet in the checkpoint."""
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs a checkpoint_path")
    history: dict[str, list[float]] = {"sparsity": [], "metric": []}
    start = 0
    if resume and os.path.exists(checkpoint_path):
        start, history, loaded = _load_round(checkpoint_path, model, list(sections))
        for name, section in loaded.items():
            sections[name].clear()
            sections[name].update(section)
    for k in range(start, len(sparsities)):
        metric = step(k, sparsities[k])
        history["sparsity"].append(target_sparsity(targets))
        history["metric"].append(metric)
        if checkpoint_path is not None:
            _save_round(checkpoint_path, model, k + 1, history, sections)
    return history


def prune_rounds(model: nn.Module, sparsities: Sequence[float],
                 fine_tune: Callable[[nn.Module, int], None] | None = None, *,
                 criterion: str | Callable = "magnitude", scope: str = "global",
                 targets: Sequence[Target] | None = None, data=None, seed: int = 0,
                 evaluate: Callable[[nn.Module], float] | None = None,
                 checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
                 **options) -> dict[str, list[float]]:
    """For each total sparsity :math:`s_k`: ``prune_model(model, s_k, criterion, scope)``, then
    ``fine_tune(model, k)`` (if given) and record the reached sparsity and ``evaluate(model)``.

    One round is one-shot pruning; a rising list is iterative pruning (Han et al. 2015, Sec.
    3.4: pruning and retraining repeated); ``[agp_sparsity(k, ...) for k in ...]`` with a
    short ``fine_tune`` is AGP. Criterion randomness in round k is seeded by ``(seed, k)``.
    With ``checkpoint_path`` the model (masks included), the round and the history are saved
    after every round; ``resume=True`` continues from that file. Returns the history
    ``{"sparsity": [...], "metric": [...]}``.
    """
    sparsities = _check_sparsities(sparsities)
    targets = prunable(model) if targets is None else list(targets)

    def step(k: int, s: float) -> float:
        prune_model(model, s, criterion, scope=scope, targets=targets, data=data,
                    rng=np.random.default_rng([seed, k]), **options)
        if fine_tune is not None:
            fine_tune(model, k)
        return _metric(evaluate, model)

    return _run(model, sparsities, step, checkpoint_path, resume, {}, targets)


def lottery_ticket(model: nn.Module, sparsities: Sequence[float],
                   train: Callable[[nn.Module, int], None], *,
                   rewind_state: dict[str, np.ndarray] | None = None,
                   criterion: str | Callable = "magnitude", scope: str = "global",
                   targets: Sequence[Target] | None = None, data=None, seed: int = 0,
                   evaluate: Callable[[nn.Module], float] | None = None,
                   checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
                   **options) -> dict[str, list[float]]:
    """Iterative magnitude pruning with rewinding (Frankle & Carbin 2019, Sec. 1, "identifying
    winning tickets"): for each :math:`s_k`, ``train(model, k)``, prune to :math:`s_k`, then
    ``rewind`` the surviving weights to ``rewind_state`` (default: the weights at the call,
    :math:`\\theta_0`; pass a state taken after a few training steps to rewind to early
    weights). The history's metric is ``evaluate(model)`` after each round's training, i.e.
    of the network pruned in the previous round. The model is returned rewound: train it once
    more to obtain the ticket's accuracy. Checkpointing as ``prune_rounds``.
    """
    sparsities = _check_sparsities(sparsities)
    targets = prunable(model) if targets is None else list(targets)
    sections = {"rewind": dict(model.state_dict() if rewind_state is None else rewind_state)}

    def step(k: int, s: float) -> float:
        train(model, k)
        metric = _metric(evaluate, model)
        prune_model(model, s, criterion, scope=scope, targets=targets, data=data,
                    rng=np.random.default_rng([seed, k]), **options)
        rewind(model, sections["rewind"])
        return metric

    return _run(model, sparsities, step, checkpoint_path, resume, sections, targets)
