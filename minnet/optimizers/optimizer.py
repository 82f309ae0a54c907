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
    """Base class: subclasses set ``defaults``, validate options in ``_check_options``,
    update one parameter in ``_update(p, group, state)`` and describe the per-parameter state
    in ``_state_spec``: buffer name -> (``"count"`` for an integer such as ``step`` or
    ``"array"`` for a buffer of the parameter's shape, required once any state exists)."""

    _state_spec: dict[str, tuple[str, bool]] = {}

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
        the same number of groups, each with as many parameters as when it was saved.

        All or nothing: the whole state dict is checked first (``prepare_load_state_dict``)
        and on an error the optimizer is unchanged. Tests in
        ``tests/adversarial/test_minnet_state.py``:
        ``::test_optimizer_load_state_dict_is_all_or_nothing``,
        ``::test_sgd_load_state_dict_is_all_or_nothing``.
        """
        self.prepare_load_state_dict(state_dict)()

    def prepare_load_state_dict(self, state_dict: Mapping[str, np.ndarray]) -> Callable[[], None]:
        """Check ``state_dict`` without changing the optimizer; return a function applying it.

        Checked: every key is ``param_groups.<g>.<option>`` or ``state.<i>.<name>``; the group
        count and each group's parameter indices match; every option is one this optimizer
        has and passes its checks; every parameter's state holds exactly the buffers
        ``_state_spec`` requires (e.g. Adam's ``step``, ``exp_avg``, ``exp_avg_sq``), a
        non-negative integer ``step`` and floating buffers of the parameter's shape.
        Raises ``ValueError`` (``TypeError`` for an option of the wrong type) naming the key.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got "
                            f"{type(state_dict).__name__}")
        groups: dict[int, dict[str, np.ndarray]] = {}
        states: dict[int, dict[str, np.ndarray]] = {}
        for key, value in state_dict.items():
            parts = key.split(".", 2) if isinstance(key, str) else []
            if len(parts) != 3 or parts[0] not in ("param_groups", "state") \
                    or not parts[1].isdigit():
                raise ValueError(f"state_dict has an unexpected key {key!r}")
            table = groups if parts[0] == "param_groups" else states
            table.setdefault(int(parts[1]), {})[parts[2]] = _numeric(key, value)
        if sorted(groups) != list(range(len(self.param_groups))):
            raise ValueError(f"state_dict has {len(groups)} parameter groups, the optimizer "
                             f"has {len(self.param_groups)}")
        start = 0
        for g, group in enumerate(self.param_groups):
            saved = groups[g].get("params")
            expected = np.arange(start, start + len(group["params"]))
            if saved is None or saved.size != expected.size:
                size = None if saved is None else saved.size
                raise ValueError(f"parameter group {g} has {expected.size} parameters, "
                                 f"state_dict has {size}")
            if saved.shape != expected.shape or not np.array_equal(saved, expected):
                raise ValueError(f"state_dict entry 'param_groups.{g}.params' must be the "
                                 f"indices {expected.tolist()}, got {saved.tolist()}")
            start += len(group["params"])
        params = self._indexed_params()
        new_state: dict[int, dict[str, Any]] = {}
        for i, buffers in states.items():
            if i >= len(params):
                raise ValueError(f"state_dict has state for parameter {i}, the optimizer has "
                                 f"{len(params)} parameters")
            new_state[id(params[i])] = self._checked_state(i, params[i], buffers)
        options = []
        for g, group in enumerate(self.param_groups):
            # initial_lr is the base rate an LRScheduler records in each group (as PyTorch's)
            known = set(self.defaults) | set(group) | {"initial_lr"}
            unknown = sorted(set(groups[g]) - known)
            if unknown:
                raise ValueError(f"state_dict group {g} has unknown options {unknown}; "
                                 f"{type(self).__name__} has {sorted(known - {'params'})}")
            saved_options = {k: v.item() if v.ndim == 0 else tuple(v.tolist())
                             for k, v in groups[g].items() if k != "params"}
            self._check_options({**group, **saved_options})
            if "initial_lr" in saved_options:
                check_real(f"param_groups.{g}.initial_lr", saved_options["initial_lr"])
            options.append(saved_options)

        def apply() -> None:
            for group, saved_options in zip(self.param_groups, options):
                group.update(saved_options)
            self.state = new_state

        return apply

    def _checked_state(self, i: int, p: Any, buffers: dict[str, np.ndarray]) -> dict[str, Any]:
        """Parameter ``i``'s saved ``buffers`` as its state, checked against ``_state_spec``."""
        spec = self._state_spec
        unknown = sorted(set(buffers) - set(spec))
        if unknown:
            raise ValueError(f"state_dict has unknown state {unknown} for parameter {i}; "
                             f"{type(self).__name__} keeps {sorted(spec)}")
        required = sorted(name for name, (_, needed) in spec.items() if needed)
        missing = [name for name in required if name not in buffers]
        if missing:
            raise ValueError(f"state_dict lacks state {missing} for parameter {i} "
                             f"({type(self).__name__} needs {required} once a parameter "
                             f"has state)")
        entry: dict[str, Any] = {}
        for name, value in buffers.items():
            where = f"state_dict entry 'state.{i}.{name}'"
            if spec[name][0] == "count":
                if value.ndim != 0 or value.dtype.kind not in "iu" or value < 0:
                    raise ValueError(f"{where} must be a non-negative integer scalar, got "
                                     f"{value.dtype} of shape {value.shape}")
                entry[name] = int(value)
            elif value.dtype.kind != "f":
                raise ValueError(f"{where} has dtype {value.dtype}, expected a floating array")
            elif value.shape != p.data.shape:
                raise ValueError(f"{where} has shape {value.shape}, its parameter has shape "
                                 f"{p.data.shape}")
            else:
                entry[name] = value.astype(p.data.dtype, copy=True)
        return entry


def _numeric(key: str, value: Any) -> np.ndarray:
    """``value`` as a numeric (bool, integer or floating) ndarray; errors name ``key``."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"state_dict entry {key!r} is not an array: {err}") from err
    if array.dtype.kind not in "biuf":
        raise ValueError(f"state_dict entry {key!r} has dtype {array.dtype}; only numeric "
                         f"arrays are accepted")
    return array
