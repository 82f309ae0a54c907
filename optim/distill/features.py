"""Reading intermediate outputs of named submodules through forward hooks.

Tests: ``tests/optim/distill/test_distill_distiller.py::test_record_features_*``.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

from minnet import nn


def named_submodules(model: nn.Module, names: Iterable[str], role: str = "model"
                     ) -> dict[str, nn.Module]:
    """``{name: model's submodule of that dotted name}``; ValueError naming ``role`` and the
    missing name (and listing the valid ones) if a name does not exist."""
    modules = {name: module for name, module in model.named_modules() if name}
    found = {}
    for name in names:
        if name not in modules:
            raise ValueError(f"{role} has no submodule named {name!r}; its submodules are "
                             f"{sorted(modules)}")
        found[name] = modules[name]
    return found


@contextlib.contextmanager
def record_features(model: nn.Module, names: Iterable[str], role: str = "model"
                    ) -> Iterator[dict[str, object]]:
    """Inside the block, each forward of ``model`` stores the output of every named submodule
    in the yielded dict (the latest call wins); the hooks are removed on exit.

    >>> with record_features(model, ["3"]) as outputs:   # doctest: +SKIP
    ...     logits = model(x)
    >>> outputs["3"]          # what model[3] returned during that forward   # doctest: +SKIP
    """
    modules = named_submodules(model, names, role)
    outputs: dict[str, object] = {}

    def hook_for(name: str):
        def hook(module, args, output):
            outputs[name] = output
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
