"""Module and Parameter: PyTorch's module protocol on minnet tensors.

A Module registers Parameters, buffers (plain ndarrays such as BatchNorm's running statistics)
and child Modules as attributes, in assignment order. ``state_dict`` names them like PyTorch
(``fc1.weight``, ``bn.running_mean``); forward pre-hooks and forward hooks run around
``forward`` and return removable handles.

A buffer registered with ``resizable=True`` holds state whose shape is only known once data
has been seen (a quantizer's scale, an observer's running range), like PyTorch's
``UninitializedBuffer`` and the resize in ``FakeQuantize._load_from_state_dict``: it may be
None, and ``load_state_dict`` replaces it by the saved array instead of copying in place.
After loading, every module's ``_load_state_dict_post`` runs, so a module can rebuild state
kept outside its parameters and buffers from them.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import numpy as np

from minnet.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter (``requires_grad=True``)."""

    def __init__(self, data: Any, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class RemovableHandle:
    """Returned by ``register_*_hook``; ``remove()`` unregisters the hook."""
    _ids = itertools.count()

    def __init__(self, hooks: dict):
        self._hooks, self.id = hooks, next(RemovableHandle._ids)

    def remove(self) -> None:
        self._hooks.pop(self.id, None)


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of every layer and model. Subclasses call ``super().__init__()`` first and
    define ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_resizable", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---- registration ------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError("call Module.__init__() before assigning attributes")
        if isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)  # a property's setter decides
            return
        chains = self._modules.get("parametrizations")
        if chains is not None and name in chains._modules and not isinstance(value, Module):
            chain = chains._modules[name]  # a parametrized tensor: write its original
            chain.original.data = chain.right_inverse(value).astype(chain.original.dtype)
            return
        if isinstance(value, (Parameter, Module)):
            table = self._parameters if isinstance(value, Parameter) else self._modules
            for other in (self._parameters, self._buffers, self._modules):
                if other is not table:
                    other.pop(name, None)
            self.__dict__.pop(name, None)
            table[name] = value
        elif name in self._buffers:
            self._buffers[name] = None if value is None else np.asarray(value)
        elif name in self._parameters or name in self._modules:
            if value is not None:
                kind = "parameter" if name in self._parameters else "submodule"
                raise TypeError(f"cannot assign {type(value).__name__} to {kind} {name!r} "
                                f"(a {'Parameter' if kind == 'parameter' else 'Module'} or None "
                                "is expected)")
            (self._parameters if name in self._parameters else self._modules)[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table, {})
            if name in entries:
                return entries[name]
        chains = self.__dict__.get("_modules", {}).get("parametrizations")
        if chains is not None and name in chains._modules:
            return chains._modules[name]()  # see minnet.nn.parametrize
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                self._non_persistent.discard(name)
                self._resizable.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"param {name!r} must be a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = param

    def register_buffer(self, name: str, array: np.ndarray | None, persistent: bool = True, *,
                        resizable: bool = False) -> None:
        """Register an ndarray that is state but not a parameter (saved in ``state_dict``
        unless ``persistent=False``).

        A ``resizable`` buffer may be None until data is seen; its key is accepted by
        ``load_state_dict`` even while it is None, is not required while it is None, and a
        loaded array replaces it whatever its shape (keeping the current dtype, or the saved
        one while None). Checked by
        ``tests/minnet/nn/test_module.py::test_resizable_buffer_is_replaced_by_the_saved_array``."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"buffer name must be a non-empty string without '.', got {name!r}")
        self.__dict__.pop(name, None)
        self._buffers[name] = None if array is None else np.asarray(array)
        self._non_persistent.discard(name)
        self._resizable.discard(name)
        if not persistent:
            self._non_persistent.add(name)
        if resizable:
            self._resizable.add(name)

    def register_module(self, name: str, module: Module | None) -> None:
        self._modules[name] = module

    add_module = register_module

    # ---- traversal ---------------------------------------------------------------------
    def named_modules(self, prefix: str = "", remove_duplicate: bool = True
                      ) -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first; a module reachable under several
        names is listed once unless ``remove_duplicate`` is false (as PyTorch's)."""
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate and id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items()
                        if m is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        return ((k, m) for k, m in self._modules.items() if m is not None)

    def children(self) -> Iterator[Module]:
        return (m for _, m in self.named_children())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every parameter once (shared ones under their first name)."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters())

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for module_name, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{module_name}.{name}" if module_name else name), b

    def buffers(self) -> Iterator[np.ndarray]:
        return (b for _, b in self.named_buffers())

    # ---- modes and gradients -----------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter; optimizers skip frozen ones."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for module in list(self.modules())[::-1]:
            fn(module)
        return self

    def to(self, dtype) -> Module:
        """Cast floating parameters and buffers to ``dtype`` in place (``.double()``, ``.float()``)."""
        dtype = np.dtype(dtype)
        for module in self.modules():
            for p in module._parameters.values():
                if p is not None and np.issubdtype(p.dtype, np.floating):
                    p.data = p.data.astype(dtype)
                    p.grad = None if p.grad is None else p.grad.astype(dtype)
            for name, b in module._buffers.items():
                if b is not None and np.issubdtype(b.dtype, np.floating):
                    module._buffers[name] = b.astype(dtype)
        return self

    def double(self) -> Module:
        return self.to(np.float64)

    def float(self) -> Module:
        return self.to(np.float32)

    # ---- state -------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of all parameters and persistent buffers, keyed by dotted names (a shared
        submodule under each of its names, as PyTorch's)."""
        state = OrderedDict()
        for module_name, module in self.named_modules(remove_duplicate=False):
            dot = f"{module_name}." if module_name else ""
            for name, p in module._parameters.items():
                if p is not None:
                    state[dot + name] = p.data.copy()
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    state[dot + name] = b.copy()
        return state

    def _state_slots(self) -> dict[str, tuple[Module, str, str]]:
        """Every loadable key: parameters, persistent buffers (``"buffer"``) and persistent
        resizable buffers, None ones included (``"resizable"``)."""
        slots = {}
        for module_name, module in self.named_modules(remove_duplicate=False):
            dot = f"{module_name}." if module_name else ""
            for name, p in module._parameters.items():
                if p is not None:
                    slots[dot + name] = (module, "param", name)
            for name, b in module._buffers.items():
                if name in module._non_persistent:
                    continue
                if name in module._resizable:
                    slots[dot + name] = (module, "resizable", name)
                elif b is not None:
                    slots[dot + name] = (module, "buffer", name)
        return slots

    def load_state_dict(self, state_dict: dict[str, np.ndarray], strict: bool = True) -> IncompatibleKeys:
        """Copy arrays into the parameters and buffers in place (casting to their dtypes);
        resizable buffers are replaced by a copy of the saved array instead (see
        ``register_buffer``). Then ``_load_state_dict_post()`` runs on every module.

        All or nothing: every key, shape and dtype is checked (``prepare_load_state_dict``)
        before the first array is written, so on an error the module is unchanged. A wrong
        shape is always an error (except for resizable buffers), and so is a value that does
        not cast to its slot's dtype under NumPy's ``same_kind`` rule (e.g. float into an
        integer buffer, complex, strings); with ``strict`` so are missing and unexpected keys.
        A resizable buffer that is still None is never missing. Returns
        ``(missing_keys, unexpected_keys)``. Test:
        ``tests/adversarial/test_minnet_state.py::test_module_load_state_dict_is_all_or_nothing``.
        """
        return self.prepare_load_state_dict(state_dict, strict)()

    def prepare_load_state_dict(self, state_dict: dict[str, np.ndarray], strict: bool = True
                                ) -> Callable[[], IncompatibleKeys]:
        """Check ``state_dict`` as ``load_state_dict`` does, without changing the module, and
        return a function that applies it (and returns ``(missing_keys, unexpected_keys)``).

        Raises ``ValueError`` naming every bad key first. The values are converted to their
        slots' dtypes here, so applying cannot fail on them; this lets a caller check several
        state dicts (model, optimizer, ...) before it applies any.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got "
                            f"{type(state_dict).__name__}")
        slots = self._state_slots()
        missing = [k for k in slots if k not in state_dict
                   and self._slot_array(*slots[k]) is not None]
        unexpected = [k for k in state_dict if k not in slots]
        wrong, bad_dtype = [], []
        converted: dict[str, np.ndarray] = {}
        for key, (module, kind, name) in slots.items():
            if key not in state_dict:
                continue
            current = self._slot_array(module, kind, name)
            value = state_dict[key]
            try:
                source = np.asarray(value)
            except (TypeError, ValueError):  # ragged nested sequences and the like
                source = None
            if source is None or source.dtype.kind not in "biuf":
                got = type(value).__name__ if source is None else str(source.dtype)
                bad_dtype.append(f"{key}: {got} is not a numeric array")
                continue
            if current is not None and not np.can_cast(source.dtype, current.dtype, "same_kind"):
                bad_dtype.append(f"{key}: checkpoint {source.dtype}, model {current.dtype}")
                continue
            if kind != "resizable" and source.shape != current.shape:
                wrong.append(f"{key}: checkpoint {source.shape}, model {current.shape}")
                continue
            dtype = None if current is None else current.dtype
            converted[key] = np.array(source, dtype=dtype, copy=True)
        problems = []
        if wrong:
            problems.append("shape mismatch for " + "; ".join(wrong))
        if bad_dtype:
            problems.append("dtype mismatch for " + "; ".join(bad_dtype))
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if problems:
            raise ValueError("load_state_dict: " + ", ".join(problems))

        def apply() -> IncompatibleKeys:
            for key, array in converted.items():
                module, kind, name = slots[key]
                if kind == "resizable":
                    module._buffers[name] = array
                else:
                    self._slot_array(module, kind, name)[...] = array
            for module in self.modules():
                module._load_state_dict_post()
            return IncompatibleKeys(missing, unexpected)

        return apply

    def _load_state_dict_post(self) -> None:
        """Runs on every module after ``load_state_dict`` has written the arrays; a subclass
        overrides it to rebuild state derived from its buffers (does nothing by default)."""

    @staticmethod
    def _slot_array(module: Module, kind: str, name: str) -> np.ndarray | None:
        return module._parameters[name].data if kind == "param" else module._buffers[name]

    # ---- calling -----------------------------------------------------------------------
    def register_forward_pre_hook(self, hook: Callable) -> RemovableHandle:
        """``hook(module, args)`` runs before forward; a non-None return replaces ``args``
        (a non-tuple is wrapped in a tuple)."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    def register_forward_hook(self, hook: Callable) -> RemovableHandle:
        """``hook(module, args, output)`` runs after forward; a non-None return replaces the
        output."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        if not (self._forward_pre_hooks or self._forward_hooks):
            return self.forward(*args, **kwargs)
        for hook in list(self._forward_pre_hooks.values()):
            replaced = hook(self, args)
            if replaced is not None:
                args = replaced if isinstance(replaced, tuple) else (replaced,)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            replaced = hook(self, args, output)
            if replaced is not None:
                output = replaced
        return output

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self.named_children()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"

