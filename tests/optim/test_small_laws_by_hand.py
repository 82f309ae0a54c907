"""Small laws worked by hand: batch-norm folding with absent statistics, attention maps
normalised per example, and the BCE-with-logits gradient in the target."""
import numpy as np
import pytest

import minnet
from minnet import functional as F
from optim.distill.hints import attention_map, attention_transfer_loss
from optim.graph.fold import fold_batchnorm


def test_fold_batchnorm_without_running_statistics_uses_mean_0_and_var_1():
    """mean, var None mean 0 and 1: W' = W γ / sqrt(1 + eps), b' = β + b γ / sqrt(1 + eps);
    with γ = 2, eps = 3: scale 1, so W' = W and b' = β + b."""
    w, b = np.array([[1.0, -2.0]]), np.array([0.5])
    folded_w, folded_b = fold_batchnorm(w, b, None, None, np.array([2.0]), np.array([1.0]), 3.0)
    np.testing.assert_array_equal(folded_w, w)
    np.testing.assert_array_equal(folded_b, [1.5])


def test_attention_map_is_normalised_per_example_with_p_2_by_default():
    """A (2, 1, 1, 2): example 0 has |A|^2 = (9, 16), divided by its own L2 norm sqrt(337);
    example 1 has (1, 0) -> (1, 0); with p = 1, (3, 4) / 5 = (0.6, 0.8)."""
    a = np.array([[[[3.0, 4.0]]], [[[1.0, 0.0]]]])
    np.testing.assert_allclose(attention_map(a).data,
                               [[9 / np.sqrt(337), 16 / np.sqrt(337)], [1.0, 0.0]], rtol=1e-12)
    np.testing.assert_allclose(attention_map(a, p=1.0).data, [[0.6, 0.8], [1.0, 0.0]],
                               rtol=1e-12)


def test_attention_transfer_needs_4d_features_on_both_sides():
    """A 3-D student or a 3-D teacher alone is refused."""
    good, flat = np.ones((1, 1, 2, 2)), np.ones((1, 4, 1))
    for s, t in ((flat, good), (good, flat)):
        with pytest.raises(ValueError, match="4-D"):
            attention_transfer_loss(s, t)


def test_bce_with_logits_gradient_in_the_target_is_minus_x():
    """l = max(x, 0) - x y + log(1 + e^{-|x|}): dl/dy = -x, also when only y needs it."""
    x = minnet.Tensor(np.array([2.0, -1.0]))
    y = minnet.Tensor(np.array([0.5, 0.25]), requires_grad=True)
    F.binary_cross_entropy_with_logits(x, y, reduction="sum").backward()
    np.testing.assert_array_equal(y.grad, [-2.0, 1.0])
