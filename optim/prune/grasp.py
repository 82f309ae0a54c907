r"""GraSP: pruning at initialisation by preserving gradient flow (Wang, Zhang & Grosse 2020,
"Picking Winning Tickets Before Training by Preserving Gradient Flow").

After an infinitesimal gradient step the loss falls at the rate :math:`\Delta L(\theta) =
-g^\top g` (the gradient flow), :math:`g = \nabla L(\theta)`. Deleting weights,
:math:`\theta \to \theta + \delta`, changes the squared gradient norm by

.. math:: \|g(\theta + \delta)\|^2 - \|g(\theta)\|^2 = 2\,\delta^\top H g + O(\|\delta\|^2)

with :math:`H` the Hessian of the loss. For deleting weight :math:`q` alone,
:math:`\delta = -\theta_q e_q`, this is :math:`2 S_q` with the paper's score (eq. 8)

.. math:: S(-\theta) = -\theta \odot H g .

A large :math:`S_q` means that deleting weight :math:`q` reduces the gradient norm least (or
raises it), so GraSP deletes the weights with the **highest** scores (Algorithm 1: keep
:math:`S(-\theta) < \tau`, :math:`\tau` the percentile of the pruning ratio). The sign
convention, derived above rather than taken on trust: :math:`2 S_q` is the first-order change
of :math:`\|g\|^2` (so :math:`-2 S_q` that of :math:`\Delta L`), and deleting the highest
:math:`S` keeps the most gradient flow. The masks of ``optim.prune.masks`` delete the lowest scores, so pass the keep-score
:math:`-S = \theta \odot H g` to them (``criteria.weight_scores(..., "grasp")`` does).

minnet has no double backward, so :math:`Hg` is a Hessian-vector product by central
differences of gradients (``scores.finite_difference_hvp``, :math:`O(\epsilon^2)`, exact for
a quadratic loss). The paper also divides the logits by a temperature (T = 200) when it
computes :math:`Hg`; that is a choice of ``loss_fn`` here.

Tests: ``tests/optim/prune/test_prune_grasp.py``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ._checks import check_float_array
from .scores import finite_difference_hvp


def hessian_gradient_product(grad_fn: Callable[[np.ndarray], np.ndarray], w: np.ndarray,
                             eps: float = 1e-4) -> np.ndarray:
    r""":math:`H g` at ``w`` with :math:`g = \nabla L(w)` = ``grad_fn(w)`` and :math:`H` the
    Hessian of :math:`L`, by central differences of the gradient along :math:`g`:
    :math:`(\nabla L(w + \epsilon g) - \nabla L(w - \epsilon g)) / 2\epsilon`. Use float64.
    Source: Wang et al. 2020 (the Hessian-gradient product of eq. 8); Pearlmutter 1994
    (the finite-difference form). Test:
    ``tests/optim/prune/test_prune_grasp.py::test_hessian_gradient_product_matches_brute_force_hessian``."""
    w = np.asarray(w, dtype=np.float64)
    g = np.asarray(grad_fn(w), dtype=np.float64)
    if g.shape != w.shape:
        raise ValueError(f"grad_fn returned shape {g.shape}, expected {w.shape}")
    return finite_difference_hvp(grad_fn, w, g, eps)


def grasp_scores(w: np.ndarray, hg: np.ndarray) -> np.ndarray:
    r"""GraSP score :math:`S(-\theta) = -\theta \odot H g` (Wang et al. 2020, eq. 8); the
    weights with the **highest** scores are deleted (Algorithm 1). :math:`2 S_q` is the
    first-order change of :math:`\|g\|^2` when weight :math:`q` is deleted. Test:
    ``tests/optim/prune/test_prune_grasp.py::test_grasp_score_is_half_the_gradient_norm_change``."""
    w, hg = check_float_array(w, "w"), check_float_array(hg, "hg")
    if w.shape != hg.shape:
        raise ValueError(f"w has shape {w.shape} but hg has shape {hg.shape}")
    return -w * hg
