"""2-D pooling kernels (NCHW), forward and backward, following PyTorch's conventions.

Windows: output (u, v) covers input rows u s_h - p_h + i (i < k_h) and columns v s_w - p_w + j
(j < k_w); H_out = floor((H + 2 p_h - k_h) / s_h) + 1 (``ceil_mode=False``).

- max:  y = max over the window, padding counts as -inf. ``idx`` is the flat position h W + w of
  the first maximum in row-major window order (PyTorch's ``return_indices``); a NaN counts as
  the maximum (the first NaN, as ``np.argmax``), so it propagates.
  dL/dx[n, c, idx] += dL/dy, so overlapping windows accumulate.
- avg:  y = (1 / (k_h k_w)) sum over the window, padding counts as zeros
  (``count_include_pad=True``); dL/dx gets dL/dy / (k_h k_w) at every window position.
- adaptive avg: output cell u averages rows floor(u H / H_out) ... ceil((u + 1) H / H_out) - 1
  (likewise columns), as ``torch.nn.functional.adaptive_avg_pool2d``.

Geometry arguments are (height, width) int pairs. Tests: ``tests/minnet/kernels/test_pool_kernels.py``
(window definitions, max-pool ties, adjoint identities, Numba equals NumPy, PyTorch).
"""
from __future__ import annotations

import numpy as np

from minnet.kernels.backend import dispatch, jit
from minnet.kernels.im2col import Pair, col2im_numpy, im2col_numpy, output_size


def _out_hw(shape: tuple, kernel_size: Pair, stride: Pair, padding: Pair) -> Pair:
    return (output_size(shape[2], kernel_size[0], stride[0], padding[0], 1),
            output_size(shape[3], kernel_size[1], stride[1], padding[1], 1))


def adaptive_bounds(size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Window [start_u, end_u) per output u: start = floor(u size / out), end = ceil((u + 1) size / out)."""
    u = np.arange(out_size)
    return (u * size) // out_size, -(-(u + 1) * size // out_size)


# ---- NumPy references --------------------------------------------------------------------


def max_pool2d_forward_numpy(x: np.ndarray, kernel_size: Pair, stride: Pair,
                             padding: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(y, idx): window maxima and the flat input position of each window's first maximum."""
    n, c, h, w = x.shape
    (kh, kw), (ph, pw) = kernel_size, padding
    oh, ow = _out_hw(x.shape, kernel_size, stride, padding)
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    windows = im2col_numpy(xpad, kernel_size, stride, (0, 0), (1, 1)).reshape(n, c, kh * kw, oh, ow)
    first = windows.argmax(axis=2)  # argmax returns the first maximum
    y = np.take_along_axis(windows, first[:, :, None], axis=2)[:, :, 0]
    rows = np.arange(oh)[:, None] * stride[0] - ph + first // kw
    cols = np.arange(ow) * stride[1] - pw + first % kw
    return y, rows * w + cols


def max_pool2d_backward_numpy(grad: np.ndarray, indices: np.ndarray, input_shape: tuple) -> np.ndarray:
    """dL/dx[n, c, idx[n, c, u, v]] += dL/dy[n, c, u, v]."""
    n, c, h, w = input_shape
    dx = np.zeros((n * c, h * w), dtype=grad.dtype)
    planes = np.arange(n * c)[:, None]
    np.add.at(dx, (planes, indices.reshape(n * c, -1)), grad.reshape(n * c, -1))
    return dx.reshape(input_shape)


def avg_pool2d_forward_numpy(x: np.ndarray, kernel_size: Pair, stride: Pair,
                             padding: Pair) -> np.ndarray:
    """y = mean of the zero-padded window (count_include_pad=True)."""
    n, c = x.shape[:2]
    oh, ow = _out_hw(x.shape, kernel_size, stride, padding)
    windows = im2col_numpy(x, kernel_size, stride, padding, (1, 1)).reshape(n, c, -1, oh, ow)
    return windows.mean(axis=2)


def avg_pool2d_backward_numpy(grad: np.ndarray, input_shape: tuple, kernel_size: Pair,
                              stride: Pair, padding: Pair) -> np.ndarray:
    """dL/dx = col2im(dL/dy / (k_h k_w) repeated over each window)."""
    n, c, oh, ow = grad.shape
    area = kernel_size[0] * kernel_size[1]
    windows = np.broadcast_to((grad / area)[:, :, None], (n, c, area, oh, ow))
    return col2im_numpy(windows, input_shape, kernel_size, stride, padding, (1, 1))


def adaptive_avg_pool2d_forward_numpy(x: np.ndarray, output_size: Pair) -> np.ndarray:
    """y[..., u, v] = mean of x[..., rows_u, cols_v] over the adaptive windows."""
    rows, cols = adaptive_bounds(x.shape[2], output_size[0]), adaptive_bounds(x.shape[3], output_size[1])
    y = np.empty(x.shape[:2] + tuple(output_size), dtype=x.dtype)
    for u, (r0, r1) in enumerate(zip(*rows)):
        for v, (c0, c1) in enumerate(zip(*cols)):
            y[:, :, u, v] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return y


def adaptive_avg_pool2d_backward_numpy(grad: np.ndarray, input_shape: tuple) -> np.ndarray:
    """dL/dx[..., rows_u, cols_v] += dL/dy[..., u, v] / |window|."""
    rows, cols = adaptive_bounds(input_shape[2], grad.shape[2]), adaptive_bounds(input_shape[3], grad.shape[3])
    dx = np.zeros(input_shape, dtype=grad.dtype)
    for u, (r0, r1) in enumerate(zip(*rows)):
        for v, (c0, c1) in enumerate(zip(*cols)):
            dx[:, :, r0:r1, c0:c1] += grad[:, :, u, v, None, None] / ((r1 - r0) * (c1 - c0))
    return dx


# ---- Numba fast paths --------------------------------------------------------------------


@jit
def _max_pool_loops(x, y, idx, kh, kw, sh, sw, ph, pw):
    n_batch, channels, h, w = x.shape
    oh, ow = y.shape[2:]
    for n in range(n_batch):
        for c in range(channels):
            plane = x[n, c]
            for u in range(oh):
                r0, r1 = max(u * sh - ph, 0), min(u * sh - ph + kh, h)
                for v in range(ow):
                    c0, c1 = max(v * sw - pw, 0), min(v * sw - pw + kw, w)
                    best, arg, nan = plane[r0, c0], r0 * w + c0, False
                    for ih in range(r0, r1):
                        for iw in range(c0, c1):
                            value = plane[ih, iw]
                            nan |= value != value
                            if value > best:  # strict: the first maximum stays
                                best, arg = value, ih * w + iw
                    if nan:  # a NaN wins, the first one as in np.argmax (rare: kept off the hot loop)
                        best, arg = _first_nan(plane, r0, r1, c0, c1)
                    y[n, c, u, v] = best
                    idx[n, c, u, v] = arg


@jit
def _first_nan(plane, r0, r1, c0, c1):
    for ih in range(r0, r1):
        for iw in range(c0, c1):
            if plane[ih, iw] != plane[ih, iw]:
                return plane[ih, iw], ih * plane.shape[1] + iw
    return plane[r0, c0], -1


@jit
def _max_pool_backward_loops(grad, idx, dx):
    n_batch, channels, oh, ow = grad.shape
    for n in range(n_batch):
        for c in range(channels):
            for u in range(oh):
                for v in range(ow):
                    dx[n, c, idx[n, c, u, v]] += grad[n, c, u, v]


@jit
def _window_sum_loops(x, y, row_start, row_end, col_start, col_end, scale):
    """y[n, c, u, v] = scale[u, v] * sum of x over [row_start_u, row_end_u) x [col_start_v, col_end_v)."""
    n_batch, channels, oh, ow = y.shape
    for n in range(n_batch):
        for c in range(channels):
            for u in range(oh):
                for v in range(ow):
                    total = 0.0
                    for ih in range(row_start[u], row_end[u]):
                        for iw in range(col_start[v], col_end[v]):
                            total += x[n, c, ih, iw]
                    y[n, c, u, v] = total * scale[u, v]


@jit
def _window_spread_loops(grad, dx, row_start, row_end, col_start, col_end, scale):
    """Adjoint of ``_window_sum_loops``: dx over each window += scale[u, v] grad[n, c, u, v]."""
    n_batch, channels, oh, ow = grad.shape
    for n in range(n_batch):
        for c in range(channels):
            for u in range(oh):
                for v in range(ow):
                    g = grad[n, c, u, v] * scale[u, v]
                    for ih in range(row_start[u], row_end[u]):
                        for iw in range(col_start[v], col_end[v]):
                            dx[n, c, ih, iw] += g


def _strided_bounds(size: int, out_size: int, kernel: int, stride: int, padding: int):
    """Window [start, end) per output, clipped to the input (padding contributes nothing)."""
    start = np.arange(out_size) * stride - padding
    return np.maximum(start, 0), np.minimum(start + kernel, size)


def _avg_windows(input_shape: tuple, out_hw: Pair, kernel_size: Pair, stride: Pair, padding: Pair):
    rows = _strided_bounds(input_shape[2], out_hw[0], kernel_size[0], stride[0], padding[0])
    cols = _strided_bounds(input_shape[3], out_hw[1], kernel_size[1], stride[1], padding[1])
    scale = np.full(out_hw, 1.0 / (kernel_size[0] * kernel_size[1]))
    return (*rows, *cols, scale)


def _adaptive_windows(input_shape: tuple, out_hw: Pair):
    rows, cols = adaptive_bounds(input_shape[2], out_hw[0]), adaptive_bounds(input_shape[3], out_hw[1])
    scale = 1.0 / np.outer(rows[1] - rows[0], cols[1] - cols[0])
    return (*rows, *cols, scale)


def max_pool2d_forward_numba(x: np.ndarray, kernel_size: Pair, stride: Pair,
                             padding: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Numba twin of ``max_pool2d_forward_numpy``."""
    oh, ow = _out_hw(x.shape, kernel_size, stride, padding)
    y = np.empty(x.shape[:2] + (oh, ow), dtype=x.dtype)
    idx = np.empty(y.shape, dtype=np.int64)
    _max_pool_loops(np.ascontiguousarray(x), y, idx, *kernel_size, *stride, *padding)
    return y, idx


def max_pool2d_backward_numba(grad: np.ndarray, indices: np.ndarray, input_shape: tuple) -> np.ndarray:
    """Numba twin of ``max_pool2d_backward_numpy``."""
    n, c, h, w = input_shape
    dx = np.zeros((n, c, h * w), dtype=grad.dtype)
    _max_pool_backward_loops(np.ascontiguousarray(grad), indices, dx)
    return dx.reshape(input_shape)


def avg_pool2d_forward_numba(x: np.ndarray, kernel_size: Pair, stride: Pair,
                             padding: Pair) -> np.ndarray:
    """Numba twin of ``avg_pool2d_forward_numpy``."""
    out_hw = _out_hw(x.shape, kernel_size, stride, padding)
    y = np.empty(x.shape[:2] + out_hw, dtype=x.dtype)
    _window_sum_loops(np.ascontiguousarray(x), y, *_avg_windows(x.shape, out_hw, kernel_size, stride, padding))
    return y


def avg_pool2d_backward_numba(grad: np.ndarray, input_shape: tuple, kernel_size: Pair,
                              stride: Pair, padding: Pair) -> np.ndarray:
    """Numba twin of ``avg_pool2d_backward_numpy``."""
    dx = np.zeros(input_shape, dtype=grad.dtype)
    windows = _avg_windows(input_shape, grad.shape[2:], kernel_size, stride, padding)
    _window_spread_loops(np.ascontiguousarray(grad), dx, *windows)
    return dx


def adaptive_avg_pool2d_forward_numba(x: np.ndarray, output_size: Pair) -> np.ndarray:
    """Numba twin of ``adaptive_avg_pool2d_forward_numpy``."""
    y = np.empty(x.shape[:2] + tuple(output_size), dtype=x.dtype)
    _window_sum_loops(np.ascontiguousarray(x), y, *_adaptive_windows(x.shape, output_size))
    return y


def adaptive_avg_pool2d_backward_numba(grad: np.ndarray, input_shape: tuple) -> np.ndarray:
    """Numba twin of ``adaptive_avg_pool2d_backward_numpy``."""
    dx = np.zeros(input_shape, dtype=grad.dtype)
    _window_spread_loops(np.ascontiguousarray(grad), dx, *_adaptive_windows(input_shape, grad.shape[2:]))
    return dx


max_pool2d_forward = dispatch(max_pool2d_forward_numpy, max_pool2d_forward_numba)
max_pool2d_backward = dispatch(max_pool2d_backward_numpy, max_pool2d_backward_numba)
avg_pool2d_forward = dispatch(avg_pool2d_forward_numpy, avg_pool2d_forward_numba)
avg_pool2d_backward = dispatch(avg_pool2d_backward_numpy, avg_pool2d_backward_numba)
adaptive_avg_pool2d_forward = dispatch(adaptive_avg_pool2d_forward_numpy,
                                       adaptive_avg_pool2d_forward_numba)
adaptive_avg_pool2d_backward = dispatch(adaptive_avg_pool2d_backward_numpy,
                                        adaptive_avg_pool2d_backward_numba)
