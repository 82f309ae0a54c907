"""Window extraction (im2col) and its adjoint (col2im), the gather/scatter behind conv and pooling.

For x of shape (N, C, H, W) zero-padded by p, a kernel (k_h, k_w), stride s and dilation d,
every window becomes one column (PyTorch's ``unfold`` layout, per sample):

    cols[n, (c, i, j), (y, x)] = xpad[n, c, y s_h + i d_h, x s_w + j d_w]

with the output size of ``torch.nn.Conv2d``:

    H_out = floor((H + 2 p_h - d_h (k_h - 1) - 1) / s_h) + 1     (likewise W_out).

``col2im`` is the adjoint (transpose) of ``im2col``: every column entry is added back to the input
position it was read from (padding positions are dropped), so <im2col(x), c> = <x, col2im(c)>.

All geometry arguments are (height, width) pairs of ints. Tests:
``tests/minnet/kernels/test_im2col.py`` (Numba equals NumPy, adjoint identity, brute force).
"""
from __future__ import annotations

import numpy as np

from minnet.kernels.backend import dispatch, jit

Pair = tuple[int, int]


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1 (``torch.nn.Conv2d``)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _out_hw(shape: tuple, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair) -> Pair:
    return (output_size(shape[2], kernel_size[0], stride[0], padding[0], dilation[0]),
            output_size(shape[3], kernel_size[1], stride[1], padding[1], dilation[1]))


def _taps(offset: int, dilation: int, stride: int, count: int) -> slice:
    """Padded-input positions read by kernel tap ``offset``: offset d + k s for k < count."""
    start = offset * dilation
    return slice(start, start + stride * (count - 1) + 1, stride)


# ---- NumPy reference ---------------------------------------------------------------------


def im2col_numpy(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair,
                 dilation: Pair) -> np.ndarray:
    """cols[n, (c, i, j), (y, x)] = xpad[n, c, y s_h + i d_h, x s_w + j d_w]; shape
    (N, C k_h k_w, H_out W_out)."""
    n, c = x.shape[:2]
    (kh, kw), (ph, pw) = kernel_size, padding
    oh, ow = _out_hw(x.shape, kernel_size, stride, padding, dilation)
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xpad[:, :, _taps(i, dilation[0], stride[0], oh),
                                    _taps(j, dilation[1], stride[1], ow)]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im_numpy(cols: np.ndarray, input_shape: tuple, kernel_size: Pair, stride: Pair,
                 padding: Pair, dilation: Pair) -> np.ndarray:
    """Adjoint of im2col: xpad[n, c, y s_h + i d_h, x s_w + j d_w] += cols[n, (c, i, j), (y, x)],
    then the padding is cropped."""
    n, c, h, w = input_shape
    (kh, kw), (ph, pw) = kernel_size, padding
    oh, ow = _out_hw(input_shape, kernel_size, stride, padding, dilation)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xpad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xpad[:, :, _taps(i, dilation[0], stride[0], oh),
                 _taps(j, dilation[1], stride[1], ow)] += cols[:, :, i, j]
    return np.ascontiguousarray(xpad[:, :, ph:ph + h, pw:pw + w])


# ---- Numba fast path ---------------------------------------------------------------------


def _padded(x: np.ndarray, padding: Pair) -> np.ndarray:
    """x with zero rows/columns added on each side (x itself when there is no padding)."""
    ph, pw = padding
    if ph == pw == 0:
        return np.ascontiguousarray(x)
    n, c, h, w = x.shape
    xpad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    xpad[:, :, ph:ph + h, pw:pw + w] = x
    return xpad


@jit
def im2col_loops(xpad, cols, sh, sw, dh, dw):
    n_batch, channels, kh, kw, oh, ow = cols.shape
    # max(., 1) shows the compiler that every index below is non-negative, which drops Numba's
    # negative-index wraparound from the inner loop and lets LLVM vectorize it
    sh, sw, dh, dw = max(sh, 1), max(sw, 1), max(dh, 1), max(dw, 1)
    for n in range(n_batch):
        for c in range(channels):
            for i in range(kh):
                for j in range(kw):
                    for y in range(oh):
                        src = xpad[n, c, y * sh + i * dh]
                        dst = cols[n, c, i, j, y]
                        if sw == 1:  # contiguous rows
                            for k in range(ow):
                                dst[k] = src[k + j * dw]
                        else:
                            for k in range(ow):
                                dst[k] = src[k * sw + j * dw]


@jit
def _col2im_loops(cols, xpad, sh, sw, dh, dw):
    n_batch, channels, kh, kw, oh, ow = cols.shape
    sh, sw, dh, dw = max(sh, 1), max(sw, 1), max(dh, 1), max(dw, 1)  # see im2col_loops
    for n in range(n_batch):
        for c in range(channels):
            for i in range(kh):
                for j in range(kw):
                    for y in range(oh):
                        src = cols[n, c, i, j, y]
                        dst = xpad[n, c, y * sh + i * dh]
                        if sw == 1:
                            for k in range(ow):
                                dst[k + j * dw] += src[k]
                        else:
                            for k in range(ow):
                                dst[k * sw + j * dw] += src[k]


def im2col_numba(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair,
                 dilation: Pair) -> np.ndarray:
    """Numba twin of ``im2col_numpy``."""
    n, c = x.shape[:2]
    oh, ow = _out_hw(x.shape, kernel_size, stride, padding, dilation)
    cols = np.empty((n, c, *kernel_size, oh, ow), dtype=x.dtype)
    im2col_loops(_padded(x, padding), cols, *stride, *dilation)
    return cols.reshape(n, -1, oh * ow)


def col2im_numba(cols: np.ndarray, input_shape: tuple, kernel_size: Pair, stride: Pair,
                 padding: Pair, dilation: Pair) -> np.ndarray:
    """Numba twin of ``col2im_numpy``."""
    n, c, h, w = input_shape
    (ph, pw) = padding
    oh, ow = _out_hw(input_shape, kernel_size, stride, padding, dilation)
    xpad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    cols = np.ascontiguousarray(cols).reshape(n, c, *kernel_size, oh, ow)
    _col2im_loops(cols, xpad, *stride, *dilation)
    return xpad if ph == pw == 0 else np.ascontiguousarray(xpad[:, :, ph:ph + h, pw:pw + w])


im2col = dispatch(im2col_numpy, im2col_numba)
col2im = dispatch(col2im_numpy, col2im_numba)
