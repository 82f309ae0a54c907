r"""The pruning mask as a parametrization of a module parameter (``minnet.nn.parametrize``).

Pruning parameter ``name`` of a module registers ``PruningMask`` on it: the Parameter moves to
``parametrizations.<name>.original`` (same object, so an optimizer built before keeps updating
it), the mask is the boolean buffer ``parametrizations.<name>.0.mask`` (PyTorch's keys for a
parametrized module), and every read of ``module.<name>`` computes

.. math:: \texttt{module.<name>} = w_{orig} \odot m

The gradient reaching :math:`w_{orig}` is :math:`g \odot m`, and whatever an optimizer does to
the masked entries of :math:`w_{orig}` (momentum, weight decay, Adam's moments) never reaches
the effective weight: masked weights stay exactly 0. The mask is the first parametrization of
its parameter: fake quantization and weight sharing registered on the same parameter act on
the masked weight (prune, then quantize, as Han et al. 2016). ``remove`` makes the pruning
permanent (:math:`w_{orig} \leftarrow w_{orig} \odot m`, the mask leaves the chain).
Tests: ``tests/optim/prune/test_prune_parametrize.py``.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from minnet import Tensor
from minnet.nn import Module
from minnet.nn import parametrize as P
from minnet.nn.parametrize import original

from ._checks import check_mask


class PruningMask(Module):
    r""":math:`w \mapsto w \odot m` for a boolean ``mask`` (True = kept), stored as a buffer."""

    def __init__(self, mask: np.ndarray):
        super().__init__()
        self.register_buffer("mask", np.asarray(mask, dtype=bool))

    def forward(self, w: Tensor) -> Tensor:
        return w * Tensor(self.mask.astype(w.dtype))

    def extra_repr(self) -> str:
        return f"kept={int(self.mask.sum())}/{self.mask.size}"


def _pruning_mask(module: Module, name: str) -> PruningMask | None:
    return next((p for p in P.parametrizations_of(module, name) if isinstance(p, PruningMask)),
                None)


def is_pruned(module: Module, name: str | None = None) -> bool:
    """Whether parameter ``name`` (any parameter, if None) of ``module`` carries a pruning mask."""
    names = pruned_names(module) if name is None else [name]
    return any(_pruning_mask(module, n) is not None for n in names)


def pruned_names(module: Module) -> list[str]:
    """Names of the pruned parameters of ``module`` itself (not of its children)."""
    if not P.is_parametrized(module):
        return []
    return [n for n in module.parametrizations._modules if _pruning_mask(module, n) is not None]


def get_mask(module: Module, name: str) -> np.ndarray:
    """The mask of parameter ``name`` (all True if it is not pruned)."""
    mask = _pruning_mask(module, name)
    return np.ones(original(module, name).shape, dtype=bool) if mask is None else mask.mask


def effective_weight(module: Module, name: str) -> np.ndarray:
    """The pruned weight :math:`w_{orig} \\odot m` (the parameter's data if not pruned), before
    any other parametrization (quantizers are not run, so their statistics do not move)."""
    param = original(module, name)
    mask = _pruning_mask(module, name)
    return param.data if mask is None else param.data * mask.mask


def apply_mask(module: Module, name: str, mask: np.ndarray) -> Module:
    """Prune parameter ``name`` of ``module`` with ``mask`` (True = kept); returns ``module``.

    If ``name`` is already pruned the masks compose: the new mask is ``old & mask``, as
    ``torch.nn.utils.prune``'s PruningContainer.
    """
    if not isinstance(module, Module):
        raise TypeError(f"module must be a minnet Module, got {type(module).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a parameter name, got {type(name).__name__}")
    param = original(module, name)
    mask = check_mask(mask, param.shape)
    existing = _pruning_mask(module, name)
    if existing is not None:
        existing.mask = existing.mask & mask
    elif P.is_parametrized(module, name):
        module.parametrizations._modules[name].insert(0, PruningMask(mask.copy()))
    else:
        P.register_parametrization(module, name, PruningMask(mask.copy()))
    return module


def remove(module: Module, name: str) -> Module:
    """Make the pruning of ``name`` permanent: the mask is multiplied into the original
    Parameter (the same object, updated in place) and leaves the chain; with no other
    parametrization left, ``<name>`` is a plain Parameter again. Returns ``module``."""
    mask = _pruning_mask(module, name)
    if mask is None:
        raise ValueError(f"parameter {name!r} of {type(module).__name__} is not pruned")
    chain = module.parametrizations._modules[name]
    chain.original.data *= mask.mask
    chain.pop(list(chain).index(mask))
    if not len(chain):
        P.remove_parametrizations(module, name, leave_parametrized=False)
    return module


def named_pruned(model: Module) -> Iterator[tuple[str, Module, str]]:
    """``(module name, module, parameter name)`` of every pruned parameter in ``model``."""
    for module_name, module in model.named_modules():
        for name in pruned_names(module):
            yield module_name, module, name


def remove_all(model: Module) -> Module:
    """``remove`` every pruning mask in ``model``; returns ``model``."""
    for _, module, name in list(named_pruned(model)):
        remove(module, name)
    return model


def restore_pruning(model: Module, state_dict: dict[str, np.ndarray], strict: bool = True):
    """Load a state dict saved from a pruned model into ``model``, first adding a pruning mask
    for every ``<module>.parametrizations.<name>.<i>.mask`` key that ``model`` lacks. Returns
    ``load_state_dict``'s ``(missing_keys, unexpected_keys)``."""
    modules = dict(model.named_modules())
    for key in state_dict:
        parts = key.split(".")
        if len(parts) < 4 or parts[-1] != "mask" or parts[-4] != "parametrizations":
            continue
        module, name = modules.get(".".join(parts[:-4])), parts[-3]
        if module is not None and not is_pruned(module, name):
            apply_mask(module, name, np.ones(original(module, name).shape, dtype=bool))
    return model.load_state_dict(state_dict, strict=strict)
