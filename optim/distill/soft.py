r"""Soft targets and the distillation losses of Hinton, Vinyals & Dean 2015.

A network's logits :math:`z` give "soft targets" at temperature :math:`T`
(Hinton et al. 2015, eq. 1):

.. math:: p_c(z; T) = \frac{e^{z_c / T}}{\sum_{j=1}^{C} e^{z_j / T}}

The student (logits :math:`s`) learns from the teacher (logits :math:`t`) by matching
:math:`q = p(s; T)` to :math:`p = p(t; T)`; the gradient of this soft objective scales as
:math:`1/T^2`, so it is multiplied by :math:`T^2` (section 2) and mixed with the ordinary
cross entropy on the true labels. The teacher is a constant: no gradient reaches it.

Tests: ``tests/optim/distill/test_distill_kd.py`` (laws, brute-force definitions, PyTorch).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from minnet import Tensor
from minnet import functional as F
from minnet.tensor import Function

from ._checks import as_logits, check_temperature, check_weight, logit_pair

_REDUCTIONS = ("batchmean", "sum", "none")


def soft_targets(logits: Any, T: float, axis: int = -1) -> np.ndarray:
    r"""Softmax of ``logits / T`` along ``axis`` (Hinton et al. 2015, eq. 1).

    .. math:: p_c = \frac{\exp(z_c / T)}{\sum_j \exp(z_j / T)}

    Computed as :math:`\exp(z/T - \max z/T)` normalised, so large logits do not overflow.
    :math:`T = 1` is the ordinary softmax; :math:`T \to \infty` tends to the uniform
    distribution and :math:`T \to 0` to the one-hot arg-max.
    Tested by ``tests/optim/distill/test_distill_kd.py::test_soft_targets_are_distributions_and_order_preserving``.

    >>> soft_targets(np.array([0.0, np.log(3.0)]), T=1.0)
    array([0.25, 0.75])
    """
    T = check_temperature(T)
    z = np.asarray(logits)
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float64)
    scaled = z / T
    e = np.exp(scaled - scaled.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _reduce(per_row: Tensor, reduction: str) -> Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if reduction == "batchmean":
        return F.mean(per_row)
    return F.sum(per_row) if reduction == "sum" else per_row


# Temperatures outside [T_MIN, T_MAX] are refused: T² (or 1/T², at which the loss scales for
# small T) would leave float32's normal range (about 1.2e-38 to 3.4e38), so the loss, returned
# in the logits' dtype, could not be represented; Hinton et al. use T of 1 to 20.
T_MIN, T_MAX = 1e-18, 1e18


# 1/(k+2)! for k = 0..16: e^x - 1 - x = x² Σ_k x^k/(k+2)!, truncated 1/19! < 1e-16 for |x| <= 1
_EXP_TAIL = 1.0 / np.array([math.factorial(k + 2) for k in range(17)])


def _exp_tail(x: np.ndarray) -> np.ndarray:
    """:math:`e^x - 1 - x` for :math:`|x| \\le 1`, without the cancellation of
    ``expm1(x) - x`` (Taylor series, Horner's rule)."""
    acc = np.zeros_like(x)
    for c in _EXP_TAIL[::-1]:
        acc = acc * x + c
    return acc * x * x


class _SoftKL(Function):
    r"""Per row :math:`T^2 \mathrm{KL}(p \| q)`, :math:`p = \mathrm{softmax}(t/T)`,
    :math:`q = \mathrm{softmax}(s/T)`, computed in float64 from the centred scaled gaps

    .. math:: e_c = \big((t_c - s_c) - \textstyle\sum_j q_j (t_j - s_j)\big) / T, \qquad
              \mathrm{KL} = \sum_c p_c e_c - \log \sum_c q_c e^{e_c}

    (:math:`\log p_c - \log q_c = e_c - \log \sum_j q_j e^{e_j}` exactly, so the gap is never
    the difference of two separately rounded log-probabilities). Rows with
    :math:`\max |e| \le 1` use :math:`\sum_c q_c e_c = 0`, :math:`g(e) = e^e - 1 - e` (a
    Taylor series), :math:`A = \sum q\, g(e)`, :math:`B = \sum q\, e\, (e + g(e))`:
    :math:`\mathrm{KL} = B/(1+A) - \mathrm{log1p}(A)` and
    :math:`q - p = -q(e + g(e) - A)/(1 + A)`, free of cancellation however large :math:`T` is.
    Backward: :math:`\partial/\partial s = T(q - p)` per row, times the upstream gradient;
    the teacher gets none."""

    @staticmethod
    def forward(ctx, s, *, teacher, T):
        s64 = s.astype(np.float64)
        gap = teacher.astype(np.float64) - s64
        with np.errstate(over="ignore", invalid="ignore"):
            u = s64 / T
            u -= u.max(axis=1, keepdims=True)
            spread = np.abs(gap).max() / T
        if not (np.all(np.isfinite(u)) and np.isfinite(spread)):
            raise ValueError(f"T={T!r} is too small for these logits: s/T or (t - s)/T is not "
                             f"finite in float64")
        log_q = u - np.log(np.exp(u).sum(axis=1, keepdims=True))
        q = np.exp(log_q)
        e = (gap - np.sum(q * gap, axis=1, keepdims=True)) / T
        small = np.max(np.abs(e), axis=1) <= 1.0
        tail = _exp_tail(np.where(small[:, None], e, 0.0))
        a = np.sum(q * tail, axis=1, keepdims=True)
        b = np.sum(q * e * (e + tail), axis=1, keepdims=True)
        kl_small = (b / (1.0 + a) - np.log1p(a))[:, 0]
        q_minus_p_small = -q * (e + tail - a) / (1.0 + a)
        # other rows: log p - log q = e - log sum q e^e, by a stable log-sum-exp
        w = log_q + e
        top = w.max(axis=1, keepdims=True)
        lse = top + np.log(np.exp(w - top).sum(axis=1, keepdims=True))
        p = np.exp(w - lse)
        kl_large = np.sum(p * (e - lse), axis=1)
        kl = np.where(small, kl_small, kl_large)
        ctx.q_minus_p = np.where(small[:, None], q_minus_p_small, q - p)
        ctx.T, ctx.dtype = T, s.dtype
        out = (T * T * kl).astype(s.dtype)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"the loss at T={T!r} overflows {s.dtype} for these logits")
        return out

    @staticmethod
    def backward(ctx, grad):
        return ((ctx.T * grad[:, None]) * ctx.q_minus_p).astype(ctx.dtype)


def kd_loss(student_logits: Any, teacher_logits: Any, T: float, *,
            reduction: str = "batchmean") -> Tensor:
    r"""Soft-target distillation loss: :math:`T^2` times the batch-mean KL divergence from the
    teacher's soft targets to the student's.

    .. math::
        \mathcal{L}_{KD} = \frac{T^2}{N} \sum_{i=1}^{N} \mathrm{KL}\big(p(t_i;T) \| p(s_i;T)\big)
        = \frac{T^2}{N} \sum_{i,c} p_{ic} \big(\log p_{ic} - \log q_{ic}\big)

    with :math:`p = \mathrm{softmax}(t/T)`, :math:`q = \mathrm{softmax}(s/T)` row-wise. Its
    gradient is :math:`\partial \mathcal{L}/\partial s_i = T (q_i - p_i) / N`. Laws: it is
    :math:`\ge 0`, zero iff each student row equals the teacher's up to an additive constant,
    and unchanged by adding a per-row constant to either. At :math:`T = 1` it is
    ``F.kl_div(log_softmax(s), softmax(t), reduction="batchmean")`` (PyTorch's), which tends to
    the cross entropy with the labels as the teacher's soft targets become one-hot. For large
    :math:`T` and zero-mean rows it tends to :math:`\frac{1}{2NC}\sum_{i,c}(s_{ic} - t_{ic})^2`,
    half the mean squared logit difference (Hinton et al. 2015, section 2.1: the gradient
    approaches :math:`(s_c - t_c)/(C T^2)` per case before the :math:`T^2` factor).

    The loss and its gradient are computed in float64 from the logit gaps :math:`t - s`
    (``_SoftKL``), so they keep float64 accuracy at any temperature (a float32 evaluation of
    the textbook form is 21 % off at :math:`T = 10^4`), and are returned in the student's dtype.

    Parameters
    ----------
    student_logits : Tensor or array (N, C); the gradient flows into it.
    teacher_logits : Tensor or array (N, C); used as a constant.
    T : temperature, a finite number in [``T_MIN``, ``T_MAX``] = [1e-18, 1e18]; ValueError
        naming T otherwise (and when (t - s)/T overflows float64).
    reduction : ``"batchmean"`` (the formula), ``"sum"`` (times N) or ``"none"`` (per row).

    Source: Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
    section 2 (soft targets, the :math:`T^2` factor) and 2.1 (logit-matching limit).
    Tested by ``tests/optim/distill/test_distill_kd.py`` (``test_kd_loss_*``, accuracy at
    large T: ``test_kd_loss_float32_at_large_T_matches_extended_precision``,
    ``::test_kd_loss_at_huge_T_is_the_taylor_limit``).

    >>> float(kd_loss(np.array([[1.0, 2.0]]), np.array([[11.0, 12.0]]), T=4.0).data)
    0.0
    """
    student, _ = logit_pair(student_logits, teacher_logits)
    teacher = as_logits("teacher_logits", teacher_logits).data  # at its own precision
    T = check_temperature(T)
    if not T_MIN <= T <= T_MAX:
        raise ValueError(f"T must lie in [{T_MIN:g}, {T_MAX:g}] (T² and 1/T² within float32's "
                         f"range), got T={T!r}")
    per_row = _SoftKL.apply(student, teacher=teacher, T=T)
    return _reduce(per_row, reduction)


def soft_cross_entropy(logits: Any, target_probs: Any, T: float = 1.0, *,
                       reduction: str = "batchmean") -> Tensor:
    r"""Cross entropy of the tempered softmax of ``logits`` against given target distributions.

    .. math:: H(p, q) = -\frac{1}{N} \sum_{i,c} p_{ic} \log \mathrm{softmax}(z_i / T)_c

    ``target_probs`` (N, C) holds one probability distribution per row, e.g. a teacher's soft
    targets (``soft_targets(t, T)``), an average of several teachers' (Hinton et al. 2015,
    section 1: an ensemble's mean prediction) or smoothed labels. It differs from the KL
    divergence by the targets' entropy, a constant:
    :math:`T^2 H(p, q) = \mathcal{L}_{KD} + T^2 H(p)` when :math:`p = \mathrm{softmax}(t/T)`.
    Tested by ``tests/optim/distill/test_distill_kd.py::test_soft_cross_entropy_is_kl_plus_entropy`` and
    ``::test_soft_cross_entropy_matches_torch``.
    """
    z = as_logits("logits", logits)
    T = check_temperature(T)
    p = np.asarray(target_probs.data if isinstance(target_probs, Tensor) else target_probs)
    if p.shape != z.shape:
        raise ValueError(f"target_probs of shape {p.shape} and logits of shape {z.shape} differ")
    if not np.issubdtype(p.dtype, np.floating) or not np.all(np.isfinite(p)) or np.any(p < 0) \
            or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("target_probs must hold one probability distribution per row "
                         "(non-negative, each row summing to 1)")
    log_q = F.log_softmax(F.div(z, T), axis=1)
    per_row = F.neg(F.sum(F.mul(p.astype(z.dtype, copy=False), log_q), axis=1))
    return _reduce(per_row, reduction)


def distillation_loss(student_logits: Any, teacher_logits: Any, target: Any, T: float,
                      alpha: float) -> Tensor:
    r"""Hinton's combined objective: soft targets weighted by :math:`\alpha`, true labels by
    :math:`1 - \alpha`.

    .. math::
        \mathcal{L} = \alpha\, \mathcal{L}_{KD}(s, t; T)
        + (1 - \alpha)\, \frac{1}{N}\sum_i -\log \mathrm{softmax}(s_i)_{y_i}

    The hard-label cross entropy uses :math:`T = 1`; :math:`\mathcal{L}_{KD}` carries the
    :math:`T^2` factor that keeps the two terms' gradients comparable when :math:`T` changes
    (Hinton et al. 2015, section 2). :math:`\alpha = 1` is pure distillation, :math:`\alpha = 0`
    ordinary training. Tested by ``tests/optim/distill/test_distill_kd.py::test_distillation_loss_interpolates``.
    """
    alpha = check_weight("alpha", alpha, high=1.0)
    student, _ = logit_pair(student_logits, teacher_logits)
    soft = kd_loss(student, teacher_logits, T)
    hard = F.cross_entropy(student, target)
    return F.add(F.mul(soft, alpha), F.mul(hard, 1.0 - alpha))
