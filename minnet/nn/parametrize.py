r"""Parametrizations of module parameters, as ``torch.nn.utils.parametrize``.

``register_parametrization(module, "weight", p)`` moves the Parameter ``weight`` into
``module.parametrizations.weight.original`` (the same object, so an optimizer built before
keeps updating it) and from then on reading ``module.weight`` computes

.. math:: \texttt{module.weight} = p_k(\dots p_2(p_1(\texttt{original})))

through every parametrization registered on it, in registration order, with autograd: the
gradient reaches ``original`` (and any parameter of the :math:`p_i`) by the chain rule. Each
:math:`p_i` is a ``Module`` whose ``forward`` maps one tensor to one tensor of the same shape
and dtype; its parameters and buffers are the module's state, saved by ``state_dict`` under
``parametrizations.<name>.<i>.<key>`` beside ``parametrizations.<name>.original``, exactly
PyTorch's keys. Assigning ``module.weight = value`` writes ``original`` through the chain's
``right_inverse`` (each :math:`p_i` that defines one, last first; the others pass the value
through). ``remove_parametrizations`` bakes the computed value into ``original`` (or keeps the
original value) and makes it a plain Parameter again.

Pruning masks, weight fake-quantization and weight sharing in ``optim`` are parametrizations;
they compose on one parameter. Tests: ``tests/minnet/nn/test_parametrize.py``.
"""
from __future__ import annotations

import numpy as np

from minnet.nn.module import Module, Parameter
from minnet.tensor import Tensor, no_grad

__all__ = ["ParametrizationList", "register_parametrization", "remove_parametrizations",
           "remove_all_parametrizations", "is_parametrized", "parametrizations_of", "original",
           "has_submodules"]


class ParametrizationList(Module):
    """The parametrizations of one parameter (children ``0``, ``1``, ...) and its
    ``original`` Parameter; calling it computes the parametrized value."""

    def __init__(self, original: Parameter):
        super().__init__()
        self.original = original

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __getitem__(self, index: int | slice) -> Module | list[Module]:
        return list(self._modules.values())[index]

    def append(self, parametrization: Module) -> None:
        self.register_module(str(len(self._modules)), parametrization)

    def insert(self, index: int, parametrization: Module) -> None:
        """Put ``parametrization`` at position ``index`` of the chain (children renumbered)."""
        self._renumber(self[:index] + [parametrization] + self[index:])

    def pop(self, index: int) -> Module:
        """Take the parametrization at ``index`` out of the chain (children renumbered)."""
        chain = list(self)
        taken = chain.pop(index)
        self._renumber(chain)
        return taken

    def _renumber(self, chain: list[Module]) -> None:
        self._modules.clear()
        for parametrization in chain:
            self.append(parametrization)

    def forward(self) -> Tensor:
        value = self.original
        for parametrization in self:
            value = parametrization(value)
        return value

    def right_inverse(self, value) -> np.ndarray:
        """The ``original`` that the chain maps to (about) ``value``."""
        value = value.data if isinstance(value, Tensor) else np.asarray(value)
        for parametrization in reversed(list(self)):
            inverse = getattr(parametrization, "right_inverse", None)
            if inverse is not None:
                value = inverse(value)
                value = value.data if isinstance(value, Tensor) else np.asarray(value)
        return value


class _Parametrizations(Module):
    """``module.parametrizations``: one ``ParametrizationList`` per parametrized name."""


def is_parametrized(module: Module, tensor_name: str | None = None) -> bool:
    """Whether ``module`` has a parametrization on ``tensor_name`` (on any, if None)."""
    chains = module._modules.get("parametrizations")
    if not isinstance(chains, _Parametrizations):
        return False
    return bool(chains._modules) if tensor_name is None else tensor_name in chains._modules


def parametrizations_of(module: Module, tensor_name: str) -> list[Module]:
    """The parametrizations registered on ``tensor_name``, first applied first ([] if none)."""
    if not is_parametrized(module, tensor_name):
        return []
    return list(module._modules["parametrizations"]._modules[tensor_name])


def has_submodules(module: Module) -> bool:
    """Whether ``module`` has children other than its ``parametrizations`` (a parametrized
    Linear is still a leaf layer)."""
    return any(not isinstance(child, _Parametrizations) for child in module.children())


def original(module: Module, tensor_name: str) -> Parameter:
    """The Parameter that holds ``tensor_name``: the ``original`` of its parametrizations,
    or the parameter itself."""
    _check_module(module)
    if is_parametrized(module, tensor_name):
        return module._modules["parametrizations"]._modules[tensor_name].original
    param = module._parameters.get(tensor_name)
    if param is None:
        raise ValueError(f"{type(module).__name__} has no parameter {tensor_name!r} "
                         f"(parameters: {[k for k, v in module._parameters.items() if v is not None]})")
    return param


def _check_module(module: object) -> None:
    if not isinstance(module, Module):
        raise TypeError(f"module must be a minnet Module, got {type(module).__name__}")


def register_parametrization(module: Module, tensor_name: str, parametrization: Module, *,
                             unsafe: bool = False) -> Module:
    """Parametrize parameter ``tensor_name`` of ``module`` by ``parametrization`` (appended
    after any already registered on it); returns ``module``.

    On the first registration, if ``parametrization`` defines ``right_inverse``, ``original``
    is set to ``right_inverse(original)`` (PyTorch's rule). Unless ``unsafe``, the parametrized
    value must keep the parameter's shape and dtype (ValueError otherwise, nothing changed).
    """
    _check_module(module)
    if not isinstance(parametrization, Module):
        raise TypeError(f"parametrization must be a minnet Module, got "
                        f"{type(parametrization).__name__}")
    if is_parametrized(module, tensor_name):
        chain = module._modules["parametrizations"]._modules[tensor_name]
        reference = chain()
        if not unsafe:
            _check_same(parametrization(reference), reference, tensor_name, parametrization)
        chain.append(parametrization)
        return module
    param = module._parameters.get(tensor_name)
    if param is None:
        raise ValueError(f"{type(module).__name__} has no parameter {tensor_name!r} to "
                         f"parametrize (parameters: {[k for k, v in module._parameters.items() if v is not None]})")
    start = param.data
    if getattr(parametrization, "right_inverse", None) is not None:
        start = parametrization.right_inverse(start)
        start = start.data if isinstance(start, Tensor) else np.asarray(start)
    if not unsafe:
        _check_same(parametrization(Tensor(start)), param, tensor_name, parametrization)
        start = start.astype(param.dtype, copy=False)
    param.data = start
    del module._parameters[tensor_name]
    if not isinstance(module._modules.get("parametrizations"), _Parametrizations):
        module.parametrizations = _Parametrizations()
    chain = ParametrizationList(param)
    chain.append(parametrization)
    module.parametrizations.register_module(tensor_name, chain)
    return module


def _check_same(value: Tensor, reference: Tensor, name: str, parametrization: Module) -> None:
    if not isinstance(value, Tensor) or value.shape != reference.shape \
            or value.dtype != reference.dtype:
        got = (f"{type(value).__name__}" if not isinstance(value, Tensor)
               else f"shape {value.shape} dtype {value.dtype}")
        raise ValueError(f"parametrization {type(parametrization).__name__} of {name!r} must "
                         f"return a Tensor of shape {reference.shape} and dtype "
                         f"{reference.dtype}, got {got} (pass unsafe=True to allow it)")


def remove_parametrizations(module: Module, tensor_name: str,
                            leave_parametrized: bool = True) -> Module:
    """Remove every parametrization of ``tensor_name``: it becomes the Parameter ``original``
    again (the same object), holding the parametrized value if ``leave_parametrized`` (the
    result baked in), else its own value. Returns ``module``."""
    _check_module(module)
    if not is_parametrized(module, tensor_name):
        raise ValueError(f"{type(module).__name__} has no parametrization on {tensor_name!r}")
    chains = module._modules["parametrizations"]
    chain = chains._modules[tensor_name]
    original = chain.original
    if leave_parametrized:
        with no_grad():
            original.data = np.array(chain().data, dtype=original.dtype, copy=True)
    del chains._modules[tensor_name]
    if not chains._modules:
        del module._modules["parametrizations"]
    module.register_parameter(tensor_name, original)
    return module


def remove_all_parametrizations(model: Module, leave_parametrized: bool = True) -> Module:
    """``remove_parametrizations`` on every parametrized tensor of every module of ``model``
    (the values computed in eval mode, so that no parametrization updates statistics):
    a plain model computing what ``model`` computed. Returns ``model``."""
    was_training = model.training
    model.eval()
    for module in list(model.modules()):
        for name in list(getattr(module._modules.get("parametrizations"), "_modules", {})):
            remove_parametrizations(module, name, leave_parametrized)
    return model.train(was_training)
