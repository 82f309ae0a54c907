r"""The pruning parametrization of a module parameter, as ``torch.nn.utils.prune``.

Pruning parameter ``name`` of a module moves the Parameter to ``<name>_orig`` (same object, so
an optimizer built before keeps updating it), stores the mask as a boolean buffer
``<name>_mask`` (saved by ``state_dict``) and registers a forward pre-hook that sets the plain
attribute

.. math:: \texttt{module.<name>} = w_{orig} \odot m

before every forward. The gradient reaching :math:`w_{orig}` is :math:`g \odot m`, and whatever
an optimizer does to the masked entries of :math:`w_{orig}` (momentum, weight decay, Adam's
moments) never reaches the effective weight: masked weights stay exactly 0. ``remove`` makes
the pruning permanent (``<name> = w_orig * m``, a Parameter again). The hook is a small object
holding only the parameter's name, so ``copy.deepcopy`` of a pruned model works.
Tests: ``tests/optim/prune/test_prune_parametrize.py``.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from minnet.nn import Module, Parameter

from ._checks import check_mask


class MaskHook:
    """Forward pre-hook recomputing ``module.<name> = <name>_orig * <name>_mask``."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, module: Module, args) -> None:
        refresh(module, self.name)


def _hook(module: Module, name: str) -> tuple[int, MaskHook] | None:
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, MaskHook) and hook.name == name:
            return key, hook
    return None


def is_pruned(module: Module, name: str | None = None) -> bool:
    """Whether parameter ``name`` (any parameter, if None) of ``module`` carries a pruning mask."""
    return any(isinstance(h, MaskHook) and (name is None or h.name == name)
               for h in module._forward_pre_hooks.values())


def pruned_names(module: Module) -> list[str]:
    """Names of the pruned parameters of ``module`` itself (not of its children)."""
    return [h.name for h in module._forward_pre_hooks.values() if isinstance(h, MaskHook)]


def refresh(module: Module, name: str) -> None:
    """Recompute the effective ``module.<name>`` from ``<name>_orig`` and ``<name>_mask``
    (the pre-hook does this before every forward; call it after loading a state dict)."""
    orig = module._parameters[name + "_orig"]
    mask = module._buffers[name + "_mask"]
    object.__setattr__(module, name, orig * mask.astype(orig.dtype))


def original(module: Module, name: str) -> Parameter:
    """The trainable Parameter behind ``name``: ``<name>_orig`` if pruned, else ``<name>``."""
    param = module._parameters.get(name + "_orig" if is_pruned(module, name) else name)
    if param is None:
        raise ValueError(f"{type(module).__name__} has no parameter {name!r} "
                         f"(parameters: {list(module._parameters)})")
    return param


def get_mask(module: Module, name: str) -> np.ndarray:
    """The mask of parameter ``name`` (all True if it is not pruned)."""
    if is_pruned(module, name):
        return module._buffers[name + "_mask"]
    return np.ones(original(module, name).shape, dtype=bool)


def effective_weight(module: Module, name: str) -> np.ndarray:
    """The weight the forward pass uses: ``orig * mask`` if pruned, else the parameter's data."""
    param = original(module, name)
    if is_pruned(module, name):
        return param.data * module._buffers[name + "_mask"]
    return param.data


def apply_mask(module: Module, name: str, mask: np.ndarray) -> Module:
    """Prune parameter ``name`` of ``module`` with ``mask`` (True = kept); returns ``module``.

    If ``name`` is already pruned the masks compose: the new mask is ``old & mask``, as
    ``torch.nn.utils.prune``'s PruningContainer.
    """
    if not isinstance(module, Module):
        raise TypeError(f"module must be a minnet Module, got {type(module).__name__}")
    param = original(module, name)
    mask = check_mask(mask, param.shape)
    if is_pruned(module, name):
        module._buffers[name + "_mask"] = module._buffers[name + "_mask"] & mask
    else:
        del module._parameters[name]
        module.register_parameter(name + "_orig", param)
        module.register_buffer(name + "_mask", mask.copy())
        module.register_forward_pre_hook(MaskHook(name))
    refresh(module, name)
    return module


def remove(module: Module, name: str) -> Module:
    """Make the pruning of ``name`` permanent: ``<name>`` becomes the Parameter ``orig * mask``
    (the same Parameter object as ``<name>_orig``, updated in place) and the mask buffer and
    hook are removed. Returns ``module``."""
    found = _hook(module, name)
    if found is None:
        raise ValueError(f"parameter {name!r} of {type(module).__name__} is not pruned")
    param = module._parameters.pop(name + "_orig")
    param.data *= module._buffers.pop(name + "_mask")
    del module._forward_pre_hooks[found[0]]
    module.__dict__.pop(name, None)
    module.register_parameter(name, param)
    return module


def named_pruned(model: Module) -> Iterator[tuple[str, Module, str]]:
    """``(module name, module, parameter name)`` of every pruned parameter in ``model``."""
    for module_name, module in model.named_modules():
        for name in pruned_names(module):
            yield module_name, module, name


def remove_all(model: Module) -> Module:
    """``remove`` every pruning parametrization in ``model``; returns ``model``."""
    for _, module, name in list(named_pruned(model)):
        remove(module, name)
    return model


def restore_pruning(model: Module, state_dict: dict[str, np.ndarray], strict: bool = True):
    """Load a state dict saved from a pruned model into ``model``, first adding the pruning
    parametrization for every ``<module>.<name>_mask`` key that ``model`` lacks. Returns
    ``load_state_dict``'s ``(missing_keys, unexpected_keys)``."""
    modules = dict(model.named_modules())
    for key in state_dict:
        if not key.endswith("_mask"):
            continue
        module_name, _, attr = key.rpartition(".")
        name = attr[: -len("_mask")]
        module = modules.get(module_name)
        if module is None or f"{key[:-len('_mask')]}_orig" not in state_dict:
            continue
        if not is_pruned(module, name):
            apply_mask(module, name, np.ones(original(module, name).shape, dtype=bool))
    result = model.load_state_dict(state_dict, strict=strict)
    for _, module, name in named_pruned(model):
        refresh(module, name)
    return result
