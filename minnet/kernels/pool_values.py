"""Max pooling that returns only the window maxima (no argmax), for inference on any real or
integer dtype — the integer engine pools uint8/int8 codes with it.

    y[n, c, u, v] = max over i < k_h, j < k_w of xpad[n, c, u s_h + i, v s_w + j]

with padding that never wins: the smallest value of the dtype (-inf for floats), as in
``torch.nn.MaxPool2d``. Output size floor((H + 2 p - k) / s) + 1.

``max_pool2d_values_numpy`` is the reference (a padded sliding-window view; NaN propagates);
``max_pool2d_values_numba`` clips each window to the input instead of padding and keeps the
running maximum in the input's dtype, so integer codes are compared as integers (no float
conversion, no index bookkeeping; a NaN in a window wins, as in the reference); windows that tile the input
(stride = kernel, no padding, LeNet's 2 x 2 pools) run as one vector loop per tap and row. Tests: ``tests/minnet/kernels/test_pool_values.py``.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from minnet.kernels.backend import dispatch, jit
from minnet.kernels.im2col import Pair


def _lowest(dtype) -> float | int:
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


def _out_hw(shape: tuple, kernel_size: Pair, stride: Pair, padding: Pair) -> Pair:
    return tuple((shape[2 + a] + 2 * padding[a] - kernel_size[a]) // stride[a] + 1
                 for a in (0, 1))


def max_pool2d_values_numpy(x: np.ndarray, kernel_size: Pair, stride: Pair,
                            padding: Pair) -> np.ndarray:
    """Reference: the maximum over each window of x padded with the dtype's lowest value."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=_lowest(x.dtype))
    windows = sliding_window_view(padded, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    oh, ow = _out_hw(x.shape, kernel_size, stride, padding)
    return windows[:, :, :oh, :ow].max(axis=(-2, -1))


@jit
def _larger(a, b):
    """max(a, b) with NaN propagating, as NumPy's maximum: a NaN on either side wins."""
    return a if (a > b or a != a) else (b if (b > a or b != b) else a)


@jit
def _max_loops(x, y, kh, kw, sh, sw, ph, pw):
    n_batch, channels, h, w = x.shape
    oh, ow = y.shape[2:]
    # max(., 1): indices provably non-negative, so LLVM vectorizes (see minnet.kernels.im2col)
    kh, kw, sh, sw = max(kh, 1), max(kw, 1), max(sh, 1), max(sw, 1)
    tiled = ph == 0 and pw == 0 and sh == kh and sw == kw
    for n in range(n_batch):
        for c in range(channels):
            plane, out = x[n, c], y[n, c]
            for u in range(oh):
                dst = out[u]
                if tiled:  # windows tile the input: one vector loop per tap over the row
                    for i in range(kh):
                        src = plane[u * kh + i]
                        for j in range(kw):
                            if i == 0 and j == 0:
                                for v in range(ow):
                                    dst[v] = src[v * kw]
                            else:
                                for v in range(ow):
                                    dst[v] = _larger(dst[v], src[v * kw + j])
                    continue
                r0, r1 = max(u * sh - ph, 0), min(u * sh - ph + kh, h)
                for v in range(ow):
                    c0, c1 = max(v * sw - pw, 0), min(v * sw - pw + kw, w)
                    best = plane[r0, c0]
                    for i in range(r0, r1):
                        for j in range(c0, c1):
                            best = _larger(best, plane[i, j])
                    dst[v] = best


def max_pool2d_values_numba(x: np.ndarray, kernel_size: Pair, stride: Pair,
                            padding: Pair) -> np.ndarray:
    """Numba twin of ``max_pool2d_values_numpy`` (windows clipped to the input; padding of
    at most half the kernel, as ``nn.MaxPool2d`` requires, leaves every window non-empty)."""
    y = np.empty(x.shape[:2] + _out_hw(x.shape, kernel_size, stride, padding), dtype=x.dtype)
    _max_loops(np.ascontiguousarray(x), y, *kernel_size, *stride, *padding)
    return y


max_pool2d_values = dispatch(max_pool2d_values_numpy, max_pool2d_values_numba)
