"""Strategies and small models shared by the distillation tests (imported as ``distill_helpers``;
pytest's default import mode puts this directory on ``sys.path``)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minnet
from minnet import nn


def logits(shape, bound: float = 20.0):
    """float64 logits of ``shape`` with elements in [-bound, bound]."""
    return hnp.arrays(np.float64, shape, elements=st.floats(-bound, bound, allow_nan=False))


@st.composite
def logit_pairs(draw, bound: float = 20.0, max_rows: int = 6, max_classes: int = 8):
    """(student, teacher) float64 logits of one shape (N, C), N >= 1, C >= 2."""
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(2, max_classes)))
    return draw(logits(shape, bound)), draw(logits(shape, bound))


temperatures = st.floats(0.25, 50.0)


def brute_softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax by the definition, in extended precision (a second implementation)."""
    e = np.exp(np.asarray(z, dtype=np.longdouble))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float64)


def conv_net(width: int, seed: int) -> nn.Sequential:
    """A small CNN on 1x8x8 inputs: conv(width, 3, pad 1) -> ReLU -> pool 2 -> Linear 10 -> 3."""
    minnet.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(width * 16, 10), nn.ReLU(), nn.Linear(10, 3))


def toy_data(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 1x8x8 images and 3-class labels that depend on them (learnable)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].sum(axis=(1, 2)) > 0).astype(np.int64) + (x[:, 0, 4:, :4].sum(axis=(1, 2)) > 0)
    return x, y.astype(np.int64)
