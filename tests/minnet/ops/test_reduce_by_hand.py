"""Reductions of a 0-d tensor over axis 0 or -1 (PyTorch accepts both: the one element) and the
softmax family on logits too large for exp without the max shift."""
import numpy as np
import pytest

import minnet
from minnet import functional as F


@pytest.mark.parametrize("reduce", [F.sum, F.mean, F.max])
@pytest.mark.parametrize("axis", [0, -1])
def test_a_0d_tensor_reduces_over_axis_0_or_minus_1_to_itself(reduce, axis):
    """torch.sum(torch.tensor(3.), 0) == 3 (and -1): the value unchanged, gradient 1."""
    t = minnet.Tensor(np.array(3.0), requires_grad=True)
    out = reduce(t, axis=axis)
    out.backward()
    assert out.data == 3.0 and out.shape == () and t.grad == 1.0
    with pytest.raises(ValueError, match="out of range"):
        reduce(t, axis=1)


def test_softmax_and_log_softmax_shift_by_the_maximum():
    """x = (1000, 1001) in float32: e^x overflows, e^(x - max) does not. softmax = (1, e) /
    (1 + e) = (0.26894142, 0.73105858); log softmax = (-1, 0) - ln(1 + e)."""
    x = np.array([[1000.0, 1001.0]], np.float32)
    with np.errstate(over="raise", invalid="raise"):
        np.testing.assert_allclose(F.softmax(minnet.Tensor(x)).data,
                                   [[0.26894142, 0.73105858]], rtol=1e-6)
        np.testing.assert_allclose(F.log_softmax(minnet.Tensor(x)).data,
                                   [[-1.3132616, -0.3132617]], rtol=1e-6)
