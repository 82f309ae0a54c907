"""Pruning whole models: choose targets, score them, mask them (layer-wise or global scope).

``prune_model`` reaches a *total* sparsity over its targets: entries already pruned count,
only the remaining ones are ranked, and pruned entries stay pruned, so calling it with a rising
sparsity (the schedules) composes like ``torch.nn.utils.prune``'s repeated calls. Tests:
``tests/optim/prune/test_prune_model.py``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from minnet import nn

from ._checks import check_fraction, n_to_prune
from .criteria import Target, channel_scores, weight_scores
from .masks import expand_channel_mask, global_topk_masks, nm_mask, topk_mask
from .parametrize import apply_mask, get_mask, original
from .scores import slimming_penalty_grad

SCOPES = ("global", "layer")


def prunable(model: nn.Module, types: tuple[type, ...] = (nn.Linear, nn.Conv2d),
             name: str = "weight") -> list[Target]:
    """Targets ``(module name, module, name)`` for every module of ``types`` in ``model``."""
    return [(module_name, module, name) for module_name, module in model.named_modules()
            if isinstance(module, types)]


def _check_targets(targets: Sequence[Target]) -> list[Target]:
    targets = list(targets)
    if not targets:
        raise ValueError("targets must not be empty")
    for entry in targets:
        if not (isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[1], nn.Module)):
            raise TypeError(f"each target must be (module name, module, parameter name), "
                            f"got {entry!r}")
        original(entry[1], entry[2])  # raises if the module lacks the parameter
    return targets


def target_sparsity(targets: Sequence[Target]) -> float:
    """Fraction of pruned entries over all targets' masks together."""
    masks = [get_mask(m, n) for _, m, n in targets]
    total = sum(m.size for m in masks)
    return float(sum(m.size - np.count_nonzero(m) for m in masks) / total)


def _to_prune(mask: np.ndarray, sparsity: float) -> int:
    """How many more entries to prune so that ``mask`` reaches ``sparsity`` (never negative)."""
    return max(0, round(sparsity * mask.size) - (mask.size - int(np.count_nonzero(mask))))


def prune_model(model: nn.Module, sparsity: float, criterion: str | Callable = "magnitude", *,
                scope: str = "global", targets: Sequence[Target] | None = None, data=None,
                rng=None, **options) -> dict[str, np.ndarray]:
    """Mask the targets (default: every Linear and Conv2d weight) to a total ``sparsity``.

    ``scope="global"`` ranks all targets' scores together (one threshold, Han et al. 2015's
    global variant and SNIP's); ``"layer"`` gives every target the same sparsity. Scores come
    from ``criteria.weight_scores(criterion, data, rng, **options)``. Returns the new masks by
    target name (``"<module>.<param>"``).
    """
    sparsity = check_fraction(sparsity, "sparsity")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    targets = _check_targets(prunable(model) if targets is None else targets)
    scores = weight_scores(model, targets, criterion, data=data, rng=rng, **options)
    previous = [get_mask(m, n) for _, m, n in targets]
    if scope == "global":
        flat = np.concatenate([p.ravel() for p in previous])
        masks = global_topk_masks(scores, _to_prune(flat, sparsity), previous)
    else:
        masks = [topk_mask(s, _to_prune(p, sparsity), p) for s, p in zip(scores, previous)]
    result = {}
    for (module_name, module, name), mask in zip(targets, masks):
        apply_mask(module, name, mask)
        result[f"{module_name}.{name}" if module_name else name] = mask
    return result


def prune_channels(model: nn.Module, amount: int | float, criterion: str = "l1", *,
                   layers: Sequence[str] | None = None, data=None, rng=None,
                   **options) -> dict[str, np.ndarray]:
    """Remove ``amount`` output units (a count or a fraction) of each named Linear/Conv2d layer
    (default: all but the last) by ``criteria.channel_scores(criterion)``: whole rows/filters
    of the weight are masked (the bias stays; ``shrink`` folds it forward). Units already
    removed count towards ``amount``. Returns the per-unit keep vectors by layer name."""
    candidates = [name for name, _, _ in prunable(model)]
    if layers is None:
        layers = candidates[:-1]
    modules = dict(model.named_modules())
    result = {}
    for layer_name in layers:
        if layer_name not in candidates:
            raise ValueError(f"layer {layer_name!r} is not a Linear/Conv2d of the model "
                             f"(candidates: {candidates})")
        module = modules[layer_name]
        scores = channel_scores(model, layer_name, criterion, data=data, rng=rng, **options)
        kept = get_mask(module, "weight").reshape(len(scores), -1).any(axis=1)
        k = n_to_prune(amount, len(scores))
        keep = topk_mask(scores, max(0, k - int((~kept).sum())), kept)
        apply_mask(module, "weight", expand_channel_mask(keep, module.weight.shape, 0))
        result[layer_name] = keep
    return result


def prune_nm(model: nn.Module, n: int = 2, m: int = 4, criterion: str | Callable = "magnitude",
             *, targets: Sequence[Target] | None = None, data=None, rng=None,
             **options) -> dict[str, np.ndarray]:
    """Semi-structured N:M pruning: in every group of ``m`` consecutive weights along the input
    axis (axis 1 of a Linear or Conv2d weight) keep the ``n`` best by ``criterion``
    (``masks.nm_mask``; 2:4 is NVIDIA's sparse tensor-core pattern). Masks compose with
    earlier ones. Returns the new masks by target name."""
    targets = _check_targets(prunable(model) if targets is None else targets)
    scores = weight_scores(model, targets, criterion, data=data, rng=rng, **options)
    result = {}
    for (module_name, module, name), s in zip(targets, scores):
        mask = nm_mask(s, n, m, axis=1 if s.ndim > 1 else 0)
        apply_mask(module, name, mask)
        result[f"{module_name}.{name}" if module_name else name] = get_mask(module, name)
    return result


def slimming_penalty(model: nn.Module, penalty: float) -> list:
    r"""Add the network-slimming L1 penalty :math:`\lambda \sum |\gamma|` to training: a
    gradient hook on every BatchNorm scale adds ``scores.slimming_penalty_grad`` to its
    gradient (Liu et al. 2017, eq. 1). Returns the hook handles (``handle.remove()`` stops it);
    prune afterwards with ``prune_channels(..., criterion="bn_scale")``."""
    handles = []
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.weight is not None:
            gamma = module.weight
            handles.append(gamma.register_hook(
                lambda grad, gamma=gamma: grad + slimming_penalty_grad(gamma.data, penalty)))
    if not handles:
        raise ValueError("model has no BatchNorm layer with a scale to penalise")
    return handles
