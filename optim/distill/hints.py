r"""Intermediate-layer transfer: FitNets hints and attention transfer.

Both compare a student layer's output with a teacher layer's on the same batch:

- a **hint** (Romero et al. 2015) asks the student's features, mapped by a learnable
  regressor :math:`r` when the shapes differ, to reproduce the teacher's;
- **attention transfer** (Zagoruyko & Komodakis 2017) matches only where each network looks:
  the normalised spatial map of channel-pooled activation energy, so the channel counts may
  differ freely.

Tests: ``tests/optim/distill/test_distill_hints.py``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from minnet import Tensor
from minnet import functional as F
from minnet import nn
from minnet.tensor import as_tensor

from ._checks import same_shape

_HINT_REDUCTIONS = ("batchmean", "mean")


def _constant(features: Any) -> Tensor:
    """The teacher's side as a tensor cut from any graph."""
    return Tensor(features.data) if isinstance(features, Tensor) else as_tensor(features)


def hint_loss(student_features: Any, teacher_features: Any, reduction: str = "batchmean") -> Tensor:
    r"""FitNets hint loss between the teacher's hint features :math:`u` and the student's
    guided features after the regressor, :math:`r(v)`, of the same shape (N, ...); the
    letters are the paper's: :math:`u_h` the hint layer's output, :math:`v_g` the guided
    layer's. ``student_features`` is :math:`r(v)` (the regressor already applied) and
    ``teacher_features`` is :math:`u`.

    .. math::
        \text{batchmean:}\ \mathcal{L}_{HT} = \frac{1}{N} \sum_{i=1}^{N} \tfrac12 \|u_i - r(v_i)\|_2^2,
        \qquad
        \text{mean:}\  \tfrac12 \cdot \frac{1}{N D} \sum_{i,d} (u_{id} - r(v_i)_d)^2

    ``batchmean`` is Romero et al. 2015, eq. 3 (one example's :math:`\tfrac12\|\cdot\|^2`)
    averaged over the batch; ``mean`` also divides by the number of features :math:`D`, so a
    loss weight means the same for layers of any size (the form ``Distiller`` uses). The
    teacher side is a constant. Tested by
    ``tests/optim/distill/test_distill_hints.py::test_hint_loss_definition``.
    """
    u = as_tensor(student_features)
    v = _constant(teacher_features)
    same_shape("student_features", u, "teacher_features", v)
    if u.ndim < 2:
        raise ValueError(f"features must have a batch axis and at least one more, "
                         f"got shape {u.shape}")
    if reduction not in _HINT_REDUCTIONS:
        raise ValueError(f"reduction must be one of {_HINT_REDUCTIONS}, got {reduction!r}")
    diff = F.sub(u, v.data.astype(u.dtype, copy=False))
    total = F.sum(F.mul(diff, diff))
    count = u.shape[0] if reduction == "batchmean" else u.size
    return F.mul(total, 0.5 / count)


def hint_regressor(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...],
                   dtype=np.float32) -> nn.Module:
    r"""The learnable map :math:`r` from a student layer's output to the teacher's shape.

    Shapes exclude the batch axis. Equal shapes need no regressor (``nn.Identity``). Vectors
    (D_s,) -> (D_t,) get ``nn.Linear(D_s, D_t)``. Feature maps (C_s, H_s, W_s) -> (C_t, H_t, W_t)
    get Romero et al.'s convolutional regressor (section 2.2): ``nn.Conv2d(C_s, C_t,
    (H_s - H_t + 1, W_s - W_t + 1))`` without padding, whose output is exactly H_t × W_t; it
    needs :math:`H_s \ge H_t` and :math:`W_s \ge W_t`. The regressor is linear (the paper puts
    the guided layer's nonlinearity on both sides; here the hooked outputs already include it
    when the hooked module is an activation). Tested by
    ``tests/optim/distill/test_distill_hints.py::test_regressor_maps_to_teacher_shape``.
    """
    student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
    if student_shape == teacher_shape:
        return nn.Identity()
    if len(student_shape) != len(teacher_shape):
        raise ValueError(f"cannot regress student features of shape {student_shape} onto teacher "
                         f"features of shape {teacher_shape}: different numbers of axes")
    if len(student_shape) == 1:
        return nn.Linear(student_shape[0], teacher_shape[0], dtype=dtype)
    if len(student_shape) == 3:
        (c_s, h_s, w_s), (c_t, h_t, w_t) = student_shape, teacher_shape
        if h_s < h_t or w_s < w_t:
            raise ValueError(f"student feature map {student_shape} is spatially smaller than "
                             f"the teacher's {teacher_shape}; a convolutional regressor cannot "
                             "enlarge it")
        return nn.Conv2d(c_s, c_t, (h_s - h_t + 1, w_s - w_t + 1), dtype=dtype)
    raise ValueError(f"hint features must be vectors (D,) or feature maps (C, H, W), got "
                     f"shapes {student_shape} and {teacher_shape}")


def attention_map(features: Any, p: float = 2.0, eps: float = 1e-12) -> Tensor:
    r"""Spatial attention map of activations :math:`A` (N, C, H, W), flattened to (N, H W) and
    L2-normalised per example.

    .. math::
        Q_i = \operatorname{vec}\Big(\frac{1}{C}\sum_{c=1}^{C} |A_{ic}|^p\Big), \qquad
        \hat Q_i = \frac{Q_i}{\max(\|Q_i\|_2, \epsilon)}

    Zagoruyko & Komodakis 2017, section 3.1 (:math:`F^p_{sum}`; averaging over channels
    instead of summing only rescales :math:`Q`, which the normalisation removes; the authors'
    code averages). Tested by
    ``tests/optim/distill/test_distill_hints.py::test_attention_map_laws``.
    """
    a = as_tensor(features)
    if a.ndim != 4:
        raise ValueError(f"features must be 4-D (N, C, H, W), got shape {a.shape}")
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p!r}")
    energy = F.mean(F.pow(F.abs(a), float(p)), axis=1).reshape(a.shape[0], -1)
    norm = F.sqrt(F.sum(F.mul(energy, energy), axis=1, keepdims=True))
    return F.div(energy, F.maximum(norm, eps))


def attention_transfer_loss(student_features: Any, teacher_features: Any, p: float = 2.0) -> Tensor:
    r"""Attention-transfer loss between student and teacher activations (N, C_s, H, W) and
    (N, C_t, H, W): the mean squared difference of their normalised attention maps.

    .. math::
        \mathcal{L}_{AT} = \frac{1}{N H W} \sum_{i=1}^{N} \big\| \hat Q^S_i - \hat Q^T_i \big\|_2^2

    Zagoruyko & Komodakis 2017, eq. 2 writes :math:`\frac{\beta}{2} \| \hat Q^S - \hat Q^T \|_p`
    (p = 2) summed over layer pairs; their released code squares the difference and averages
    it over the batch and the map, as here, with :math:`\beta = 10^3`. Channel counts may
    differ; spatial sizes must match. The teacher side is a constant. Tested by
    ``tests/optim/distill/test_distill_hints.py::test_attention_transfer_loss_laws``.
    """
    s = as_tensor(student_features)
    t = _constant(teacher_features)
    if s.ndim != 4 or t.ndim != 4:
        raise ValueError(f"attention transfer needs 4-D (N, C, H, W) features, got shapes "
                         f"{s.shape} and {t.shape}")
    if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
        raise ValueError(f"student features {s.shape} and teacher features {t.shape} must share "
                         "the batch size and the spatial size (H, W)")
    q_t = attention_map(t.data, p).data.astype(s.dtype, copy=False)
    diff = F.sub(attention_map(s, p), q_t)
    return F.mean(F.mul(diff, diff))
