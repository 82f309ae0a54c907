r"""Optimal Brain Surgeon (Hassibi & Stork 1993): second-order pruning with a weight update.

Near a minimum :math:`w^*` the loss is the quadratic
:math:`\delta E = \tfrac12 \delta w^\top H \delta w`. Deleting weight :math:`q` is the
constraint :math:`e_q^\top \delta w + w_q = 0`; minimising :math:`\delta E` under it gives
(Hassibi & Stork 1993, "Second order derivatives for network pruning: Optimal Brain
Surgeon", Sec. 2)

.. math:: \delta w = -\frac{w_q}{[H^{-1}]_{qq}}\, H^{-1} e_q, \qquad
          L_q = \frac{w_q^2}{2\,[H^{-1}]_{qq}}

and the weight of least saliency :math:`L_q` is deleted. Unlike Optimal Brain Damage
(``scores.obd_scores``, :math:`\tfrac12 h_{qq} w_q^2`, the increase when the other weights
stay put), the other weights move to compensate, so :math:`L_q \le \tfrac12 h_{qq} w_q^2`
always (:math:`1/[H^{-1}]_{qq} \le h_{qq}` for a positive definite :math:`H`).

The inverse Hessian comes from the paper's recursion (Sec. 3, the outer-product
approximation of the Hessian and its recursive inverse): with :math:`X^{[k]} = \partial F(w, \mathrm{in}^{[k]}) /
\partial w` the derivative of the network output for pattern :math:`k` of :math:`P`,

.. math:: H_{m+1}^{-1} = H_m^{-1} - \frac{H_m^{-1} X^{[m+1]} X^{[m+1]\top} H_m^{-1}}
                                  {P + X^{[m+1]\top} H_m^{-1} X^{[m+1]}}, \qquad
          H_0^{-1} = \alpha^{-1} I

so that :math:`H_P^{-1} = (\alpha I + \frac1P \sum_k X^{[k]} X^{[k]\top})^{-1}` (the
Sherman-Morrison formula applied P times). For a network with several outputs every output
contributes its own vector. For a Linear layer :math:`y = W x` under the mean squared error
:math:`E = \frac1{2P} \sum_k \|t_k - W x_k\|^2` the outer-product form is the exact Hessian,
:math:`H = I_{\text{out}} \otimes \frac1P \sum_k x_k x_k^\top` for :math:`W` flattened
row-major (``linear_output_jacobians``).

Deleting several weights one after another (``obs_prune``) keeps the deleted ones at zero by
removing weight :math:`q` from the quadratic after each step: the inverse Hessian of the
remaining weights is :math:`H^{-1} - H^{-1} e_q e_q^\top H^{-1} / [H^{-1}]_{qq}` (the
Gaussian-elimination update of the inverse Hessian in Frantar & Alistarh 2022, "Optimal Brain
Compression"), whereas
Hassibi & Stork recompute the Hessian and retrain between deletions.

Tests: ``tests/optim/prune/test_prune_obs.py``.
"""
from __future__ import annotations

import numpy as np

from ._checks import check_float_array, n_to_prune


def _positive(value: float, name: str) -> float:
    if not (isinstance(value, (int, float, np.floating)) and value > 0 and np.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def obs_inverse_hessian(output_jacobians: np.ndarray, alpha: float = 1e-6) -> np.ndarray:
    r""":math:`(\alpha I + \frac1P \sum_{k=1}^{P} \sum_o X^{[k]}_o X^{[k]\top}_o)^{-1}` by the
    recursion of Hassibi & Stork 1993, Sec. 3, one rank-one update per output vector.

    ``output_jacobians``: shape (P, d) (one output per pattern) or (P, K, d) (K outputs), the
    derivatives :math:`\partial F_o(w, \mathrm{in}^{[k]}) / \partial w` of the outputs with
    respect to the d weights. ``alpha`` is the paper's small constant
    (:math:`10^{-8} \le \alpha \le 10^{-4}` there), which makes every :math:`H_m` invertible.
    Returns a (d, d) float64 array. Test:
    ``tests/optim/prune/test_prune_obs.py::test_recursive_inverse_equals_the_direct_inverse``.
    """
    x = check_float_array(output_jacobians, "output_jacobians").astype(np.float64)
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[2] == 0:
        raise ValueError(f"output_jacobians must have shape (P, d) or (P, K, d) with P, d >= 1, "
                         f"got {np.shape(output_jacobians)}")
    alpha = _positive(alpha, "alpha")
    p, _, d = x.shape
    h_inv = np.eye(d) / alpha
    for vector in x.reshape(-1, d):
        hx = h_inv @ vector
        h_inv -= np.outer(hx, hx) / (p + vector @ hx)
    return h_inv


def linear_output_jacobians(inputs: np.ndarray, out_features: int) -> np.ndarray:
    r"""Output derivatives of a Linear layer :math:`y = W x` (W of shape (out, in), flattened
    row-major): :math:`\partial y_o / \partial W_{o' i} = \delta_{o o'} x_i`, i.e. the vector
    :math:`e_o \otimes x_k` for output :math:`o` of pattern :math:`k`. Shape (P, out, out·in);
    with them ``obs_inverse_hessian`` inverts :math:`\alpha I + I_{\text{out}} \otimes \frac1P
    \sum_k x_k x_k^\top`, the Hessian of the layer's mean squared error (Hassibi & Stork 1993,
    Sec. 3). Test: ``tests/optim/prune/test_prune_obs.py::test_linear_jacobians_give_the_mse_hessian``."""
    x = check_float_array(inputs, "inputs").astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"inputs must have shape (P, in_features), got {x.shape}")
    if isinstance(out_features, bool) or not isinstance(out_features, (int, np.integer)) \
            or out_features < 1:
        raise ValueError(f"out_features must be a positive integer, got {out_features!r}")
    eye = np.eye(out_features)
    return np.einsum("oq,pi->poqi", eye, x).reshape(len(x), out_features, -1)


def _flat_pair(w: np.ndarray, h_inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = check_float_array(w, "w").astype(np.float64).ravel()
    h_inv = check_float_array(h_inv, "h_inv").astype(np.float64)
    if h_inv.shape != (w.size, w.size):
        raise ValueError(f"h_inv must have shape {(w.size, w.size)} for {w.size} weights, "
                         f"got {h_inv.shape}")
    if not np.all(np.diag(h_inv) > 0):
        raise ValueError("h_inv must have a positive diagonal (the inverse of a positive "
                         "definite Hessian)")
    return w, h_inv


def obs_saliency(w: np.ndarray, h_inv: np.ndarray) -> np.ndarray:
    r"""OBS saliency :math:`L_q = w_q^2 / (2 [H^{-1}]_{qq})` of every weight (shape of ``w``):
    the least increase of the quadratic loss when weight q is deleted and the others adjust.
    ``h_inv`` is (d, d) for the d = ``w.size`` weights flattened row-major. Source: Hassibi &
    Stork 1993, Sec. 2. Tests: ``tests/optim/prune/test_prune_obs.py::test_saliency_is_the_exact_quadratic_increase``,
    ``::test_obs_never_loses_more_than_obd``."""
    shape = np.shape(w)
    w, h_inv = _flat_pair(w, h_inv)
    return (w * w / (2.0 * np.diag(h_inv))).reshape(shape)


def obs_update(w: np.ndarray, h_inv: np.ndarray, q: int) -> np.ndarray:
    r"""The weights after deleting weight ``q`` (flat index) with the OBS correction
    :math:`w + \delta w`, :math:`\delta w = -(w_q / [H^{-1}]_{qq})\, H^{-1} e_q`; entry q of
    the result is exactly 0. Source: Hassibi & Stork 1993, Sec. 2. Test:
    ``tests/optim/prune/test_prune_obs.py::test_saliency_is_the_exact_quadratic_increase``."""
    shape = np.shape(w)
    w, h_inv = _flat_pair(w, h_inv)
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 0 <= q < w.size:
        raise ValueError(f"q must be a flat index in [0, {w.size}), got {q!r}")
    new = w - (w[q] / h_inv[q, q]) * h_inv[:, q]
    new[q] = 0.0
    return new.reshape(shape)


def obs_prune(w: np.ndarray, h_inv: np.ndarray, amount: int | float
              ) -> tuple[np.ndarray, np.ndarray, float]:
    r"""Delete ``amount`` weights (an int count or a float fraction of ``w.size``) one at a
    time, each time the remaining weight of least saliency :math:`L_q`, with the OBS update,
    then eliminate it from the quadratic:
    :math:`H^{-1} \leftarrow H^{-1} - H^{-1} e_q e_q^\top H^{-1} / [H^{-1}]_{qq}`.

    Returns ``(new_w, mask, predicted_increase)`` with ``mask`` True where kept and
    ``predicted_increase`` the sum of the saliencies deleted, which equals the increase of the
    quadratic loss :math:`\frac12 \delta w^\top (H^{-1})^{-1} \delta w` exactly. Test:
    ``tests/optim/prune/test_prune_obs.py::test_sequential_obs_reaches_the_constrained_minimum``.
    """
    shape = np.shape(w)
    w, h_inv = _flat_pair(w, h_inv)
    k = n_to_prune(amount, w.size)
    h_inv = h_inv.copy()
    kept = np.ones(w.size, dtype=bool)
    total = 0.0
    for _ in range(k):
        diag = np.diag(h_inv)
        saliency = np.where(kept, w * w / (2.0 * np.where(kept, diag, 1.0)), np.inf)
        q = int(np.argmin(saliency))
        total += float(saliency[q])
        column = h_inv[:, q].copy()
        w = w - (w[q] / column[q]) * column
        h_inv -= np.outer(column, column) / column[q]
        w[q] = 0.0
        kept[q] = False
        h_inv[q, :] = 0.0
        h_inv[:, q] = 0.0
    return w.reshape(shape), kept.reshape(shape), total


def obs_prune_linear(weight: np.ndarray, inputs: np.ndarray, amount: int | float,
                     alpha: float = 1e-6) -> tuple[np.ndarray, np.ndarray, float]:
    r"""OBS on a Linear layer's ``weight`` (out, in) for its mean squared error on ``inputs``
    (P, in): builds :math:`H^{-1}` by the recursion (``obs_inverse_hessian`` of
    ``linear_output_jacobians``) and runs ``obs_prune``. Returns ``(new_weight, mask,
    predicted_increase)``; the bias is held fixed. The Hessian has :math:`(\text{out}\cdot
    \text{in})^2` entries: meant for small layers, as in the paper. Test:
    ``tests/optim/prune/test_prune_obs.py::test_obs_on_a_linear_layer_predicts_its_mse_increase``."""
    weight = check_float_array(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"weight must have shape (out_features, in_features), got {weight.shape}")
    x = check_float_array(inputs, "inputs")
    if x.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"inputs must have shape (P, {weight.shape[1]}), got {x.shape}")
    h_inv = obs_inverse_hessian(linear_output_jacobians(x, weight.shape[0]), alpha)
    new, mask, increase = obs_prune(weight, h_inv, amount)
    return new.astype(weight.dtype), mask, increase
