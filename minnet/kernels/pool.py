"""2-D pooling kernels (NCHW), forward and backward, following PyTorch's CPU kernels.

Windows: output (u, v) covers input rows u s_h - p_h + i (i < k_h) and columns v s_w - p_w + j
(j < k_w). The output size is PyTorch's ``pooling_output_shape``:

    H_out = floor((H + 2 p_h - k_h) / s_h) + 1                  (``ceil_mode=False``)
    H_out = ceil((H + 2 p_h - k_h) / s_h) + 1, minus 1 if (H_out - 1) s_h >= H + p_h
                                                                 (``ceil_mode=True``: the last
                                                                 window starts inside the input
                                                                 or its left padding)

and 0 when no window fits (H + 2 p_h < k_h).

- max:  y = max over the window's in-bounds cells; ``idx`` is the flat position h W + w of the
  first maximum in row-major window order (PyTorch's ``return_indices``). A NaN counts as the
  maximum and, as in PyTorch's CPU kernel (``val > maxval || isnan(val)``), the *last* NaN of the
  window is kept. A window with no in-bounds cell (possible only when padding >= kernel, which
  the op layer refuses) gives y = -inf and idx = -1, and receives no gradient.
  dL/dx[n, c, idx] += dL/dy, so overlapping windows accumulate.
- avg:  y = (1 / D) sum over the window's in-bounds cells, with the divisor D of PyTorch's
  ``avg_pool2d``: ``count_include_pad=True`` counts the padding, D = (min(r + k_h, H + p_h) - r)
  (min(c + k_w, W + p_w) - c) for the window origin (r, c) (the full k_h k_w unless a ceil-mode
  window runs past the padding); ``count_include_pad=False`` (ONNX AveragePool's default) counts
  only in-bounds cells. dL/dx gets dL/dy / D at every in-bounds cell of the window. A window
  with D = 0 gives 0.
- adaptive avg: output cell u averages rows floor(u H / H_out) ... ceil((u + 1) H / H_out) - 1
  (likewise columns), as ``torch.nn.functional.adaptive_avg_pool2d``.

Every kernel is safe on its own: kernel >= 1, stride >= 1 and padding >= 0 are checked here
(``ValueError``), window bounds are clamped to the input before any read, and an empty window
reads nothing, whatever the padding.

Geometry arguments are (height, width) int pairs. Tests: ``tests/minnet/kernels/test_pool_kernels.py``
(window definitions, max-pool ties and NaNs, adjoint identities, Numba equals NumPy, PyTorch,
random geometry in a subprocess).
"""
from __future__ import annotations

import numpy as np

from minnet.kernels.backend import dispatch, jit

Pair = tuple[int, int]


def pool_output_size(size: int, kernel: int, stride: int, padding: int,
                     ceil_mode: bool = False) -> int:
    """Number of pooling windows along one axis (PyTorch's ``pooling_output_shape``; see the
    module docstring); 0 when no window fits."""
    span = size + 2 * padding - kernel
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def check_window(kernel_size: Pair, stride: Pair, padding: Pair) -> None:
    """Raise ValueError unless kernel_size >= 1, stride >= 1 and padding >= 0 in both axes."""
    for name, pair, minimum in (("kernel_size", kernel_size, 1), ("stride", stride, 1),
                                ("padding", padding, 0)):
        if len(pair) != 2 or min(pair) < minimum:
            raise ValueError(f"{name} must be a pair of ints >= {minimum}, got {tuple(pair)}")


def _out_hw(shape: tuple, kernel_size: Pair, stride: Pair, padding: Pair, ceil_mode: bool) -> Pair:
    check_window(kernel_size, stride, padding)
    return (pool_output_size(shape[2], kernel_size[0], stride[0], padding[0], ceil_mode),
            pool_output_size(shape[3], kernel_size[1], stride[1], padding[1], ceil_mode))


def adaptive_bounds(size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Window [start_u, end_u) per output u: start = floor(u size / out), end = ceil((u + 1) size / out)."""
    u = np.arange(out_size)
    return (u * size) // out_size, -(-(u + 1) * size // out_size)


def _strided_bounds(size: int, out_size: int, kernel: int, stride: int, padding: int):
    """In-bounds window [start, end) per output, clamped to [0, size] (empty if all padding)."""
    origin = np.arange(out_size, dtype=np.int64) * stride - padding
    return np.clip(origin, 0, size), np.clip(origin + kernel, 0, size)


def _avg_divisors(size: int, out_size: int, kernel: int, stride: int, padding: int,
                  count_include_pad: bool) -> np.ndarray:
    """Per-output count of the cells the average divides by, along one axis."""
    if count_include_pad:
        origin = np.arange(out_size, dtype=np.int64) * stride - padding
        return np.minimum(origin + kernel, size + padding) - origin
    start, end = _strided_bounds(size, out_size, kernel, stride, padding)
    return end - start


def _avg_scale(input_shape: tuple, out_hw: Pair, kernel_size: Pair, stride: Pair, padding: Pair,
               count_include_pad: bool) -> np.ndarray:
    """1 / D per output cell (0 where D = 0)."""
    rows, cols = (_avg_divisors(input_shape[2 + a], out_hw[a], kernel_size[a], stride[a],
                                padding[a], count_include_pad) for a in (0, 1))
    divisor = np.outer(rows, cols).astype(np.float64)
    return np.divide(1.0, divisor, out=np.zeros_like(divisor), where=divisor > 0)


# ---- NumPy references --------------------------------------------------------------------


def _window_cells(a: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair, out_hw: Pair,
                  fill) -> np.ndarray:
    """cells[..., i k_w + j, u, v] = apad[..., u s_h + i, v s_w + j]: a padded by p before and,
    after, by as much as the last window needs (``fill`` outside a)."""
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel_size, stride, padding, out_hw
    h, w = a.shape[-2:]
    after_h, after_w = max((oh - 1) * sh + kh - h - ph, 0), max((ow - 1) * sw + kw - w - pw, 0)
    apad = np.pad(a, ((0, 0),) * (a.ndim - 2) + ((ph, after_h), (pw, after_w)),
                  constant_values=fill)
    return np.stack([apad[..., i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
                     for i in range(kh) for j in range(kw)], axis=-3)


def max_pool2d_forward_numpy(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair,
                             ceil_mode: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(y, idx): window maxima (NaN propagates) and the flat input position of each window's
    first maximum (its last NaN if the maximum is NaN; -1 for a window of padding only)."""
    n, c, h, w = x.shape
    out_hw = _out_hw(x.shape, kernel_size, stride, padding, ceil_mode)
    if 0 in out_hw:
        return np.empty((n, c) + out_hw, x.dtype), np.empty((n, c) + out_hw, np.int64)
    values = _window_cells(x, kernel_size, stride, padding, out_hw, -np.inf)  # (N, C, K, oh, ow)
    position = _window_cells(np.arange(h * w).reshape(h, w), kernel_size, stride, padding, out_hw, -1)
    inside = position >= 0
    y = values.max(axis=2)  # NaN propagates
    is_nan = np.isnan(y)[:, :, None]
    hits = np.where(is_nan, np.isnan(values), values == y[:, :, None]) & inside
    k = hits.shape[2]
    chosen = np.where(is_nan[:, :, 0], k - 1 - hits[:, :, ::-1].argmax(axis=2), hits.argmax(axis=2))
    idx = np.take_along_axis(np.broadcast_to(position, hits.shape), chosen[:, :, None], axis=2)[:, :, 0]
    return y, np.where(hits.any(axis=2), idx, -1).astype(np.int64)


def max_pool2d_backward_numpy(grad: np.ndarray, indices: np.ndarray, input_shape: tuple) -> np.ndarray:
    """dL/dx[n, c, idx[n, c, u, v]] += dL/dy[n, c, u, v] (windows with idx = -1 are skipped)."""
    n, c, h, w = input_shape
    dx = np.zeros((n * c, h * w), dtype=grad.dtype)
    windows = indices.shape[2] * indices.shape[3]
    planes = np.broadcast_to(np.arange(n * c)[:, None], (n * c, windows))
    flat_idx, flat_grad = indices.reshape(n * c, windows), grad.reshape(n * c, windows)
    keep = flat_idx >= 0
    np.add.at(dx, (planes[keep], flat_idx[keep]), flat_grad[keep])
    return dx.reshape(input_shape)


def avg_pool2d_forward_numpy(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair,
                             ceil_mode: bool = False, count_include_pad: bool = True) -> np.ndarray:
    """y = (sum of the zero-padded window) / D."""
    out_hw = _out_hw(x.shape, kernel_size, stride, padding, ceil_mode)
    if 0 in out_hw:
        return np.empty(x.shape[:2] + out_hw, x.dtype)
    total = _window_cells(x, kernel_size, stride, padding, out_hw, 0).sum(axis=2)
    scale = _avg_scale(x.shape, out_hw, kernel_size, stride, padding, count_include_pad)
    return (total * scale).astype(x.dtype, copy=False)


def avg_pool2d_backward_numpy(grad: np.ndarray, input_shape: tuple, kernel_size: Pair,
                              stride: Pair, padding: Pair, ceil_mode: bool = False,
                              count_include_pad: bool = True) -> np.ndarray:
    """dL/dx[cell] += dL/dy[u, v] / D[u, v] for every in-bounds cell of window (u, v)."""
    n, c, h, w = input_shape
    dx = np.zeros(input_shape, dtype=grad.dtype)
    out_hw = grad.shape[2:]
    if 0 in out_hw:
        return dx
    scale = _avg_scale(input_shape, out_hw, kernel_size, stride, padding, count_include_pad)
    share = (grad * scale).astype(grad.dtype, copy=False)
    position = _window_cells(np.arange(h * w).reshape(h, w), kernel_size, stride, padding, out_hw, -1)
    flat = dx.reshape(n, c, h * w)
    for cells in position:  # one kernel tap at a time: (oh, ow) input positions
        keep = cells >= 0
        np.add.at(flat, (slice(None), slice(None), cells[keep]), share[:, :, keep])
    return dx


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
# Every loop reads only inside [row_start_u, row_end_u) x [col_start_v, col_end_v), bounds
# clamped to the input by the callers, so no attribute can make a kernel read out of bounds.


@jit
def _max_pool_loops(x, y, idx, row_start, row_end, col_start, col_end):
    n_batch, channels, h, w = x.shape
    oh, ow = y.shape[2:]
    for n in range(n_batch):
        for c in range(channels):
            plane = x[n, c]
            for u in range(oh):
                r0, r1 = row_start[u], row_end[u]
                for v in range(ow):
                    c0, c1 = col_start[v], col_end[v]
                    best = -np.inf
                    arg = r0 * w + c0 if r0 < r1 and c0 < c1 else -1
                    for ih in range(r0, r1):
                        for iw in range(c0, c1):
                            value = plane[ih, iw]
                            # PyTorch's rule: strict > keeps the first maximum, a NaN always
                            # wins, so the last NaN stays
                            if value > best or value != value:
                                best, arg = value, ih * w + iw
                    y[n, c, u, v] = best
                    idx[n, c, u, v] = arg


@jit
def _max_pool_backward_loops(grad, idx, dx):
    n_batch, channels, oh, ow = grad.shape
    size = dx.shape[2]
    for n in range(n_batch):
        for c in range(channels):
            for u in range(oh):
                for v in range(ow):
                    i = idx[n, c, u, v]
                    if 0 <= i < size:
                        dx[n, c, i] += grad[n, c, u, v]


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


def _pool_bounds(input_shape: tuple, out_hw: Pair, kernel_size: Pair, stride: Pair, padding: Pair):
    return (*_strided_bounds(input_shape[2], out_hw[0], kernel_size[0], stride[0], padding[0]),
            *_strided_bounds(input_shape[3], out_hw[1], kernel_size[1], stride[1], padding[1]))


def _adaptive_windows(input_shape: tuple, out_hw: Pair):
    rows, cols = adaptive_bounds(input_shape[2], out_hw[0]), adaptive_bounds(input_shape[3], out_hw[1])
    scale = 1.0 / np.outer(rows[1] - rows[0], cols[1] - cols[0])
    return (*rows, *cols, scale)


def max_pool2d_forward_numba(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair,
                             ceil_mode: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Numba twin of ``max_pool2d_forward_numpy``."""
    out_hw = _out_hw(x.shape, kernel_size, stride, padding, ceil_mode)
    y = np.empty(x.shape[:2] + out_hw, dtype=x.dtype)
    idx = np.empty(y.shape, dtype=np.int64)
    bounds = _pool_bounds(x.shape, out_hw, kernel_size, stride, padding)
    _max_pool_loops(np.ascontiguousarray(x), y, idx, *bounds)
    return y, idx


def max_pool2d_backward_numba(grad: np.ndarray, indices: np.ndarray, input_shape: tuple) -> np.ndarray:
    """Numba twin of ``max_pool2d_backward_numpy``."""
    n, c, h, w = input_shape
    dx = np.zeros((n, c, h * w), dtype=grad.dtype)
    _max_pool_backward_loops(np.ascontiguousarray(grad), np.ascontiguousarray(indices), dx)
    return dx.reshape(input_shape)


def avg_pool2d_forward_numba(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair,
                             ceil_mode: bool = False, count_include_pad: bool = True) -> np.ndarray:
    """Numba twin of ``avg_pool2d_forward_numpy``."""
    out_hw = _out_hw(x.shape, kernel_size, stride, padding, ceil_mode)
    y = np.empty(x.shape[:2] + out_hw, dtype=x.dtype)
    scale = _avg_scale(x.shape, out_hw, kernel_size, stride, padding, count_include_pad)
    _window_sum_loops(np.ascontiguousarray(x), y,
                      *_pool_bounds(x.shape, out_hw, kernel_size, stride, padding), scale)
    return y


def avg_pool2d_backward_numba(grad: np.ndarray, input_shape: tuple, kernel_size: Pair,
                              stride: Pair, padding: Pair, ceil_mode: bool = False,
                              count_include_pad: bool = True) -> np.ndarray:
    """Numba twin of ``avg_pool2d_backward_numpy``."""
    dx = np.zeros(input_shape, dtype=grad.dtype)
    out_hw = grad.shape[2:]
    check_window(kernel_size, stride, padding)
    scale = _avg_scale(input_shape, out_hw, kernel_size, stride, padding, count_include_pad)
    _window_spread_loops(np.ascontiguousarray(grad), dx,
                         *_pool_bounds(input_shape, out_hw, kernel_size, stride, padding), scale)
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
