r"""Pruning masks from scores: boolean arrays, True = kept.

Every mask here ranks entries by ``(score, flat index)`` and prunes the lowest ranked: of equal
scores, the entry with the lower flat index (the lower position in the concatenation, for
global masks) is pruned first, so masks are deterministic. ``amount`` is an int count or a
float fraction of the entries considered, ``k = round(amount * n)`` (half to even), as in
``torch.nn.utils.prune``.

The magnitude masks implement Han et al. 2015, "Learning both Weights and Connections for
Efficient Neural Networks", Sec. 3: :math:`w \leftarrow w \cdot \mathbb{1}(|w| \ge \theta)`
with :math:`\theta` chosen so that a given number of weights is removed.
Tests: ``tests/optim/prune/test_prune_masks.py``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ._checks import check_axis, check_mask, check_positive_int, check_scores, n_to_prune


def _prune_lowest(scores: np.ndarray, k: int) -> np.ndarray:
    """Flat mask of ``scores`` (1-D) with the k lowest-ranked entries False."""
    keep = np.ones(scores.size, dtype=bool)
    keep[np.argsort(scores, kind="stable")[:k]] = False
    return keep


def topk_mask(scores: np.ndarray, amount: int | float,
              previous_mask: np.ndarray | None = None) -> np.ndarray:
    r"""Keep the highest scores: prune the ``k`` lowest-scored entries still kept.

    .. math:: m_i = \mathbb{1}\big(i \notin \operatorname{argbottom}_k \{s_j : m^{prev}_j\}\big)
              \cdot m^{prev}_i

    ``k`` counts the entries that ``previous_mask`` keeps (all entries when it is None), so
    pruning 20 % twice removes 36 % as with ``torch.nn.utils.prune``; entries already pruned
    stay pruned. Ties are broken by flat index (lower pruned first).

    Tests: ``tests/optim/prune/test_prune_masks.py::test_topk_mask_prunes_exactly_k_lowest`` and
    ``::test_topk_mask_composes_with_previous_mask``.

    >>> topk_mask(np.array([3.0, 1.0, 2.0, 1.0]), 0.5)
    array([ True, False,  True, False])
    """
    scores = check_scores(scores)
    previous = (np.ones(scores.shape, dtype=bool) if previous_mask is None
                else check_mask(previous_mask, scores.shape, "previous_mask"))
    kept = np.flatnonzero(previous)
    k = n_to_prune(amount, kept.size)
    mask = previous.copy().reshape(-1)
    mask[kept] = _prune_lowest(scores.reshape(-1)[kept], k)
    return mask.reshape(scores.shape)


def global_topk_masks(scores: Sequence[np.ndarray], amount: int | float,
                      previous_masks: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    r"""One ranking over several arrays: prune the ``k`` lowest scores of their concatenation.

    Equivalent to ``topk_mask`` on ``concatenate([s.ravel() for s in scores])``, split back
    into the arrays' shapes (a single threshold :math:`\theta` for all layers).
    Test: ``tests/optim/prune/test_prune_masks.py::test_global_masks_equal_topk_on_concatenation``.
    """
    if isinstance(scores, np.ndarray) or not len(scores):
        raise ValueError("scores must be a non-empty sequence of arrays")
    arrays = [check_scores(s, f"scores[{i}]") for i, s in enumerate(scores)]
    if previous_masks is None:
        previous = None
    else:
        if len(previous_masks) != len(arrays):
            raise ValueError(f"previous_masks has {len(previous_masks)} masks for "
                             f"{len(arrays)} score arrays")
        previous = np.concatenate([check_mask(m, a.shape, f"previous_masks[{i}]").ravel()
                                   for i, (m, a) in enumerate(zip(previous_masks, arrays))])
    flat = topk_mask(np.concatenate([a.astype(np.float64).ravel() for a in arrays]), amount,
                     previous)
    splits = np.cumsum([a.size for a in arrays])[:-1]
    return [m.reshape(a.shape) for m, a in zip(np.split(flat, splits), arrays)]


def magnitude_mask(w: np.ndarray, amount: int | float) -> np.ndarray:
    r"""Prune the ``round(amount * w.size)`` (or ``amount``) entries of smallest :math:`|w|`.

    Han et al. 2015, Sec. 3; ``torch.nn.utils.prune.l1_unstructured``'s mask.
    Tests: ``tests/optim/prune/test_prune_masks.py::test_magnitude_mask_is_a_threshold`` and
    ``tests/optim/prune/test_prune_torch.py::test_magnitude_mask_matches_torch_l1_unstructured``.

    >>> magnitude_mask(np.array([0.5, -2.0, 0.1, 1.0]), 2)
    array([False,  True, False,  True])
    """
    return topk_mask(np.abs(check_scores(w, "w")), amount)


def global_magnitude_masks(weights: Sequence[np.ndarray], amount: int | float) -> list[np.ndarray]:
    r"""One magnitude threshold over all ``weights``: prune the ``k`` smallest :math:`|w|` of
    their concatenation (``torch.nn.utils.prune.global_unstructured`` with L1 scores).

    Test: ``tests/optim/prune/test_prune_masks.py::test_global_magnitude_equals_layerwise_for_identical_layers``.
    """
    if isinstance(weights, np.ndarray):
        raise ValueError("weights must be a sequence of arrays, got a single ndarray")
    return global_topk_masks([np.abs(check_scores(w, f"weights[{i}]"))
                              for i, w in enumerate(weights)], amount)


def threshold_mask(w: np.ndarray, threshold: float) -> np.ndarray:
    r"""The magnitude rule with an explicit threshold: :math:`m = \mathbb{1}(|w| \ge \theta)`.

    Han et al. 2015, Sec. 3. Test: ``tests/optim/prune/test_prune_masks.py::test_magnitude_mask_is_a_threshold``.
    """
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    return np.abs(check_scores(w, "w")) >= threshold


def lp_norms(w: np.ndarray, n: float = 2, axis: int = 0) -> np.ndarray:
    r"""The :math:`L_n` norm of every slice of ``w`` along ``axis``:
    :math:`\|w_{c}\|_n = (\sum_{j} |w_{c,j}|^n)^{1/n}` over all other axes
    (:math:`n = \infty`: the largest :math:`|w_{c,j}|`). With :math:`n = 1` it is the filter
    score of Li et al. 2017, "Pruning Filters for Efficient ConvNets", Sec. 3.1.

    Test: ``tests/optim/prune/test_prune_masks.py::test_lp_norms_match_numpy_norm``.
    """
    w = check_scores(w, "w")
    if w.ndim == 0:
        raise ValueError("w must have at least one dimension")
    axis = check_axis(axis, w.ndim)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, float, np.integer, np.floating)) \
            or not n > 0:
        raise ValueError(f"n must be a positive number or inf, got {n!r}")
    slices = np.moveaxis(np.abs(w.astype(np.float64)), axis, 0).reshape(w.shape[axis], -1)
    if np.isinf(n):
        return slices.max(axis=1, initial=0.0)
    return (slices ** n).sum(axis=1) ** (1.0 / n)


def expand_channel_mask(keep: np.ndarray, shape: tuple[int, ...], axis: int = 0) -> np.ndarray:
    """Broadcast a per-slice mask ``keep`` (length ``shape[axis]``) to a full mask of ``shape``:
    constant along every other axis."""
    axis = check_axis(axis, len(shape))
    keep = check_mask(keep, (shape[axis],), "keep")
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(keep.reshape(view), shape).copy()


def structured_mask(channel_scores: np.ndarray, amount: int | float, shape: tuple[int, ...],
                    axis: int = 0) -> np.ndarray:
    """Prune whole slices along ``axis``: ``topk_mask`` of the per-slice scores, broadcast to
    ``shape``. ``amount`` counts slices (``shape[axis]`` of them)."""
    axis = check_axis(axis, len(shape))
    channel_scores = check_scores(channel_scores, "channel_scores")
    if channel_scores.shape != (shape[axis],):
        raise ValueError(f"channel_scores has shape {channel_scores.shape}, expected "
                         f"({shape[axis]},) for axis {axis} of shape {tuple(shape)}")
    return expand_channel_mask(topk_mask(channel_scores, amount), shape, axis)


def ln_structured_mask(w: np.ndarray, amount: int | float, n: float = 2,
                       axis: int = 0) -> np.ndarray:
    r"""Prune whole slices of ``w`` along ``axis`` with the smallest :math:`L_n` norm
    (``lp_norms``); ``amount`` counts slices. ``torch.nn.utils.prune.ln_structured``'s mask
    (``axis`` is its ``dim``); with ``n=1, axis=0`` on a conv weight, Li et al. 2017.

    Tests: ``tests/optim/prune/test_prune_masks.py::test_structured_mask_is_constant_along_other_axes`` and
    ``tests/optim/prune/test_prune_torch.py::test_ln_structured_mask_matches_torch``.

    >>> ln_structured_mask(np.array([[3.0, 4.0], [0.0, 1.0]]), 1)
    array([[ True,  True],
           [False, False]])
    """
    w = check_scores(w, "w")
    if w.ndim == 0:
        raise ValueError("w must have at least one dimension")
    axis = check_axis(axis, w.ndim)
    return structured_mask(lp_norms(w, n, axis), amount, w.shape, axis)


def nm_mask(scores: np.ndarray, n: int = 2, m: int = 4, axis: int = -1) -> np.ndarray:
    r"""N:M semi-structured sparsity: in every group of ``m`` consecutive entries along ``axis``
    keep the ``n`` highest scores (ties: the lower index is pruned first).

    NVIDIA's 2:4 pattern groups along the input axis of a weight (Mishra et al. 2021,
    "Accelerating Sparse Deep Neural Networks"; Zhou et al. 2021, "Learning N:M
    Fine-grained Structured Sparse Neural Networks From Scratch"). ``scores.shape[axis]`` must
    be a multiple of ``m``. Test: ``tests/optim/prune/test_prune_masks.py::test_nm_mask_keeps_n_of_every_m``.

    >>> nm_mask(np.abs(np.array([[0.1, -3.0, 2.0, 0.5]])), 2, 4)
    array([[False,  True,  True, False]])
    """
    scores = check_scores(scores)
    if scores.ndim == 0:
        raise ValueError("scores must have at least one dimension")
    m = check_positive_int(m, "m")
    n = check_positive_int(n, "n")
    if n > m:
        raise ValueError(f"n must be <= m, got n={n}, m={m}")
    axis = check_axis(axis, scores.ndim)
    if scores.shape[axis] % m:
        raise ValueError(f"scores.shape[{axis}]={scores.shape[axis]} is not a multiple of m={m}")
    moved = np.moveaxis(scores, axis, -1)
    groups = moved.reshape(-1, m)
    keep = np.ones(groups.shape, dtype=bool)
    order = np.argsort(groups, axis=1, kind="stable")[:, :m - n]
    np.put_along_axis(keep, order, False, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


def sparsity(mask_or_weight: np.ndarray) -> float:
    """Fraction of zero (pruned) entries: of False entries for a boolean mask, of zeros
    otherwise."""
    a = np.asarray(mask_or_weight)
    return float(np.count_nonzero(a == 0) / a.size) if a.size else 0.0
