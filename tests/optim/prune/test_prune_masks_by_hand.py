"""Mask helpers' documented defaults and edges, worked by hand."""
import numpy as np
import pytest

from optim.prune.masks import (expand_channel_mask, global_topk_masks, ln_structured_mask,
                               lp_norms, nm_mask, sparsity, structured_mask)

W = np.array([[3.0, 4.0, 0.0], [0.5, 0.5, 0.5]])  # rows: L2 5, 0.866; L1 7, 1.5


def test_lp_norms_default_l2_per_output_channel_and_small_inf_norms():
    """Default n = 2 along axis 0: (5, √0.75); the max norm of weights below 1 is their max,
    not 1."""
    np.testing.assert_allclose(lp_norms(W), [5.0, np.sqrt(0.75)])
    np.testing.assert_allclose(lp_norms(W * 0.1, np.inf), [0.4, 0.05])


def test_channel_masks_default_to_axis_0():
    """Keeping channel 0 of 2 by default expands along the rows."""
    np.testing.assert_array_equal(expand_channel_mask(np.array([True, False]), (2, 3)),
                                  [[True] * 3, [False] * 3])
    np.testing.assert_array_equal(structured_mask(np.array([5.0, 1.0]), 1, (2, 3)),
                                  [[True] * 3, [False] * 3])


def test_ln_structured_default_is_l2():
    """Rows (4, 0, 0) and (2, 2, 2): L2 norms 4 and √12 ≈ 3.46 prune row 1 (the default),
    L1 norms 4 and 6 prune row 0."""
    w = np.array([[4.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    np.testing.assert_array_equal(ln_structured_mask(w, 1), [[True] * 3, [False] * 3])
    np.testing.assert_array_equal(ln_structured_mask(w, 1, n=1), [[False] * 3, [True] * 3])


def test_nm_mask_default_is_2_of_4_along_the_last_axis():
    """Each group of 4 along the last axis keeps its 2 largest."""
    scores = np.array([[0.1, 3.0, 2.0, 0.5, 9.0, 8.0, 0.0, 1.0]])
    np.testing.assert_array_equal(nm_mask(scores),
                                  [[False, True, True, False, True, True, False, False]])


def test_sparsity_of_nothing_is_zero_and_global_masks_need_a_list():
    assert sparsity(np.zeros(0)) == 0.0
    for bad in (np.ones(3), []):
        with pytest.raises(ValueError, match="non-empty sequence"):
            global_topk_masks(bad, 1)


def test_ln_structured_defaults_to_the_l2_norm():
    """Rows (3, 4) and (4.7, 0): L2 norms 5 and 4.7 prune the second row; L1 (7, 4.7) would
    too, but L3 (4.50, 4.7) would prune the first."""
    w = np.array([[3.0, 4.0], [4.7, 0.0]])
    np.testing.assert_array_equal(ln_structured_mask(w, 1), [[True, True], [False, False]])
    np.testing.assert_array_equal(ln_structured_mask(w, 1, n=3), [[False, False], [True, True]])


def test_nm_mask_groups_along_the_last_axis_by_default():
    """2:4 on a (1, 4, 4) ramp: along the last axis every row keeps its two largest columns."""
    scores = np.arange(16.0).reshape(1, 4, 4)
    keep = nm_mask(scores)
    np.testing.assert_array_equal(keep[0], np.tile([False, False, True, True], (4, 1)))


def test_global_masks_refuse_a_previous_mask_list_of_another_length():
    with pytest.raises(ValueError, match="previous_masks has 1 masks for 2 score arrays"):
        global_topk_masks([np.ones(2), np.ones(3)], 1, previous_masks=[np.ones(2, bool)])
