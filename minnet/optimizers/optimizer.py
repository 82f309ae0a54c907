"""The Optimizer base class: parameter groups, stepping, and a flat, npz-ready state dict.

An optimizer holds ``param_groups``, a list of dicts, each with a ``"params"`` list of tensors
and the group's hyperparameters (the constructor's values unless the group overrides them),
and ``state``, a dict mapping ``id(param)`` to that parameter's buffers. ``step()`` applies a
pure update function (``sgd_update``, ``adam_update``) to every parameter that requires a
gradient and has one; parameters are updated in place, so views and aliases of ``p.data``
stay valid.

State dict format (flat, every value an ndarray, so it can be stored with ``np.savez`` and
read back with ``allow_pickle=False``). Parameters are numbered 0, 1, ... across groups in
order, as in PyTorch:

- ``"param_groups.<g>.params"``: int64 indices of group g's parameters;
- ``"param_groups.<g>.<option>"``: each hyperparameter as an array (a 0-d array for a number
  or bool, a 1-d array for a tuple such as ``betas``);
- ``"state.<i>.<name>"``: buffer ``name`` of parameter i (``momentum_buffer``, ``exp_avg``,
  ...); the step count ``step`` is a 0-d int64 array.

``load_state_dict`` restores 0-d arrays as Python scalars, 1-d option arrays as tuples, 0-d
integer state as ``int`` and other state as arrays of the parameter's dtype, so a save/load
round trip is exact. Test:
``tests/minnet/test_optimizers.py::test_state_dict_round_trip_resumes_bitwise``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Mapping

import numpy as np

ParamsT = Iterable[Any] | Iterable[dict]


def is_parameter(obj: Any) -> bool:
    """True for a tensor-like object: an ndarray ``.data``, ``.grad`` and ``.requires_grad``."""
    return (isinstance(getattr(obj, "data", None), np.ndarray)
            and hasattr(obj, "grad") and hasattr(obj, "requires_grad"))


def check_real(name: str, value: Any, *, low: float | None = 0.0, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> None:
    """Raise TypeError unless ``value`` is a real number, ValueError unless it lies between
    ``low`` and ``high`` (a bound is excluded when ``*_open``; None means unbounded); never NaN."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    if low is not None and not (value > low if low_open else value >= low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and not (value < high if high_open else value <= high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


def check_int(name: str, value: Any, *, low: int) -> None:
    """Raise TypeError unless ``value`` is an integer, ValueError unless ``value >= low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """Raise TypeError unless ``value`` is a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def _require_iterable(obj: Any, where: str, what: str) -> None:
    if is_parameter(obj) or isinstance(obj, (dict, str, bytes)) or not isinstance(obj, Iterable):
        raise TypeError(f"{where} must be an iterable of {what}, got {type(obj).__name__}")


def _param_list(params: Any, where: str) -> list:
    if is_parameter(params):
        return [params]
    _require_iterable(params, where, "tensors")
    out = list(params)
    for p in out:
        if not is_parameter(p):
            raise TypeError(f"{where} must contain only tensors, got {type(p).__name__}")
        if not np.issubdtype(p.data.dtype, np.floating):
            raise TypeError(f"{where}: only floating tensors can be optimized, got dtype "
                            f"{p.data.dtype}")
        if not getattr(p, "is_leaf", True):
            raise ValueError(f"{where}: cannot optimize a non-leaf tensor")
    return out


class Optimizer:
    """Base class: subclasses set ``defaults``, validate options in ``_check_options`` and
    update one parameter in ``_update(p, group, state)``."""

    def __init__(self, params: ParamsT, defaults: dict[str, Any]):
        _require_iterable(params, "params", "tensors or of dicts")
        self._check_options(defaults)
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        groups = list(params)
        if not groups:
            raise ValueError("params is empty: the optimizer got no parameters")
        if all(isinstance(g, dict) for g in groups):
            for group in groups:
                self.add_param_group(group)
        elif any(isinstance(g, dict) for g in groups):
            raise TypeError("params must be all tensors or all dicts, got a mix")
        else:
            self.add_param_group({"params": groups})

    def _check_options(self, options: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _update(self, p: Any, group: dict[str, Any], state: dict[str, Any]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            options = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} params, {options}")
        return "\n".join(lines + [")"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group: a dict with ``"params"`` and optional per-group hyperparameters; the
        missing ones take the constructor's values. A tensor may be in one group only."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' key")
        group = {**self.defaults, **param_group}
        group["params"] = _param_list(param_group["params"], "param_group['params']")
        self._check_options(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in group["params"]:
            if id(p) in seen:
                raise ValueError("a parameter appears more than once in the parameter groups")
            seen.add(id(p))
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None, or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that requires a gradient and has one (others are left
        untouched). ``closure``, if given, is called first and its result returned."""
        loss = closure() if closure is not None else None
        active = [(p, group) for group in self.param_groups for p in group["params"]
                  if p.requires_grad and p.grad is not None]
        for p, _ in active:
            if np.shape(p.grad) != p.data.shape:
                raise ValueError(f"gradient of shape {np.shape(p.grad)} does not match its "
                                 f"parameter of shape {p.data.shape}")
        for p, group in active:
            self._update(p, group, self.state.setdefault(id(p), {}))
        return loss

    # ---- checkpointing ------------------------------------------------------------------
    def _indexed_params(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, np.ndarray]:
        """The flat state dict described in the module docstring (copies, never views)."""
        out: dict[str, np.ndarray] = {}
        start = 0
        for g, group in enumerate(self.param_groups):
            n = len(group["params"])
            out[f"param_groups.{g}.params"] = np.arange(start, start + n, dtype=np.int64)
            for key, value in group.items():
                if key != "params":
                    out[f"param_groups.{g}.{key}"] = np.array(value)
            for i, p in enumerate(group["params"], start):
                for name, value in self.state.get(id(p), {}).items():
                    out[f"state.{i}.{name}"] = np.array(value)
            start += n
        return out

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray]) -> None:
        """Restore hyperparameters and buffers saved by ``state_dict``. The optimizer must have
        the same number of groups, each with as many parameters as when it was saved."""
        groups: dict[int, dict[str, np.ndarray]] = {}
        states: dict[int, dict[str, np.ndarray]] = {}
        for key, value in state_dict.items():
            parts = key.split(".", 2) if isinstance(key, str) else []
            if len(parts) != 3 or parts[0] not in ("param_groups", "state") \
                    or not parts[1].isdigit():
                raise ValueError(f"state_dict has an unexpected key {key!r}")
            table = groups if parts[0] == "param_groups" else states
            table.setdefault(int(parts[1]), {})[parts[2]] = np.asarray(value)
        if sorted(groups) != list(range(len(self.param_groups))):
            raise ValueError(f"state_dict has {len(groups)} parameter groups, the optimizer "
                             f"has {len(self.param_groups)}")
        for g, group in enumerate(self.param_groups):
            saved = groups[g].get("params")
            if saved is None or saved.size != len(group["params"]):
                size = None if saved is None else saved.size
                raise ValueError(f"parameter group {g} has {len(group['params'])} parameters, "
                                 f"state_dict has {size}")
        params = self._indexed_params()
        new_state: dict[int, dict[str, Any]] = {}
        for i, buffers in states.items():
            if i >= len(params):
                raise ValueError(f"state_dict has state for parameter {i}, the optimizer has "
                                 f"{len(params)} parameters")
            p = params[i]
            entry = new_state[id(p)] = {}
            for name, value in buffers.items():
                if value.ndim == 0 and np.issubdtype(value.dtype, np.integer):
                    entry[name] = int(value)
                elif value.shape != p.data.shape:
                    raise ValueError(f"state_dict entry 'state.{i}.{name}' has shape "
                                     f"{value.shape}, its parameter has shape {p.data.shape}")
                else:
                    entry[name] = value.astype(p.data.dtype, copy=True)
        options = [{k: v.item() if v.ndim == 0 else tuple(v.tolist())
                    for k, v in groups[g].items() if k != "params"}
                   for g in range(len(self.param_groups))]
        for group, saved_options in zip(self.param_groups, options):
            self._check_options({**group, **saved_options})
        for group, saved_options in zip(self.param_groups, options):
            group.update(saved_options)
        self.state = new_state
