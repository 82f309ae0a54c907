"""Knowledge transfer by parameters: load what fits from a trained model, freeze what to keep.

Transfer learning reuses a network trained on one task as the start of another (Yosinski et
al. 2014, "How transferable are features in deep neural networks?"): the layers whose shapes
and meaning carry over are copied, the task-specific head is left out, and the copied layers
are either fine-tuned or frozen. Frozen parameters (``requires_grad = False``) get no gradient
and every minnet optimizer skips them.

Names are ``state_dict`` names; a *prefix* selects a name equal to it or beginning with it
followed by a dot (``"0"`` selects ``0.weight`` and ``0.bias`` but not ``10.weight``).
Tests: ``tests/optim/distill/test_distill_transfer.py``.
"""
from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple

import numpy as np

from minnet import nn


def _selects(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _check_prefixes(prefixes: Iterable[str], names: list[str], what: str) -> list[str]:
    prefixes = [prefixes] if isinstance(prefixes, str) else list(prefixes)
    for prefix in prefixes:
        if not isinstance(prefix, str):
            raise TypeError(f"prefixes must be strings, got {prefix!r}")
        if not any(_selects(prefix, name) for name in names):
            raise ValueError(f"prefix {prefix!r} selects none of the {what} {names}")
    return prefixes


def _set_requires_grad(model: nn.Module, prefixes: Iterable[str] | None, flag: bool) -> list[str]:
    params = dict(model.named_parameters())
    chosen = list(params)
    if prefixes is not None:
        prefixes = _check_prefixes(prefixes, chosen, "parameters")
        chosen = [name for name in chosen if any(_selects(p, name) for p in prefixes)]
    for name in chosen:
        params[name].requires_grad = flag
        if not flag:
            params[name].grad = None
    return chosen


def freeze(model: nn.Module, prefixes: str | Iterable[str] | None = None) -> list[str]:
    """Set ``requires_grad = False`` (and drop ``.grad``) on the parameters selected by
    ``prefixes`` (all when None); returns their names. A prefix selecting nothing is a
    ValueError. Tested by ``tests/optim/distill/test_distill_transfer.py::test_frozen_parameters_do_not_move``."""
    return _set_requires_grad(model, prefixes, False)


def unfreeze(model: nn.Module, prefixes: str | Iterable[str] | None = None) -> list[str]:
    """Undo ``freeze`` for the selected parameters; returns their names."""
    return _set_requires_grad(model, prefixes, True)


class TransferReport(NamedTuple):
    """What ``load_partial_state_dict`` did, each a list of state_dict names.

    loaded: copied into the model. excluded: present in both but left out on request.
    shape_mismatch: present in both with different shapes (not copied). missing: in the
    model, not in the checkpoint. unexpected: in the checkpoint, not in the model.
    """
    loaded: list[str]
    excluded: list[str]
    shape_mismatch: list[str]
    missing: list[str]
    unexpected: list[str]


def load_partial_state_dict(model: nn.Module, state_dict: Mapping[str, np.ndarray], *,
                            exclude: str | Iterable[str] = ()) -> TransferReport:
    """Copy every array of ``state_dict`` whose name the model has, with the same shape and
    not under an ``exclude`` prefix; report the rest instead of failing.

    This is ``model.load_state_dict(subset, strict=False)`` on the compatible subset, so the
    model keeps its own values for everything not loaded (e.g. a freshly initialised head for
    a new set of classes). Tested by
    ``tests/optim/distill/test_distill_transfer.py::test_partial_load_report_partitions_the_keys``.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to arrays, "
                        f"got {type(state_dict).__name__}")
    own = model.state_dict()
    exclude = _check_prefixes(exclude, sorted(set(own) | set(state_dict)), "state_dict names")
    shared = [k for k in state_dict if k in own]
    excluded = [k for k in shared if any(_selects(p, k) for p in exclude)]
    mismatch = [k for k in shared if k not in excluded and np.shape(state_dict[k]) != own[k].shape]
    loaded = [k for k in shared if k not in excluded and k not in mismatch]
    model.load_state_dict({k: state_dict[k] for k in loaded}, strict=False)
    return TransferReport(loaded=loaded, excluded=excluded, shape_mismatch=mismatch,
                          missing=[k for k in own if k not in state_dict],
                          unexpected=[k for k in state_dict if k not in own])
