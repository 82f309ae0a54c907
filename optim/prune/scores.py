r"""Saliency scores: pure functions on arrays, one score per weight, neuron or channel.

Higher score = more important (kept longer). Every mask in ``masks`` prunes the lowest scores.
Per-weight scores have the weight's shape; per-channel scores have shape ``(C,)``.
Tests: ``tests/optim/prune/test_prune_scores.py`` and ``tests/optim/prune/test_prune_hessian.py``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ._checks import check_axis, check_float_array, check_positive_int, make_rng


def _same_shape(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{a_name} has shape {a.shape} but {b_name} has shape {b.shape}")


def _per_sample(w: np.ndarray, per_sample_grads: object) -> np.ndarray:
    g = check_float_array(per_sample_grads, "per_sample_grads")
    if g.shape[1:] != w.shape or g.ndim != w.ndim + 1:
        raise ValueError(f"per_sample_grads must have shape (N,) + {w.shape}, got {g.shape}")
    if len(g) == 0:
        raise ValueError("per_sample_grads must hold at least one sample")
    return g


def magnitude_scores(w: np.ndarray) -> np.ndarray:
    r""":math:`s_i = |w_i|` (Han et al. 2015, "Learning both Weights and Connections", Sec. 3).
    Test: ``tests/optim/prune/test_prune_masks.py::test_magnitude_mask_is_a_threshold``."""
    return np.abs(check_float_array(w, "w"))


def random_scores(shape: tuple[int, ...], rng: np.random.Generator | int | None = None,
                  dtype=np.float32) -> np.ndarray:
    r"""Independent :math:`s_i \sim U[0, 1)`: the random-pruning baseline (every subset of a
    given size is equally likely to be pruned). Seeded by ``rng`` (a Generator or an int).
    Test: ``tests/optim/prune/test_prune_scores.py::test_random_scores_are_seeded_and_uniform``."""
    return make_rng(rng).random(shape).astype(dtype)


def taylor_scores(w: np.ndarray, grad: np.ndarray, squared: bool = False) -> np.ndarray:
    r"""First-order Taylor importance of each weight:

    .. math:: s_i = |g_i w_i| \quad\text{or}\quad s_i = (g_i w_i)^2 \ (\texttt{squared})

    with :math:`g = \partial L / \partial w`. Removing weight :math:`i` changes the loss by
    :math:`\Delta L_i = L(w - w_i e_i) - L(w) = -g_i w_i + O(w_i^2)`, so :math:`s_i` is the
    first-order size of that change. Source: Molchanov et al. 2019, "Importance Estimation for
    Neural Network Pruning", Sec. 3, eq. 3 (the squared per-parameter score
    :math:`\mathcal I^{(1)}_m = (g_m w_m)^2`); the absolute value ranks the weights identically
    (it is the square root of the same number) and is what SNIP normalises. Molchanov et al.
    2017 score feature maps, not weights: see ``taylor_feature_map_scores``.
    Test: ``tests/optim/prune/test_prune_scores.py::test_taylor_score_is_the_first_order_loss_change``.
    """
    w, grad = check_float_array(w, "w"), check_float_array(grad, "grad")
    _same_shape(w, "w", grad, "grad")
    s = grad * w
    return s * s if squared else np.abs(s)


def taylor_group_scores(w: np.ndarray, grad: np.ndarray, axis: int = 0) -> np.ndarray:
    r"""Taylor importance of whole slices (filters, neurons) along ``axis``:

    .. math:: I_c = \Big(\sum_{s \in c} g_s w_s\Big)^2

    the squared first-order change of the loss when every weight of slice :math:`c` is zeroed.
    Source: Molchanov et al. 2019, Sec. 3 (the contribution of a group of parameters). Test:
    ``tests/optim/prune/test_prune_scores.py::test_taylor_group_score_is_squared_loss_change``.
    """
    w, grad = check_float_array(w, "w"), check_float_array(grad, "grad")
    _same_shape(w, "w", grad, "grad")
    axis = check_axis(axis, w.ndim)
    contribution = np.moveaxis(grad.astype(np.float64) * w, axis, 0).reshape(w.shape[axis], -1)
    return contribution.sum(axis=1) ** 2


def obd_scores(w: np.ndarray, hessian_diag: np.ndarray) -> np.ndarray:
    r"""Optimal Brain Damage saliency :math:`s_i = \tfrac12 h_{ii} w_i^2`.

    At a minimum (:math:`g = 0`) and ignoring off-diagonal terms, deleting weight :math:`i`
    changes the loss by :math:`\delta L \approx \tfrac12 h_{ii} w_i^2`. Source: LeCun, Denker &
    Solla 1990, "Optimal Brain Damage", Sec. 3 (the saliency). ``hessian_diag`` comes from
    ``fisher_diagonal`` or ``hutchinson_diagonal``.
    Test: ``tests/optim/prune/test_prune_hessian.py::test_obd_is_exact_for_a_diagonal_quadratic``.
    """
    w, h = check_float_array(w, "w"), check_float_array(hessian_diag, "hessian_diag")
    _same_shape(w, "w", h, "hessian_diag")
    return 0.5 * h * w * w


def fisher_diagonal(per_sample_grads: np.ndarray, sample_weights: np.ndarray | None = None
                    ) -> np.ndarray:
    r"""Diagonal of the Fisher information from per-sample gradients :math:`g_n = \nabla_w
    \ell(x_n, y_n)` (shape (N, ...)):

    .. math:: F_{ii} = \frac{\sum_n \pi_n\, g_{n,i}^2}{\sum_n \pi_n}

    (:math:`\pi_n = 1` by default). With :math:`y_n` the data labels this is the *empirical*
    Fisher; with labels drawn from the model, or every label weighted by its model probability
    :math:`\pi = p(y \mid x)`, it is the Fisher. For a network the Fisher is the generalized
    Gauss-Newton matrix (never negative); for a model linear in :math:`w` with canonical-link
    outputs (logistic regression, least squares) it equals the Hessian of the loss. Sources:
    Martens 2020, "New Insights and Perspectives on the Natural Gradient Method" (Fisher,
    generalized Gauss-Newton, empirical Fisher); Theis et al. 2018, "Faster gaze prediction
    with dense networks and Fisher pruning", Sec. 2. Tests:
    ``tests/optim/prune/test_prune_hessian.py::test_fisher_with_model_label_weights_is_the_logistic_hessian``,
    ``::test_empirical_fisher_approaches_hessian_with_samples_from_the_model``.
    """
    g = check_float_array(per_sample_grads, "per_sample_grads")
    if g.ndim < 1 or len(g) == 0:
        raise ValueError(f"per_sample_grads must have shape (N, ...) with N >= 1, got {g.shape}")
    if sample_weights is None:
        return np.mean(g * g, axis=0)
    pi = check_float_array(sample_weights, "sample_weights")
    if pi.shape != (len(g),) or (pi < 0).any() or pi.sum() <= 0:
        raise ValueError(f"sample_weights must be {len(g)} non-negative values with a positive "
                         f"sum, got shape {pi.shape}")
    return np.tensordot(pi, g * g, axes=1) / pi.sum()


def hutchinson_diagonal(hvp: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...],
                        n_samples: int = 100, rng: np.random.Generator | int | None = None,
                        dtype=np.float64) -> np.ndarray:
    r"""Hutchinson's estimator of the Hessian diagonal from Hessian-vector products:

    .. math:: \operatorname{diag}(H) \approx \frac1S \sum_{s=1}^{S} z_s \odot (H z_s),
              \qquad z_s \in \{-1, +1\}^d \text{ Rademacher}

    unbiased, since :math:`E[z_i z_j] = \delta_{ij}`; the error of each entry shrinks like
    :math:`1/\sqrt S` (its variance is :math:`\sum_{j \ne i} H_{ij}^2 / S`, so it is exact for
    a diagonal :math:`H`). Sources: Bekas, Kokiopoulou & Saad 2007, "An estimator for the
    diagonal of a matrix", Sec. 2; Yao et al. 2021, "AdaHessian", Sec. 3.
    ``hvp(v)`` returns :math:`Hv` for ``v`` of ``shape`` (see ``finite_difference_hvp``).
    Test: ``tests/optim/prune/test_prune_hessian.py::test_hutchinson_error_shrinks_with_samples``.
    """
    n_samples = check_positive_int(n_samples, "n_samples")
    rng = make_rng(rng)
    total = np.zeros(shape, dtype=np.float64)
    for _ in range(n_samples):
        z = rng.choice(np.array([-1.0, 1.0]), size=shape)
        hz = np.asarray(hvp(z.astype(dtype)), dtype=np.float64)
        if hz.shape != tuple(shape):
            raise ValueError(f"hvp returned shape {hz.shape}, expected {tuple(shape)}")
        total += z * hz
    return (total / n_samples).astype(dtype)


def finite_difference_hvp(grad_fn: Callable[[np.ndarray], np.ndarray], w: np.ndarray,
                          v: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    r"""Hessian-vector product by central differences of the gradient:

    .. math:: H v \approx \frac{\nabla L(w + \epsilon v) - \nabla L(w - \epsilon v)}{2\epsilon}

    exact (up to rounding) when :math:`L` is quadratic, :math:`O(\epsilon^2)` otherwise.
    Source: Pearlmutter 1994, "Fast Exact Multiplication by the Hessian", Sec. 2 (the
    finite-difference form that his R-operator makes exact). Use float64.
    Test: ``tests/optim/prune/test_prune_hessian.py::test_finite_difference_hvp_is_exact_for_a_quadratic``.
    """
    w, v = np.asarray(w, dtype=np.float64), np.asarray(v, dtype=np.float64)
    _same_shape(w, "w", v, "v")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    return (np.asarray(grad_fn(w + eps * v)) - np.asarray(grad_fn(w - eps * v))) / (2 * eps)


def snip_scores(weights: list[np.ndarray], grads: list[np.ndarray]) -> list[np.ndarray]:
    r"""SNIP connection sensitivity at initialisation, normalised over all layers:

    .. math:: s_j = \frac{|g_j w_j|}{\sum_k |g_k w_k|}, \qquad
              g_j w_j = \frac{\partial L(c \odot w)}{\partial c_j}\Big|_{c = 1}

    Source: Lee, Ajanthan & Torr 2019, "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity", Sec. 4.1 (computed on one mini-batch before training). The normalisation does
    not change the ranking; it makes the scores a distribution over connections.
    Test: ``tests/optim/prune/test_prune_scores.py::test_snip_is_the_normalised_derivative_wrt_the_gate``.
    """
    if isinstance(weights, np.ndarray) or len(weights) != len(grads) or not len(weights):
        raise ValueError("weights and grads must be non-empty lists of equal length")
    raw = [taylor_scores(w, g) for w, g in zip(weights, grads)]
    total = float(sum(r.sum(dtype=np.float64) for r in raw))
    return [r / total if total > 0 else r for r in raw]


def influence_scores(w: np.ndarray, per_sample_grads: np.ndarray) -> np.ndarray:
    r"""Per-sample influence: the mean size of each sample's loss change when the weight is
    removed, to first order:

    .. math:: R_i = \frac1N \sum_{n=1}^N |\Delta \ell_n(i)|, \qquad
              \Delta \ell_n(i) = \ell_n(w - w_i e_i) - \ell_n(w) \approx -g_{n,i} w_i

    Unlike ``taylor_scores`` on the mean gradient (:math:`|\frac1N \sum_n g_{n,i} w_i|`), the
    absolute value is taken per sample, so opposite effects on different samples do not cancel
    (the per-example absolute value that Molchanov et al. 2017, Sec. 2.2, take for feature
    maps, here applied to single weights). Test: ``tests/optim/prune/test_prune_scores.py::test_influence_is_mean_absolute_per_sample_change``.
    """
    w = check_float_array(w, "w")
    g = _per_sample(w, per_sample_grads)
    return np.mean(np.abs(g * w), axis=0)


def _channels_first(acts: np.ndarray, axis: int) -> np.ndarray:
    """(C, everything else) view of activations, channel axis first."""
    a = check_float_array(acts, "activations")
    if a.ndim < 2:
        raise ValueError(f"activations must have shape (N, C, ...), got {a.shape}")
    axis = check_axis(axis, a.ndim)
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)


def activation_variance(activations: np.ndarray, axis: int = 1) -> np.ndarray:
    r"""Variance of each channel's activation over the data (samples and positions):
    :math:`s_c = \operatorname{Var}_{n, p}[a_{n,c,p}]`. A channel whose output barely varies
    acts as a constant (which ``shrink`` folds into the next layer's bias). Source: Polyak &
    Wolf 2015, "Channel-Level Acceleration of Deep Face Representations" (inbound pruning).
    Test: ``tests/optim/prune/test_prune_scores.py::test_activation_variance_is_per_channel_variance``.
    """
    return _channels_first(activations, axis).astype(np.float64).var(axis=1)


def activation_entropy(activations: np.ndarray, bins: int = 100, axis: int = 1) -> np.ndarray:
    r"""Entropy of each channel's (globally average-pooled) activation over the data:

    .. math:: H_c = -\sum_{i=1}^{m} p_i \log p_i

    where :math:`p_i` is the fraction of samples whose pooled activation :math:`\bar a_{n,c}`
    falls in the i-th of ``bins`` equal-width bins over that channel's range (:math:`0 \log 0
    = 0`; a constant channel has entropy 0). Low entropy = little information = prunable.
    Source: Luo & Wu 2017, "An Entropy-based Pruning Method for CNN Compression", Sec. 3.
    Test: ``tests/optim/prune/test_prune_scores.py::test_activation_entropy_bounds_and_uniform_case``.
    """
    a = check_float_array(activations, "activations")
    if a.ndim < 2:
        raise ValueError(f"activations must have shape (N, C, ...), got {a.shape}")
    bins = check_positive_int(bins, "bins")
    axis = check_axis(axis, a.ndim)
    pooled = np.moveaxis(a, axis, 1).reshape(a.shape[0], a.shape[axis], -1).mean(axis=2)
    entropy = np.empty(pooled.shape[1])
    for c, values in enumerate(pooled.T):
        counts, _ = np.histogram(values, bins=bins)
        p = counts[counts > 0] / len(values)
        entropy[c] = 0.0 - np.sum(p * np.log(p))  # 0.0 - 0.0: no negative zero
    return entropy


def _pair_of_activations(activations: np.ndarray, grads: np.ndarray, axis: int
                         ) -> tuple[np.ndarray, np.ndarray, int]:
    a = check_float_array(activations, "activations")
    g = check_float_array(grads, "grads")
    _same_shape(a, "activations", g, "grads")
    if a.ndim < 2 or a.shape[0] == 0:
        raise ValueError(f"activations must have shape (N, C, ...) with N >= 1, got {a.shape}")
    return a, g, check_axis(axis, a.ndim)


def taylor_feature_map_scores(activations: np.ndarray, grads: np.ndarray, axis: int = 1,
                              normalize: bool = True) -> np.ndarray:
    r"""First-order Taylor importance of each feature map (channel) :math:`k` of one layer:

    .. math:: \Theta_n(z^{(k)}) = \Big|rac1M \sum_{m=1}^{M}
              rac{\partial C}{\partial z^{(k)}_{n,m}}\, z^{(k)}_{n,m}\Big|, \qquad
              \Theta(z^{(k)}) = rac1N \sum_{n=1}^{N} \Theta_n(z^{(k)}), \qquad
              \hat\Theta(z^{(k)}) = rac{\Theta(z^{(k)})}{\sqrt{\sum_j \Theta(z^{(j)})^2}}

    with :math:`z_{n,m}` the :math:`M` values of channel :math:`k` for example :math:`n`
    (``activations``, shape (N, C, ...)) and :math:`\partial C/\partial z` the gradient of that
    example's loss (``grads``, same shape). The absolute value is taken per example, then
    averaged over the examples; the layer-wise :math:`\ell_2` normalisation (``normalize``)
    makes scores of different layers comparable and cancels any constant factor in the
    gradients, such as :math:`1/N` when they come from a batch-mean loss. Source: Molchanov et
    al. 2017, "Pruning Convolutional Neural Networks for Resource Efficient Inference",
    Sec. 2.2 (the criterion :math:`\Theta_{TE}` of a feature map, its per-example absolute
    value and the layer-wise :math:`\ell_2` normalisation).
    Test: ``tests/optim/prune/test_prune_feature_maps.py::test_taylor_feature_map_scores_match_brute_force``.
    """
    a, g, axis = _pair_of_activations(activations, grads, axis)
    n, c = a.shape[0], a.shape[axis]
    if axis == 0:
        raise ValueError("axis must not be 0, the examples' axis")
    per_example = np.moveaxis(a.astype(np.float64) * g, axis, 1).reshape(n, c, -1).mean(axis=2)
    theta = np.abs(per_example).mean(axis=0)
    if not normalize:
        return theta
    norm = np.sqrt(np.sum(theta * theta))
    return theta / norm if norm > 0 else theta


def apoz(activations: np.ndarray, axis: int = 1) -> np.ndarray:
    r"""Average Percentage of Zeros of each channel's post-ReLU output over a dataset:

    .. math:: \mathrm{APoZ}_c = rac{\sum_{n=1}^{N} \sum_{m=1}^{M} \mathbb 1[O_{c,n,m} = 0]}
                               {N M}

    (:math:`M` positions of channel :math:`c` per example; a fraction in [0, 1]). Channels with
    the *highest* APoZ are pruned first, so as a keep-score (``masks`` prune the lowest) use
    :math:`1 - \mathrm{APoZ}`, as ``criteria.channel_scores(..., "apoz")`` does. Source: Hu et
    al. 2016, "Network Trimming: A Data-Driven Neuron Pruning Approach towards Efficient Deep
    Architectures", eq. 1. Test: ``tests/optim/prune/test_prune_feature_maps.py::test_apoz_is_the_zero_count``.
    """
    return np.mean(_channels_first(activations, axis) == 0, axis=1)


def fpgm_scores(w: np.ndarray, axis: int = 0) -> np.ndarray:
    r"""Filter Pruning via Geometric Median: each filter's total distance to the others,

    .. math:: s_i = \sum_j \|F_i - F_j\|_2

    The geometric median of the filters is :math:`\arg\min_x \sum_j \|x - F_j\|_2`; restricted
    to the filters themselves it is the filter of least :math:`s_i`, whose information the
    others already carry, so the filters with the smallest :math:`s_i` are pruned. Source: He
    et al. 2019, "Filter Pruning via Geometric Median for Deep CNN Acceleration", Sec. 3.
    Test: ``tests/optim/prune/test_prune_scores.py::test_fpgm_prunes_the_brute_force_geometric_median_filter``.
    """
    w = check_float_array(w, "w")
    if w.ndim < 1:
        raise ValueError("w must have at least one dimension")
    axis = check_axis(axis, w.ndim)
    f = np.moveaxis(w.astype(np.float64), axis, 0).reshape(w.shape[axis], -1)
    sq = (f * f).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * f @ f.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2).sum(axis=1)


def bn_scale_scores(gamma: np.ndarray) -> np.ndarray:
    r"""Network slimming: channel :math:`c` scores :math:`|\gamma_c|`, its BatchNorm scale
    (trained with the L1 penalty of ``slimming_penalty_grad``). Source: Liu et al. 2017,
    "Learning Efficient Convolutional Networks through Network Slimming", Sec. 3.
    Test: ``tests/optim/prune/test_prune_scores.py::test_slimming_scores_and_penalty``."""
    gamma = check_float_array(gamma, "gamma")
    if gamma.ndim != 1:
        raise ValueError(f"gamma must be 1-D (one scale per channel), got shape {gamma.shape}")
    return np.abs(gamma)


def slimming_penalty_grad(gamma: np.ndarray, penalty: float) -> np.ndarray:
    r"""Subgradient of the slimming penalty :math:`\lambda \sum_c |\gamma_c|`:
    :math:`\lambda\,\operatorname{sign}(\gamma)` (0 at 0), added to the BatchNorm scales'
    gradients during training. Source: Liu et al. 2017, eq. 1 and Sec. 3.
    Test: ``tests/optim/prune/test_prune_scores.py::test_slimming_scores_and_penalty``."""
    gamma = check_float_array(gamma, "gamma")
    if not penalty >= 0:
        raise ValueError(f"penalty must be >= 0, got {penalty!r}")
    return (penalty * np.sign(gamma)).astype(gamma.dtype)
