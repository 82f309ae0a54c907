"""Argument validation shared by the distillation functions (errors name the argument)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from minnet import Tensor
from minnet.optimizers.optimizer import check_real


def check_temperature(T: Any) -> float:
    """``T`` as a float; TypeError unless real, ValueError unless finite and > 0."""
    check_real("T", T, low=0.0, low_open=True)
    if math.isinf(T):
        raise ValueError(f"T must be finite, got {T!r}")
    return float(T)


def check_weight(name: str, value: Any, high: float | None = None) -> float:
    """A loss weight: a finite real in [0, high] (no upper bound when ``high`` is None)."""
    check_real(name, value, low=0.0, high=high)
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def as_logits(name: str, logits: Any) -> Tensor:
    """``logits`` as a Tensor of shape (N, C) with a floating dtype and finite values."""
    tensor = logits if isinstance(logits, Tensor) else Tensor(np.asarray(logits))
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, C), got shape {tensor.shape}")
    if not np.issubdtype(tensor.dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype, got {tensor.dtype}")
    if not np.all(np.isfinite(tensor.data)):
        raise ValueError(f"{name} must be finite, got NaN or Inf")
    return tensor


def logit_pair(student_logits: Any, teacher_logits: Any) -> tuple[Tensor, np.ndarray]:
    """The student logits as a Tensor and the teacher's as a constant array of the student's
    dtype, after checking that both are finite (N, C) arrays of one shape."""
    student = as_logits("student_logits", student_logits)
    teacher = as_logits("teacher_logits", teacher_logits).data
    if teacher.shape != student.shape:
        raise ValueError(f"student_logits of shape {student.shape} and teacher_logits of shape "
                         f"{teacher.shape} differ")
    return student, teacher.astype(student.dtype, copy=False)


def same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} of shape {a.shape} and {name_b} of shape {b.shape} differ")
