"""Pooling window checks, one axis at a time (PyTorch's rules: padding at most half the kernel
on each axis, a non-empty output on each axis)."""
import numpy as np
import pytest

import minnet.functional as F


@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
@pytest.mark.parametrize("padding", [(2, 0), (0, 2)])
def test_padding_past_half_the_kernel_on_one_axis_is_refused(pool, padding):
    """kernel 2x2 allows padding <= 1 per axis: 2 on either axis alone is refused."""
    with pytest.raises(ValueError, match="padding"):
        pool(np.zeros((1, 1, 6, 6), np.float32), 2, padding=padding)


@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
@pytest.mark.parametrize("shape, kernel", [((1, 1, 1, 8), (2, 1)), ((1, 1, 8, 1), (1, 2))])
def test_an_empty_output_on_one_axis_is_refused(pool, shape, kernel):
    """(1 - 2) // 2 + 1 = 0 output rows (or columns) while the other axis has 8: refused."""
    with pytest.raises(ValueError, match="empty"):
        pool(np.zeros(shape, np.float32), kernel)
