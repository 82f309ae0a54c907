"""Masks from scores: exact counts, top-k sets, tie-breaking, global scope, structured and N:M."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.prune import (expand_channel_mask, global_magnitude_masks, global_topk_masks,
                         ln_structured_mask, lp_norms, magnitude_mask, nm_mask, sparsity,
                         structured_mask, threshold_mask, topk_mask)

from prune_helpers import SHAPES, amounts, expected_count, float_arrays


@given(data=st.data(), shape=SHAPES)
def test_topk_mask_prunes_exactly_k_lowest(data, shape):
    scores = data.draw(float_arrays(shape))
    amount = data.draw(amounts(scores.size))
    mask = topk_mask(scores, amount)
    k = expected_count(amount, scores.size)
    assert mask.dtype == np.bool_ and mask.shape == scores.shape
    assert np.count_nonzero(~mask) == k
    # every kept score is >= every pruned score: the kept set is a top-(n - k) set
    if 0 < k < scores.size:
        assert scores[mask].min() >= scores[~mask].max()


@given(data=st.data(), shape=SHAPES)
def test_topk_mask_breaks_ties_by_flat_index(data, shape):
    scores = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0, 2.0])))
    k = data.draw(st.integers(0, scores.size))
    mask = topk_mask(scores, k).ravel()
    # brute force: rank by (score, index), prune the first k
    ranked = sorted(range(scores.size), key=lambda i: (scores.ravel()[i], i))
    expected = np.ones(scores.size, dtype=bool)
    expected[ranked[:k]] = False
    np.testing.assert_array_equal(mask, expected)


@given(data=st.data(), shape=SHAPES)
def test_topk_mask_composes_with_previous_mask(data, shape):
    scores = data.draw(float_arrays(shape))
    previous = data.draw(hnp.arrays(np.bool_, shape))
    amount = data.draw(amounts(int(previous.sum())))
    mask = topk_mask(scores, amount, previous)
    assert not np.any(mask & ~previous)  # pruned entries stay pruned
    assert np.count_nonzero(previous & ~mask) == expected_count(amount, int(previous.sum()))
    if mask.any() and (previous & ~mask).any():
        assert scores[mask].min() >= scores[previous & ~mask].max()


def test_pruning_twenty_percent_twice_removes_thirty_six_percent():
    scores = np.arange(100.0)
    twice = topk_mask(scores, 0.2, topk_mask(scores, 0.2))
    assert np.count_nonzero(~twice) == 36
    np.testing.assert_array_equal(twice, scores >= 36)


@given(data=st.data())
def test_global_masks_equal_topk_on_concatenation(data):
    shapes = data.draw(st.lists(SHAPES, min_size=1, max_size=4))
    scores = [data.draw(float_arrays(s)) for s in shapes]
    total = sum(s.size for s in scores)
    amount = data.draw(amounts(total))
    masks = global_topk_masks(scores, amount)
    flat = topk_mask(np.concatenate([s.ravel() for s in scores]), amount)
    np.testing.assert_array_equal(np.concatenate([m.ravel() for m in masks]), flat)
    assert [m.shape for m in masks] == [s.shape for s in scores]


@given(data=st.data(), shape=SHAPES, copies=st.integers(1, 4))
def test_global_magnitude_equals_layerwise_for_identical_layers(data, shape, copies):
    w = data.draw(float_arrays(shape, unique=True))
    assume(np.unique(np.abs(w)).size == w.size)  # a tie split by k is broken by layer order
    per_layer_k = data.draw(st.integers(0, w.size))
    # the same fraction of each identical layer: one global threshold keeps the same total,
    # and the same entries, as per-layer masks
    masks = global_magnitude_masks([w] * copies, per_layer_k * copies)
    layer = magnitude_mask(w, per_layer_k)
    for m in masks:
        np.testing.assert_array_equal(m, layer)
    fraction = per_layer_k / w.size
    assert sum(np.count_nonzero(~m) for m in global_magnitude_masks([w] * copies, fraction)) \
        == round(fraction * w.size * copies)


@given(data=st.data(), shape=SHAPES)
def test_magnitude_mask_is_a_threshold(data, shape):
    w = data.draw(float_arrays(shape, unique=True))
    k = data.draw(st.integers(0, w.size))
    mask = magnitude_mask(w, k)
    if k < w.size:
        theta = np.sort(np.abs(w).ravel())[k]  # the smallest kept magnitude
        # with distinct magnitudes (unique values may still share |w|) the rule w·1(|w| >= θ)
        if np.unique(np.abs(w)).size == w.size:
            np.testing.assert_array_equal(mask, threshold_mask(w, theta))
        assert np.all(np.abs(w[mask]) >= theta)
    else:
        assert not mask.any()


@given(data=st.data(), shape=SHAPES, n=st.sampled_from([1, 2, 3, 0.5, np.inf]))
def test_lp_norms_match_numpy_norm(data, shape, n):
    w = data.draw(float_arrays(shape))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    slices = np.moveaxis(w, axis, 0).reshape(shape[axis], -1)
    if np.isfinite(n):
        expected = np.sum(np.abs(slices) ** n, axis=1) ** (1 / n)
    else:
        expected = np.abs(slices).max(axis=1)
    np.testing.assert_allclose(lp_norms(w, n, axis), expected, rtol=1e-9, atol=1e-12)


@given(data=st.data(), shape=SHAPES, n=st.sampled_from([1, 2, np.inf]))
def test_structured_mask_is_constant_along_other_axes(data, shape, n):
    w = data.draw(float_arrays(shape))
    axis = data.draw(st.integers(0, len(shape) - 1))
    amount = data.draw(amounts(shape[axis]))
    mask = ln_structured_mask(w, amount, n=n, axis=axis)
    slices = np.moveaxis(mask, axis, 0).reshape(shape[axis], -1)
    assert np.all(slices == slices[:, :1])  # whole slices kept or pruned
    pruned = ~slices[:, 0]
    assert pruned.sum() == expected_count(amount, shape[axis])
    norms = lp_norms(w, n, axis)
    if pruned.any() and (~pruned).any():
        assert norms[~pruned].min() >= norms[pruned].max()


def test_expand_channel_mask_and_structured_mask_shapes():
    keep = np.array([True, False, True])
    full = expand_channel_mask(keep, (2, 3, 4), axis=1)
    np.testing.assert_array_equal(full[:, 1], False)
    assert full[:, [0, 2]].all()
    np.testing.assert_array_equal(structured_mask(np.array([3.0, 1.0, 2.0]), 1, (2, 3), axis=1),
                                  [[True, False, True]] * 2)


@st.composite
def nm_cases(draw):
    m = draw(st.integers(1, 6))
    n = draw(st.integers(1, m))
    shape = list(draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4)))
    axis = draw(st.integers(0, len(shape) - 1))
    shape[axis] *= m
    return draw(float_arrays(tuple(shape))), n, m, axis


@given(nm_cases())
def test_nm_mask_keeps_n_of_every_m(case):
    scores, n, m, axis = case
    mask = nm_mask(scores, n, m, axis)
    groups = np.moveaxis(mask, axis, -1).reshape(-1, m)
    values = np.moveaxis(scores, axis, -1).reshape(-1, m)
    assert np.all(groups.sum(axis=1) == n)
    for keep, v in zip(groups, values):
        expected = topk_mask(v, m - n)  # top-n of each group, same tie rule
        np.testing.assert_array_equal(keep, expected)


def test_sparsity_counts_pruned_entries():
    assert sparsity(np.array([True, False, False, True])) == 0.5
    assert sparsity(np.array([[0.0, 1.0, 0.0]])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("amount, error", [(-1, ValueError), (1.5, ValueError), (-0.1, ValueError),
                                           (float("nan"), ValueError), (True, TypeError),
                                           ("half", TypeError), (7, ValueError)])
def test_bad_amounts_are_rejected(amount, error):
    with pytest.raises(error, match="amount"):
        magnitude_mask(np.ones(6), amount)


def test_amount_one_is_a_count_and_one_point_zero_a_fraction():
    w = np.arange(1.0, 5.0)
    assert np.count_nonzero(~magnitude_mask(w, 1)) == 1
    assert np.count_nonzero(~magnitude_mask(w, 1.0)) == 4


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="previous_mask has shape"):
        topk_mask(np.ones(4), 1, np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        ln_structured_mask(np.ones((2, 3)), 1, axis=2)
    with pytest.raises(ValueError, match="not a multiple of m=4"):
        nm_mask(np.ones((2, 6)), 2, 4)
    with pytest.raises(ValueError, match="n must be <= m"):
        nm_mask(np.ones((2, 4)), 5, 4)
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(np.array([1.0, np.nan]), 1)
    with pytest.raises(ValueError, match="n must be a positive number"):
        lp_norms(np.ones(3), 0)
    with pytest.raises(ValueError, match="channel_scores has shape"):
        structured_mask(np.ones(2), 1, (3, 4))
    with pytest.raises(ValueError, match="greater than the number"):
        global_magnitude_masks([np.ones(2), np.ones(3)], 6)
    with pytest.raises(ValueError, match="sequence of arrays"):
        global_magnitude_masks(np.ones((2, 3)), 1)
