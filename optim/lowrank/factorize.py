r"""Replacing Linear and Conv2d layers by two thinner layers from a truncated SVD.

A ``Linear(n, m)`` becomes ``Sequential(Linear(n, r, bias=False), Linear(r, m))``:
:math:`y = W x + b \approx A (B x) + b` with the factors of ``truncated_svd`` (or, given
calibration inputs, of the centred ``whitened_svd`` with a corrected bias). A ``Conv2d``
becomes two convolutions (``conv.conv_factors``, scheme ``"channel"`` or ``"spatial"``). The
rank is given, or chosen as the smallest keeping a fraction ``energy`` of the singular
energy, or the largest fitting a parameter ``budget``. The factorized model is then fine-tuned (``minnet.train.fit``) or
distilled from the original (``optim.distill.Distiller``) to recover accuracy.

Tests: ``tests/optim/lowrank/test_lowrank_factorize.py``.
"""
from __future__ import annotations

import numbers
from typing import Iterable, NamedTuple

import numpy as np

import minnet
from minnet import nn
from minnet.ops.conv import int_pair
from optim.distill.features import named_submodules

from .conv import check_scheme, conv_factors, factorized_params, kernel_matrix
from .svd import (budget_rank, check_rank, decompose, energy_rank, factors, kept_energy,
                  singular_values)


class Factorization(NamedTuple):
    """One replaced layer: its name, the chosen rank (of at most ``max_rank``), parameter
    counts before and after (biases included) and the fraction of singular energy kept."""
    name: str
    rank: int
    max_rank: int
    params_before: int
    params_after: int
    kept_energy: float


def choose_rank(singular_values: np.ndarray, params_per_rank: int, fixed_params: int,
                params_before: int, rank: int | None = None, energy: float | None = None,
                budget: int | float | None = None) -> int:
    """The rank given by exactly one rule: ``rank`` itself, the smallest rank keeping
    ``energy`` of the singular energy (``energy_rank``), or the largest fitting ``budget``
    parameters (``budget_rank``); a float budget in (0, 1] is that fraction of
    ``params_before``. The maximum rank is ``len(singular_values)``."""
    if sum(v is not None for v in (rank, energy, budget)) != 1:
        raise ValueError(f"give exactly one of rank, energy and budget, got rank={rank!r}, "
                         f"energy={energy!r}, budget={budget!r}")
    max_rank = len(singular_values)
    if rank is not None:
        return check_rank(rank, max_rank)
    if energy is not None:
        return energy_rank(singular_values, energy)
    if isinstance(budget, float):
        if not 0 < budget <= 1:
            raise ValueError(f"a fractional budget must be in (0, 1], got {budget!r}")
        budget = int(budget * params_before)
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise TypeError(f"budget must be an int (parameters) or a float fraction, got {budget!r}")
    return budget_rank(params_per_rank, fixed_params, int(budget), max_rank)


def _params(module: nn.Module) -> int:
    return sum(p.size for p in module.parameters())


Built = tuple[nn.Sequential, int, np.ndarray]  # the new layers, the rank, the singular values


def _linear(linear: nn.Linear, inputs: np.ndarray | None, **rule) -> Built:
    w = linear.weight.data
    m, n = w.shape
    bias = None if linear.bias is None else linear.bias.data
    mean = None if inputs is None else np.asarray(inputs, dtype=np.float64).mean(axis=0)
    u, s, vt = decompose(w, None if inputs is None else inputs - mean)
    rank = choose_rank(s, m + n, 0 if bias is None and mean is None else m, _params(linear), **rule)
    a, b = factors(u, s, vt, rank)
    if mean is not None:  # the bias absorbs the mean response the factors drop
        bias = (0.0 if bias is None else bias) + (w.astype(np.float64) - a @ b) @ mean
    first = nn.Linear(n, rank, bias=False, dtype=w.dtype)
    second = nn.Linear(rank, m, bias=bias is not None, dtype=w.dtype)
    first.weight.data[...] = b
    second.weight.data[...] = a
    if bias is not None:
        second.bias.data[...] = bias
    return nn.Sequential(first, second), rank, s


def factorize_linear(linear: nn.Linear, rank: int | None = None, *, energy: float | None = None,
                     budget: int | float | None = None, inputs: np.ndarray | None = None
                     ) -> nn.Sequential:
    r"""``Sequential(Linear(n, r, bias=False), Linear(r, m))`` approximating ``linear``
    (weight m × n, bias :math:`c`): the first weight is :math:`B`, the second :math:`A`.

    Give exactly one of ``rank``, ``energy`` (fraction of :math:`\sum \sigma_i^2` to keep) or
    ``budget`` (parameters of the result, or a float fraction of the original's).

    Without ``inputs``, :math:`A B` is the truncated SVD of :math:`W` and the bias is kept.
    With ``inputs`` (rows :math:`x_i` of layer inputs, (N, n), mean :math:`\mu`) the
    factorization is data-aware: it minimises the response error on those inputs,

    .. math::
        \min_{\operatorname{rank}(AB) \le r,\ \hat c} \sum_i \|(W x_i + c) - (A B x_i + \hat c)\|^2
        \ \Rightarrow\ AB = \text{whitened SVD of } W \text{ on } x_i - \mu, \quad
        \hat c = c + (W - AB)\mu

    (for any fixed :math:`AB` the best :math:`\hat c` matches the mean response, which leaves
    the centred problem, solved by ``whitened_svd``). The energy is then that of the centred
    responses and the error on the inputs is :math:`\sqrt{\sum_{i>r}\sigma_i^2}`. Tested by
    ``tests/optim/lowrank/test_lowrank_factorize.py::test_factorized_linear_weight_error_is_eckart_young`` and
    ``::test_data_aware_linear_response_error_is_the_discarded_energy``.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be a minnet.nn.Linear, got {type(linear).__name__}")
    return _linear(linear, inputs, rank=rank, energy=energy, budget=budget)[0]


def _conv(conv: nn.Conv2d, scheme: str, **rule) -> Built:
    if conv.groups != 1:
        raise ValueError(f"only convolutions with groups=1 can be factorized, "
                         f"got groups={conv.groups}")
    w = conv.weight.data
    n, c, kh, kw = w.shape
    bias = conv.bias is not None
    s = singular_values(kernel_matrix(w, check_scheme(scheme)))
    per_rank, _ = factorized_params(w.shape, scheme)
    rank = choose_rank(s, per_rank, n if bias else 0, _params(conv), **rule)
    first_w, second_w = conv_factors(w, rank, scheme)
    (sh, sw), (ph, pw) = int_pair("stride", conv.stride, 1), int_pair("padding", conv.padding, 0)
    dh, dw = int_pair("dilation", conv.dilation, 1)
    if scheme == "channel":
        first = nn.Conv2d(c, rank, (kh, kw), (sh, sw), (ph, pw), (dh, dw), bias=False,
                          dtype=w.dtype)
        second = nn.Conv2d(rank, n, 1, bias=bias, dtype=w.dtype)
    else:
        first = nn.Conv2d(c, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False, dtype=w.dtype)
        second = nn.Conv2d(rank, n, (1, kw), (1, sw), (0, pw), (1, dw), bias=bias, dtype=w.dtype)
    first.weight.data[...] = first_w
    second.weight.data[...] = second_w
    if bias:
        second.bias.data[...] = conv.bias.data
    return nn.Sequential(first, second), rank, s


def factorize_conv2d(conv: nn.Conv2d, rank: int | None = None, *, energy: float | None = None,
                     budget: int | float | None = None, scheme: str = "channel") -> nn.Sequential:
    """Two convolutions approximating ``conv`` (groups 1): ``"channel"`` — kh×kw with r
    filters, then 1×1; ``"spatial"`` — kh×1 with r filters, then 1×kw (Jaderberg et al. 2014,
    scheme 2). Stride, padding and dilation are split so that full rank is exact; the bias is
    kept on the second. Rank rules as ``factorize_linear``. Tested by
    ``tests/optim/lowrank/test_lowrank_conv.py::test_factorized_conv_matches_composed_kernel``."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv must be a minnet.nn.Conv2d, got {type(conv).__name__}")
    return _conv(conv, scheme, rank=rank, energy=energy, budget=budget)[0]


def _layer_inputs(model: nn.Module, modules: dict[str, nn.Module], x: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """Inputs reaching each named Linear when ``model`` runs on ``x`` (eval mode, no graph),
    as rows (-1, in_features)."""
    seen: dict[str, list[np.ndarray]] = {name: [] for name in modules}
    handles = []
    for name, module in modules.items():
        def hook(module, args, name=name):
            seen[name].append(np.asarray(args[0].data).reshape(-1, module.in_features))
        handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with minnet.no_grad():
            model(minnet.Tensor(np.asarray(x)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {name: np.concatenate(rows) for name, rows in seen.items()}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = named_submodules(model, [parent_name])[parent_name] if parent_name else model
    setattr(parent, attr, new)


def factorize(model: nn.Module, names: Iterable[str], rank: int | None = None, *,
              energy: float | None = None, budget: int | float | None = None,
              scheme: str = "channel", calibration: np.ndarray | None = None
              ) -> list[Factorization]:
    """Replace each named Linear / Conv2d of ``model`` in place by its factorization and
    return what was done, one ``Factorization`` per layer.

    One rule (``rank``, ``energy`` or ``budget``, see ``factorize_linear``) applies to every
    layer; ``scheme`` applies to convolutions. ``calibration`` (a batch of model inputs) makes
    the Linear factorizations data-aware (``factorize_linear`` with the inputs each layer
    receives). A name that does not exist raises ValueError; a layer of another type, TypeError.
    """
    names = [names] if isinstance(names, str) else list(names)
    modules = named_submodules(model, names, "model")
    for name, module in modules.items():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"layer {name!r} is a {type(module).__name__}; only Linear and "
                            "Conv2d layers can be factorized")
    linears = {k: m for k, m in modules.items() if isinstance(m, nn.Linear)}
    inputs = {}
    if calibration is not None and linears:
        inputs = _layer_inputs(model, linears, calibration)
    rule = dict(rank=rank, energy=energy, budget=budget)
    done = []
    for name, module in modules.items():
        if isinstance(module, nn.Linear):
            new, r, s = _linear(module, inputs.get(name), **rule)
        else:
            new, r, s = _conv(module, scheme, **rule)
        _replace(model, name, new)
        done.append(Factorization(name, r, len(s), _params(module), _params(new),
                                  kept_energy(s, r)))
    return done
