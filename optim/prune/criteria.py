"""Saliency criteria on models: gather what a score needs (gradients, per-sample gradients,
Hessian-vector products, activations) from data, then call the pure functions in ``scores``.

A target is ``(module name, module, parameter name)``, e.g. ``("1", Linear, "weight")``.
Scores are computed in eval mode (BatchNorm uses running statistics, dropout is off) on the
effective weights (``orig * mask`` for pruned parameters, whose pruned entries then score 0
for the data-driven criteria and are never revived). Tests: ``tests/optim/prune/test_prune_model.py``.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, Sequence

import numpy as np

import minnet
from minnet import functional as F
from minnet.data import DataLoader
from minnet.nn import BatchNorm1d, BatchNorm2d, Module, ReLU

from . import grasp as G
from . import scores as S
from .grasp import hessian_gradient_product
from .masks import lp_norms
from ._checks import check_positive_int, make_rng
from .parametrize import effective_weight, original
from .shrink import PER_CHANNEL, flat_layers

Target = tuple[str, Module, str]
LossFn = Callable[[minnet.Tensor, np.ndarray], minnet.Tensor]


def _check_data(data, criterion: str) -> tuple[np.ndarray, np.ndarray]:
    if data is None:
        raise ValueError(f"criterion {criterion!r} needs data=(x, y)")
    if not isinstance(data, (tuple, list)) or len(data) != 2 or len(data[0]) != len(data[1]) \
            or len(data[0]) == 0:
        raise ValueError(f"data must be a pair (x, y) of equal, non-zero length for criterion "
                         f"{criterion!r}")
    return np.asarray(data[0]), np.asarray(data[1])


@contextlib.contextmanager
def _eval_mode(model: Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _saved_grads(model: Module) -> Iterator[None]:
    """Run the block from zero gradients, then put every parameter's ``.grad`` back."""
    params = list(model.parameters())
    saved = [p.grad for p in params]
    model.zero_grad()
    try:
        yield
    finally:
        for p, g in zip(params, saved):
            p.grad = g


def mean_gradients(model: Module, targets: Sequence[Target], data, *,
                   loss_fn: LossFn = F.cross_entropy, batch_size: int = 256) -> list[np.ndarray]:
    r""":math:`\nabla_w \frac1N \sum_n \ell(x_n, y_n)` for each target, at the effective
    weights (the gradient of the original of a pruned parameter is masked). Leaves the
    parameters' ``.grad`` as it found them."""
    x, y = _check_data(data, "gradient")
    params = [original(m, name) for _, m, name in targets]
    with _eval_mode(model), _saved_grads(model):
        for xb, yb in DataLoader(x, y, batch_size=batch_size):
            loss = loss_fn(model(minnet.Tensor(xb)), yb, reduction="sum") * (1.0 / len(x))
            loss.backward()
        return [np.zeros_like(p.data) if p.grad is None else p.grad.copy() for p in params]


def per_sample_gradients(model: Module, targets: Sequence[Target], data, *,
                         loss_fn: LossFn = F.cross_entropy) -> Iterator[list[np.ndarray]]:
    r"""Yield, sample by sample, :math:`\nabla_w \ell(x_n, y_n)` for each target."""
    x, y = _check_data(data, "per-sample gradient")
    params = [original(m, name) for _, m, name in targets]
    with _eval_mode(model), _saved_grads(model):
        for n in range(len(x)):
            model.zero_grad()
            loss_fn(model(minnet.Tensor(x[n:n + 1])), y[n:n + 1], reduction="sum").backward()
            yield [np.zeros_like(p.data) if p.grad is None else p.grad for p in params]


def _per_sample_means(model, targets, data, fn, loss_fn) -> list[np.ndarray]:
    """Mean over samples of ``fn(w, g_n)`` per target (a running sum, no (N, ...) array)."""
    weights = [effective_weight(m, name) for _, m, name in targets]
    totals = [np.zeros(w.shape, dtype=np.float64) for w in weights]
    count = 0
    for grads in per_sample_gradients(model, targets, data, loss_fn=loss_fn):
        for total, w, g in zip(totals, weights, grads):
            total += fn(w, g[None])
        count += 1
    return [total / count for total in totals]


def flat_gradient(model: Module, targets: Sequence[Target], data, *,
                  loss_fn: LossFn = F.cross_entropy, batch_size: int = 256
                  ) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray, Callable]:
    """``(gradient, start, unflatten)``: ``gradient(flat)`` is the mean-loss gradient of a
    float64 copy of the model at the targets' parameters set to ``flat`` (all targets
    concatenated), ``start`` their current values, ``unflatten(flat)`` the per-target arrays."""
    twin = copy.deepcopy(model).double()
    modules = dict(twin.named_modules())
    twin_targets = [(name, modules[name], p) for name, _, p in targets]
    params = [original(m, p) for _, m, p in twin_targets]
    splits = np.cumsum([p.size for p in params])[:-1]
    start = np.concatenate([p.data.ravel() for p in params])

    def gradient(flat: np.ndarray) -> np.ndarray:
        for p, part in zip(params, np.split(flat, splits)):
            p.data[...] = part.reshape(p.shape)
        grads = mean_gradients(twin, twin_targets, data, loss_fn=loss_fn, batch_size=batch_size)
        return np.concatenate([g.ravel() for g in grads])

    def unflatten(flat: np.ndarray) -> list[np.ndarray]:
        return [part.reshape(p.shape) for part, p in zip(np.split(flat, splits), params)]

    return gradient, start, unflatten


def hessian_diagonals(model: Module, targets: Sequence[Target], data, *, n_samples: int = 20,
                      eps: float = 1e-3, rng=None, loss_fn: LossFn = F.cross_entropy,
                      batch_size: int = 256) -> list[np.ndarray]:
    """Hutchinson estimates of the Hessian diagonal of the mean loss for every target, with
    Hessian-vector products by central differences of gradients on a float64 copy of the model
    (``scores.hutchinson_diagonal``, ``scores.finite_difference_hvp``)."""
    gradient, start, unflatten = flat_gradient(model, targets, data, loss_fn=loss_fn,
                                               batch_size=batch_size)

    def hvp(v: np.ndarray) -> np.ndarray:
        return S.finite_difference_hvp(gradient, start, v, eps)

    return unflatten(S.hutchinson_diagonal(hvp, (start.size,), n_samples, rng))


def _cast(scores: list[np.ndarray], targets: Sequence[Target]) -> list[np.ndarray]:
    return [np.asarray(s, dtype=np.float64).reshape(original(m, n).shape)
            for s, (_, m, n) in zip(scores, targets)]


# ---- unstructured criteria: one score per weight ------------------------------------------

def _magnitude(model, targets, data, rng, **_):
    return [S.magnitude_scores(effective_weight(m, n)) for _, m, n in targets]


def _random(model, targets, data, rng, **_):
    rng = make_rng(rng)
    return [S.random_scores(original(m, n).shape, rng) for _, m, n in targets]


def _taylor(model, targets, data, rng, loss_fn=F.cross_entropy, **_):
    grads = mean_gradients(model, targets, data, loss_fn=loss_fn)
    return [S.taylor_scores(effective_weight(m, n), g) for (_, m, n), g in zip(targets, grads)]


def _snip(model, targets, data, rng, loss_fn=F.cross_entropy, **_):
    grads = mean_gradients(model, targets, data, loss_fn=loss_fn)
    return S.snip_scores([effective_weight(m, n) for _, m, n in targets], grads)


def _obd_fisher(model, targets, data, rng, loss_fn=F.cross_entropy, **_):
    fisher = _per_sample_means(model, targets, data, lambda w, g: S.fisher_diagonal(g), loss_fn)
    return [S.obd_scores(effective_weight(m, n), h) for (_, m, n), h in zip(targets, fisher)]


def _obd_hutchinson(model, targets, data, rng, loss_fn=F.cross_entropy, n_samples=20, **_):
    diags = hessian_diagonals(model, targets, data, n_samples=n_samples, rng=rng, loss_fn=loss_fn)
    return [S.obd_scores(effective_weight(m, n), h) for (_, m, n), h in zip(targets, diags)]


def _influence(model, targets, data, rng, loss_fn=F.cross_entropy, **_):
    return _per_sample_means(model, targets, data, S.influence_scores, loss_fn)


def _grasp(model, targets, data, rng, loss_fn=F.cross_entropy, eps=1e-4, **_):
    """Keep-score -S = θ ⊙ Hg (GraSP deletes the highest S, the masks the lowest keep-score)."""
    gradient, start, unflatten = flat_gradient(model, targets, data, loss_fn=loss_fn)
    hg = hessian_gradient_product(gradient, start, eps)
    weights = [effective_weight(m, n) for _, m, n in targets]
    return [-G.grasp_scores(w, h) for w, h in zip(weights, unflatten(hg))]


UNSTRUCTURED = {"magnitude": _magnitude, "random": _random, "taylor": _taylor, "snip": _snip,
                "obd_fisher": _obd_fisher, "obd_hutchinson": _obd_hutchinson,
                "influence": _influence, "grasp": _grasp}
DATA_DRIVEN = ("taylor", "snip", "obd_fisher", "obd_hutchinson", "influence", "grasp",
               "activation_variance", "activation_entropy", "taylor_feature_map", "apoz")


def weight_scores(model: Module, targets: Sequence[Target], criterion: str | Callable = "magnitude",
                  data=None, rng=None, **options) -> list[np.ndarray]:
    """One score per weight of every target by ``criterion``: a name in ``UNSTRUCTURED``
    (``magnitude``, ``random``, ``taylor``, ``snip``, ``obd_fisher``, ``obd_hutchinson``,
    ``influence``, ``grasp``) or a callable ``(model, targets, data, rng, **options) -> list of arrays``.
    Data-driven criteria need ``data=(x, y)``; ``loss_fn`` and ``n_samples`` (Hutchinson) are
    passed through ``options``.

    ``obd_fisher`` uses the empirical Fisher diagonal, which is never negative (LeCun et al.
    1990 also used a non-negative, Gauss-Newton diagonal); ``obd_hutchinson`` estimates the
    exact Hessian diagonal, which can be negative (noise, or negative curvature away from a
    minimum), and such weights then score below zero and are pruned first. ``grasp`` returns
    the keep-score θ ⊙ Hg, the negated GraSP score, so that the masks delete
    the weights of highest GraSP score as Wang et al. 2020 do (``grasp.grasp_scores``; ``eps``
    sets the finite-difference step of :math:`Hg`)."""
    fn = _lookup(UNSTRUCTURED, criterion)
    if criterion in DATA_DRIVEN:
        _check_data(data, criterion)
    return _cast(fn(model, targets, data, rng, **options), targets)


def _lookup(table: dict, criterion):
    if callable(criterion):
        return criterion
    if criterion not in table:
        raise ValueError(f"criterion must be one of {sorted(table)} or a callable, "
                         f"got {criterion!r}")
    return table[criterion]


# ---- structured criteria: one score per output unit (neuron or filter) --------------------

def activations(model: Module, module: Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs of ``module`` (a submodule of ``model``) over the inputs ``x``, in eval mode."""
    collected: list[np.ndarray] = []
    handle = module.register_forward_hook(lambda m, args, out: collected.append(out.data.copy()))
    try:
        with _eval_mode(model), minnet.no_grad():
            for (xb,) in DataLoader(np.asarray(x), batch_size=batch_size):
                model(minnet.Tensor(xb))
    finally:
        handle.remove()
    if not collected:
        raise ValueError("the module was not called by the model's forward pass")
    return np.concatenate(collected)


def activations_and_gradients(model: Module, module: Module, data, *,
                              loss_fn: LossFn = F.cross_entropy, batch_size: int = 256
                              ) -> tuple[np.ndarray, np.ndarray]:
    r"""Outputs :math:`z_n` of ``module`` and the gradients :math:`\partial \ell(x_n, y_n) /
    \partial z_n` of each example's own loss, over ``data=(x, y)`` in eval mode (examples are
    independent there, so one backward of the summed batch loss gives every example's
    gradient). Leaves the parameters' ``.grad`` as it found them."""
    x, y = _check_data(data, "activation gradient")
    outputs: list[minnet.Tensor] = []

    def keep(m, args, out):
        outputs.append(out)

    acts, grads = [], []
    handle = module.register_forward_hook(keep)
    try:
        with _eval_mode(model), _saved_grads(model):
            for xb, yb in DataLoader(x, y, batch_size=batch_size):
                outputs.clear()
                loss = loss_fn(model(minnet.Tensor(xb)), yb, reduction="sum")
                if len(outputs) != 1:
                    raise ValueError("the module must be called exactly once by the forward pass")
                out = outputs[0]
                seen: list[np.ndarray] = []
                if out.requires_grad:
                    out.register_hook(lambda g: seen.append(g.copy()))
                    loss.backward()
                acts.append(out.data.copy())
                grads.append(seen[0] if seen else np.zeros_like(out.data))
    finally:
        handle.remove()
    return np.concatenate(acts), np.concatenate(grads)


def _relu_output(model: Module, layer_name: str) -> Module:
    """The first ReLU after ``layer_name`` with only channel-wise layers between them."""
    layers = flat_layers(model)
    names = [name for name, _ in layers]
    for _, module in layers[names.index(layer_name) + 1:]:
        if isinstance(module, ReLU):
            return module
        if not isinstance(module, PER_CHANNEL):
            break
    raise ValueError(f"criterion 'apoz' needs a ReLU after layer {layer_name!r}")


def _unit_output(model: Module, layer_name: str) -> Module:
    """The last module of the chain after ``layer_name`` that still acts channel-wise
    (BatchNorm, activations, pooling, dropout): where the unit's output is observed."""
    layers = flat_layers(model)
    names = [name for name, _ in layers]
    i = names.index(layer_name)
    out = layers[i][1]
    for _, module in layers[i + 1:]:
        if not isinstance(module, PER_CHANNEL):
            break
        out = module
    return out


def _following_batch_norm(model: Module, layer_name: str):
    layers = flat_layers(model)
    names = [name for name, _ in layers]
    i = names.index(layer_name)
    if i + 1 < len(layers) and isinstance(layers[i + 1][1], (BatchNorm1d, BatchNorm2d)):
        return layers[i + 1][1]
    raise ValueError(f"criterion 'bn_scale' needs a BatchNorm right after layer {layer_name!r}")


def channel_scores(model: Module, layer_name: str, criterion: str = "l1", data=None, rng=None,
                   bins: int = 100, loss_fn: LossFn = F.cross_entropy) -> np.ndarray:
    """One score per output unit of the Linear/Conv2d ``layer_name`` of ``model``:

    - ``l1`` / ``l2``: norm of the unit's weights (Li et al. 2017), ``masks.lp_norms``;
    - ``fpgm``: total distance to the other filters (He et al. 2019), ``scores.fpgm_scores``;
    - ``taylor``: :math:`(\\sum g w)^2` over the unit (Molchanov et al. 2019);
    - ``bn_scale``: :math:`|\\gamma|` of the BatchNorm that follows (Liu et al. 2017);
    - ``activation_variance`` / ``activation_entropy``: statistics of the unit's output after
      its BatchNorm/activation/pooling over ``data`` (Polyak & Wolf 2015; Luo & Wu 2017);
    - ``taylor_feature_map``: :math:`|\\frac1M \\sum_m g_m z_m|` per example, averaged and
      ℓ2-normalised over the layer, at that same output (Molchanov et al. 2017,
      ``scores.taylor_feature_map_scores``);
    - ``apoz``: :math:`1 - \\mathrm{APoZ}` of the unit's ReLU output over ``data`` (Hu et al.
      2016, ``scores.apoz``), so the channels with the most zeros are pruned first;
    - ``random``: the seeded baseline.
    """
    modules = dict(model.named_modules())
    if layer_name not in modules:
        raise ValueError(f"model has no layer {layer_name!r}")
    layer = modules[layer_name]
    w = effective_weight(layer, "weight")
    if criterion in DATA_DRIVEN:
        _check_data(data, criterion)
    if criterion in ("l1", "l2"):
        return lp_norms(w, 1 if criterion == "l1" else 2, axis=0)
    if criterion == "fpgm":
        return S.fpgm_scores(w)
    if criterion == "random":
        return S.random_scores((w.shape[0],), rng).astype(np.float64)
    if criterion == "taylor":
        (g,) = mean_gradients(model, [(layer_name, layer, "weight")], data, loss_fn=loss_fn)
        return S.taylor_group_scores(w, g)
    if criterion == "bn_scale":
        return S.bn_scale_scores(effective_weight(_following_batch_norm(model, layer_name),
                                                  "weight"))
    if criterion == "taylor_feature_map":
        z, g = activations_and_gradients(model, _unit_output(model, layer_name), data,
                                         loss_fn=loss_fn)
        return S.taylor_feature_map_scores(z, g)
    if criterion == "apoz":
        return 1.0 - S.apoz(activations(model, _relu_output(model, layer_name),
                                        np.asarray(data[0])))
    if criterion in ("activation_variance", "activation_entropy"):
        acts = activations(model, _unit_output(model, layer_name), np.asarray(data[0]))
        if criterion == "activation_variance":
            return S.activation_variance(acts)
        return S.activation_entropy(acts, check_positive_int(bins, "bins"))
    raise ValueError(f"criterion must be one of ['activation_entropy', 'activation_variance', "
                     f"'apoz', 'bn_scale', 'fpgm', 'l1', 'l2', 'random', 'taylor', "
                     f"'taylor_feature_map'], got {criterion!r}")
