"""Soft targets and the distillation losses at their numerical edges, worked by hand or
against mpmath at 50 digits."""
import mpmath
import numpy as np
import pytest

import minnet
from optim.distill.soft import kd_loss, soft_cross_entropy, soft_targets


def test_soft_targets_keep_float32_and_shift_by_the_maximum():
    """float32 logits give float32 probabilities; (1000, 1000 + d) at T = 1 gives
    (1, e^d) / (1 + e^d) without overflowing exp (d = ln 3 as float32 rounds it)."""
    z = np.array([1000.0, 1000.0 + np.log(3.0)], np.float32)
    with np.errstate(over="raise"):
        p = soft_targets(z, T=1.0)
    assert p.dtype == np.float32
    d = float(z[1]) - float(z[0])
    np.testing.assert_allclose(p, [1 / (1 + np.exp(d)), np.exp(d) / (1 + np.exp(d))], rtol=1e-6)


def _kl_reference(s, t, T):
    """T^2 KL(softmax(t/T) || softmax(s/T)) per row, at 50 digits."""
    mpmath.mp.dps = 50
    out = []
    for s_row, t_row in zip(s, t):
        sp = [mpmath.mpf(float(v)) / T for v in s_row]
        tp = [mpmath.mpf(float(v)) / T for v in t_row]
        ls = mpmath.log(sum(mpmath.e ** v for v in sp))
        lt = mpmath.log(sum(mpmath.e ** v for v in tp))
        out.append(float(T * T * sum(mpmath.e ** (b - lt) * ((b - lt) - (a - ls))
                                     for a, b in zip(sp, tp))))
    return np.array(out)


@pytest.mark.parametrize("gap", [0.5, 1.0, 1.9, 3.0])
def test_kd_loss_is_accurate_on_both_sides_of_the_series_threshold(gap):
    """s = 0 (q uniform) and t = (x, -x, 0) sum to zero, so the centred scaled gaps are
    e = t exactly: max |e| = 0.5 .. 3 (the series branch up to 1, log-sum-exp beyond; the
    series truncated at 1/19! would be off by about 1e-12 at 1.9): within 1e-13 of the
    50-digit value, in float64."""
    s = np.zeros((1, 3))
    t = np.array([[gap, -gap, 0.0]])
    got = kd_loss(minnet.Tensor(s), t, T=1.0, reduction="none").data
    np.testing.assert_allclose(got, _kl_reference(s, t, 1.0), rtol=1e-13)


def test_kd_loss_with_large_logits_and_an_overflowing_gap():
    """Student logits near 800 still give the exact KL (the max shift); a gap that overflows
    at T = 1e-18 is refused, not turned into NaN."""
    s = np.array([[800.0, 801.0]])
    t = np.array([[801.0, 800.0]])
    got = kd_loss(minnet.Tensor(s), t, T=1.0, reduction="none").data
    np.testing.assert_allclose(got, _kl_reference(s, t, 1.0), rtol=1e-12)
    with pytest.raises(ValueError, match="too small"):
        kd_loss(minnet.Tensor(np.zeros((1, 2))), np.array([[1e300, 0.0]]), T=1e-18)


def test_soft_cross_entropy_defaults_to_t_1_and_accepts_zero_probabilities():
    """One-hot targets (zeros allowed) at the default T = 1: H = -log softmax(z)_c; for
    z = (0, ln 3), c = 1: -log(3/4)."""
    z = minnet.Tensor(np.array([[0.0, np.log(3.0)]]))
    loss = soft_cross_entropy(z, np.array([[0.0, 1.0]]))
    np.testing.assert_allclose(loss.data, -np.log(0.75), rtol=1e-12)
