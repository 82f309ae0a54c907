"""conv2d's argument rules and shapes at their edges, worked by hand."""
import numpy as np
import pytest

from minnet import functional as F
from minnet.ops.conv import compute_dtype


def test_defaults_are_no_padding_stride_1():
    """4x4 input, 3x3 kernel, no padding by default: a 2x2 output of 9s."""
    y = F.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32))
    np.testing.assert_array_equal(y.data, np.full((1, 1, 2, 2), 9.0))


def test_an_empty_batch_keeps_the_spatial_output_size():
    """(0, 2, 5, 7) with a 3x3 kernel: (0, 4, 3, 5), height and width each their own."""
    y = F.conv2d(np.zeros((0, 2, 5, 7), np.float32), np.ones((4, 2, 3, 3), np.float32))
    assert y.shape == (0, 4, 3, 5)


def test_a_kernel_larger_than_the_padded_input_is_refused():
    """3x3 input padded by 1 is 5 wide: a 6-wide kernel does not fit, a 5-wide one does."""
    x = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="exceeds"):
        F.conv2d(x, np.ones((1, 1, 6, 6), np.float32), padding=1)
    assert F.conv2d(x, np.ones((1, 1, 5, 5), np.float32), padding=1).shape == (1, 1, 1, 1)


def test_booleans_are_not_strides():
    with pytest.raises(TypeError, match="stride"):
        F.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32),
                 stride=True)


def test_half_precision_computes_in_float32():
    assert compute_dtype(np.dtype(np.float16)) == np.float32
    assert compute_dtype(np.dtype(np.float64)) == np.float64
