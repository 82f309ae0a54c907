"""Inference kernels of the compiled executor, each writing into a preallocated output.

Convolution has four algorithms, all computing (with xpad the zero-padded input, g the group
of output channel o)

    y[n, o, u, v] = b[o] + sum_{c, i, j} w[o, c, i, j] xpad[n, g C/G + c, u s_h + i d_h, v s_w + j d_w]

- ``im2col``: Y = W · im2col(x) per sample and group, one GEMM (Chellapilla et al. 2006);
- ``direct``: the sum above as loops, no workspace (NumPy reference: one tensor contraction
  per kernel tap; Numba twin: loops accumulating all output channels of a position at once);
- ``pointwise``: a 1x1 kernel with stride 1 and no padding is a plain matrix product
  Y[n] = W X[n] with X[n] the input as a (C, H W) matrix;
- ``fft``: correlation theorem, y = IFFT(FFT(xpad) · FFT(flip(w))) restricted to the valid
  positions (Mathieu et al. 2014), for groups = 1 and dilation 1;
- ``minnet``: eager minnet's own choice for the shape (``minnet.kernels.conv``: its register-
  tiled direct and indirect kernels, or im2col). It is not among the cost model's options (no
  calibration rows); the compiled training step (``optim.graph.training``) runs it.

The Numba twin of ``im2col`` runs a whole batch in one call: per sample, pad, extract the
columns (``minnet.kernels.im2col``'s loops), GEMM by BLAS into ``out`` and add bias / ReLU in
one pass, with workspaces of one sample. ``linear_into`` is y = x W^T + b (ReLU) the same way.

Pooling (max, average with zero padding counted) follows ``minnet.kernels.pool`` without the
argmax indices that only training needs: in NumPy one vectorised update per window tap, in
Numba one pass over the output (2x2 stride-2 windows unrolled). ``relu`` flags apply max(·, 0)
in the same pass.
Tests: ``tests/optim/graph/test_graph_kernels.py`` (every algorithm and pooling kernel equals
minnet's op, each Numba twin equals its NumPy reference).
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from minnet.kernels.backend import dispatch, jit
from minnet.kernels.conv import conv2d_forward
from minnet.kernels.im2col import Pair, im2col, im2col_loops

__all__ = ["conv2d_direct", "conv2d_im2col", "conv2d_pointwise", "conv2d_fft", "conv2d_minnet",
           "fft_weight", "linear_into",
           "max_pool2d_into", "avg_pool2d_into", "CONV_ALGORITHMS", "conv_algorithms"]


def _pad(x: np.ndarray, padding: Pair, value: float = 0.0) -> np.ndarray:
    ph, pw = padding
    if ph == pw == 0:
        return np.ascontiguousarray(x)
    n, c, h, w = x.shape
    xpad = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)  # np.pad is ~10x slower
    xpad[:, :, ph:ph + h, pw:pw + w] = x
    return xpad


def _epilogue(out: np.ndarray, bias: np.ndarray | None, relu: bool) -> None:
    if bias is not None:
        out += bias.reshape(-1, 1, 1)
    if relu:
        np.maximum(out, 0, out=out)


# ---- direct convolution ------------------------------------------------------------------


def conv2d_direct_numpy(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: Pair,
                        padding: Pair, dilation: Pair, groups: int, relu: bool,
                        out: np.ndarray) -> np.ndarray:
    """y = sum over taps (i, j) of W[:, :, i, j] · xpad shifted by (i d_h, j d_w), per group."""
    xpad = _pad(x, padding)
    n, o, oh, ow = out.shape
    og, cg = o // groups, w.shape[1]
    out[...] = 0
    for g in range(groups):
        xs, ys = xpad[:, g * cg:(g + 1) * cg], out[:, g * og:(g + 1) * og]
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                rows = slice(i * dilation[0], i * dilation[0] + stride[0] * (oh - 1) + 1, stride[0])
                cols = slice(j * dilation[1], j * dilation[1] + stride[1] * (ow - 1) + 1, stride[1])
                ys += np.einsum("oc,nchw->nohw", w[g * og:(g + 1) * og, :, i, j], xs[:, :, rows, cols])
    _epilogue(out, bias, relu)
    return out


@jit(fastmath=True)
def _conv_direct_loops(xpad, wt, bias, out, sh, sw, dh, dw):
    """Output-stationary: for each output position, accumulate a group's channels together
    (the innermost loop runs over contiguous output channels of ``wt`` (G, C/G, kh, kw, O/G))."""
    n_batch, n_out, oh, ow = out.shape
    groups, cg, kh, kw, og = wt.shape
    acc = np.empty(og, dtype=out.dtype)
    for n in range(n_batch):
        for g in range(groups):
            for u in range(oh):
                for v in range(ow):
                    acc[:] = bias[g * og:(g + 1) * og]
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                xv = xpad[n, g * cg + c, u * sh + i * dh, v * sw + j * dw]
                                taps = wt[g, c, i, j]
                                for o in range(og):
                                    acc[o] += xv * taps[o]
                    for o in range(og):
                        out[n, g * og + o, u, v] = acc[o]


def conv2d_direct_numba(x, w, bias, stride, padding, dilation, groups, relu, out):
    """Numba twin of ``conv2d_direct_numpy``."""
    o, cg, kh, kw = w.shape
    wt = np.ascontiguousarray(w.reshape(groups, o // groups, cg, kh, kw).transpose(0, 2, 3, 4, 1))
    b = np.zeros(o, dtype=out.dtype) if bias is None else bias
    _conv_direct_loops(_pad(x, padding), wt, b, out, *stride, *dilation)
    _epilogue(out, None, relu)
    return out


conv2d_direct = dispatch(conv2d_direct_numpy, conv2d_direct_numba)


def conv2d_minnet(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: Pair,
                  padding: Pair, dilation: Pair, groups: int, relu: bool,
                  out: np.ndarray) -> np.ndarray:
    """``minnet.kernels.conv.conv2d_forward`` (its per-shape algorithm), then bias and ReLU."""
    out[...] = conv2d_forward(x, w, stride, padding, dilation, groups)[0]
    _epilogue(out, bias, relu)
    return out

# ---- GEMM-based convolution ----------------------------------------------------------------


def conv2d_im2col_numpy(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: Pair,
                        padding: Pair, dilation: Pair, groups: int, relu: bool,
                        out: np.ndarray) -> np.ndarray:
    """Y[n, g] = W[g] · im2col(x)[n, g] (one batched GEMM), then bias and ReLU in place."""
    n, o, oh, ow = out.shape
    cols = im2col(x, w.shape[2:], stride, padding, dilation)
    np.matmul(w.reshape(groups, o // groups, -1), cols.reshape(n, groups, -1, oh * ow),
              out=out.reshape(n, groups, o // groups, oh * ow))
    _epilogue(out, bias, relu)
    return out


@jit
def _im2col_gemm_loops(x, w3, bias, kh, kw, sh, sw, ph, pw, dh, dw, relu, out):
    """Per sample: pad, im2col (``minnet.kernels.im2col``'s loops), out[n, g] = W[g] · cols[g]
    by BLAS, bias and ReLU; the workspaces hold one sample, so they stay in cache."""
    n_batch, channels, height, width = x.shape
    groups, og, kdim = w3.shape
    oh, ow = out.shape[2], out.shape[3]
    xpad = np.zeros((1, channels, height + 2 * ph, width + 2 * pw), dtype=x.dtype)
    cols = np.empty((1, channels, kh, kw, oh, ow), dtype=x.dtype)
    cols3 = cols.reshape(groups, kdim, oh * ow)
    for n in range(n_batch):
        xpad[0, :, ph:ph + height, pw:pw + width] = x[n]
        im2col_loops(xpad, cols, sh, sw, dh, dw)
        y = out[n].reshape(groups, og, oh * ow)
        for g in range(groups):
            np.dot(w3[g], cols3[g], y[g])
            if bias is not None or relu:
                for o in range(og):
                    b = bias[g * og + o] if bias is not None else 0
                    for p in range(oh * ow):
                        v = y[g, o, p] + b
                        y[g, o, p] = 0 if relu and v < 0 else v


def conv2d_im2col_numba(x, w, bias, stride, padding, dilation, groups, relu, out):
    """Numba twin of ``conv2d_im2col_numpy``: one call per batch, the GEMM by BLAS (``np.dot``
    with ``out``), bias and ReLU in the same pass over Y."""
    if out.dtype not in (np.float32, np.float64) or x.dtype != out.dtype:
        return conv2d_im2col_numpy(x, w, bias, stride, padding, dilation, groups, relu, out)
    o, cg, kh, kw = w.shape
    w3 = np.ascontiguousarray(w, dtype=out.dtype).reshape(groups, o // groups, cg * kh * kw)
    _im2col_gemm_loops(np.ascontiguousarray(x), w3, bias, kh, kw, *stride, *padding, *dilation,
                       relu, out)
    return out


conv2d_im2col = dispatch(conv2d_im2col_numpy, conv2d_im2col_numba)


def conv2d_pointwise(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: Pair,
                     padding: Pair, dilation: Pair, groups: int, relu: bool,
                     out: np.ndarray) -> np.ndarray:
    """1x1, stride 1, no padding, groups 1: Y[n] = W · X[n] with X[n] of shape (C, H W)."""
    n, o = out.shape[:2]
    np.matmul(w.reshape(o, -1), x.reshape(n, x.shape[1], -1), out=out.reshape(n, o, -1))
    _epilogue(out, bias, relu)
    return out


def _fft_size(x_shape: tuple, padding: Pair) -> tuple[int, int]:
    return x_shape[2] + 2 * padding[0], x_shape[3] + 2 * padding[1]


def fft_weight(w: np.ndarray, x_shape: tuple, padding: Pair) -> np.ndarray:
    """FFT(flip(w)) on the padded input's grid, arranged (H', W', C, O) for the batched product."""
    spectrum = scipy.fft.rfft2(w[:, :, ::-1, ::-1], s=_fft_size(x_shape, padding))
    return np.ascontiguousarray(spectrum.transpose(2, 3, 1, 0))


def conv2d_fft(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: Pair,
               padding: Pair, dilation: Pair, groups: int, relu: bool, out: np.ndarray,
               w_fft: np.ndarray | None = None) -> np.ndarray:
    """Correlation by FFT: circular convolution of xpad with flip(w) on xpad's grid equals the
    linear one at indices >= k - 1, where it is the correlation at u = index - (k - 1)."""
    kh, kw = w.shape[2:]
    size = _fft_size(x.shape, padding)
    if w_fft is None:
        w_fft = fft_weight(w, x.shape, padding)
    spectrum = scipy.fft.rfft2(_pad(x, padding), s=size).transpose(2, 3, 0, 1)  # (H', W', N, C)
    full = scipy.fft.irfft2(np.matmul(spectrum, w_fft).transpose(2, 3, 0, 1), s=size)
    oh, ow = out.shape[2:]
    out[...] = full[:, :, kh - 1:kh - 1 + stride[0] * (oh - 1) + 1:stride[0],
                    kw - 1:kw - 1 + stride[1] * (ow - 1) + 1:stride[1]]
    _epilogue(out, bias, relu)
    return out


CONV_ALGORITHMS = {"im2col": conv2d_im2col, "direct": conv2d_direct,
                   "pointwise": conv2d_pointwise, "fft": conv2d_fft, "minnet": conv2d_minnet}


def conv_algorithms(w_shape: tuple, stride: Pair, padding: Pair, dilation: Pair,
                    groups: int) -> list[str]:
    """The algorithms that compute a convolution of this geometry."""
    names = ["im2col", "direct"]
    if w_shape[2:] == (1, 1) and stride == (1, 1) and padding == (0, 0) and groups == 1:
        names.append("pointwise")
    if groups == 1 and dilation == (1, 1):
        names.append("fft")
    return names

# ---- fully connected --------------------------------------------------------------------


def linear_into_numpy(x: np.ndarray, w_t: np.ndarray, bias: np.ndarray | None, relu: bool,
                      out: np.ndarray) -> np.ndarray:
    """out = x W^T + b, then max(·, 0) if ``relu``; ``w_t`` is W^T packed (in, out)."""
    np.matmul(x, w_t, out=out)
    if bias is not None:
        np.add(out, bias, out=out)
    if relu:
        np.maximum(out, 0, out=out)
    return out


@jit
def _linear_loops(x2, w_t, bias, relu, out2):
    np.dot(x2, w_t, out2)
    if bias is not None or relu:
        for n in range(out2.shape[0]):
            for o in range(out2.shape[1]):
                v = out2[n, o] + (bias[o] if bias is not None else 0)
                out2[n, o] = 0 if relu and v < 0 else v


def linear_into_numba(x, w_t, bias, relu, out):
    """Numba twin of ``linear_into_numpy``: the GEMM by BLAS and the epilogue in one call."""
    if (out.dtype not in (np.float32, np.float64) or x.dtype != out.dtype
            or w_t.dtype != out.dtype or not (x.flags.c_contiguous and w_t.flags.c_contiguous)):
        return linear_into_numpy(x, w_t, bias, relu, out)
    if x.ndim != 2:
        x, out = x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])
    _linear_loops(x, w_t, bias, relu, out)
    return out


linear_into = dispatch(linear_into_numpy, linear_into_numba)

# ---- pooling -----------------------------------------------------------------------------


def _taps(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair, fill: float,
          out_hw: tuple[int, int]):
    """The k_h k_w strided views xpad[:, :, i::s_h, j::s_w] cropped to the output size."""
    xpad = _pad(x, padding, fill)
    (oh, ow), (sh, sw) = out_hw, stride
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            yield xpad[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def max_pool2d_into_numpy(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair,
                          out: np.ndarray) -> np.ndarray:
    """out = max over window taps, padding counting as -inf (NaN propagates, as np.maximum):
    one vectorised maximum per tap instead of one loop per window."""
    taps = _taps(x, kernel_size, stride, padding, -np.inf, out.shape[2:])
    np.copyto(out, next(taps))
    for view in taps:
        np.maximum(out, view, out=out)
    return out


@jit
def _keep_max(a, b):
    """np.maximum's rule: a if a >= b or a is NaN, else b."""
    return a if a >= b or a != a else b


@jit
def _max_pool_loops(x, kh, kw, sh, sw, ph, pw, out):
    """The reference's tap order and rule, tap by tap over one output row."""
    n_batch, channels, height, width = x.shape
    oh, ow = out.shape[2], out.shape[3]
    sw = max(sw, 1)
    for n in range(n_batch):
        for c in range(channels):
            for u in range(oh):
                out[n, c, u, :] = -np.inf
                for i in range(kh):
                    r = u * sh + i - ph
                    if r < 0 or r >= height:
                        continue
                    for j in range(kw):
                        offset = j - pw
                        v_lo = 0 if offset >= 0 else (sw - 1 - offset) // sw
                        last = width - 1 - offset  # the largest readable v sw
                        v_hi = 0 if last < 0 else min(ow, last // sw + 1)
                        for v in range(v_lo, v_hi):  # max(., 0): no negative-index wraparound
                            value = x[n, c, r, max(v * sw + offset, 0)]
                            out[n, c, u, v] = _keep_max(out[n, c, u, v], value)


@jit
def _max_pool_2x2_loops(x, out):
    """The 2x2, stride 2, unpadded case (most CNNs' pooling), its four taps unrolled."""
    n_batch, channels, oh, ow = out.shape
    for n in range(n_batch):
        for c in range(channels):
            for u in range(oh):
                for v in range(ow):
                    best = _keep_max(-np.inf, x[n, c, 2 * u, 2 * v])
                    best = _keep_max(best, x[n, c, 2 * u, 2 * v + 1])
                    best = _keep_max(best, x[n, c, 2 * u + 1, 2 * v])
                    out[n, c, u, v] = _keep_max(best, x[n, c, 2 * u + 1, 2 * v + 1])


def max_pool2d_into_numba(x, kernel_size, stride, padding, out):
    """Numba twin of ``max_pool2d_into_numpy``: one pass over the output, no padded copy."""
    x = np.ascontiguousarray(x)
    if tuple(kernel_size) == tuple(stride) == (2, 2) and tuple(padding) == (0, 0):
        _max_pool_2x2_loops(x, out)
    else:
        _max_pool_loops(x, *kernel_size, *stride, *padding, out)
    return out


max_pool2d_into = dispatch(max_pool2d_into_numpy, max_pool2d_into_numba)


def avg_pool2d_into(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair,
                    out: np.ndarray) -> np.ndarray:
    """out = (1 / (k_h k_w)) sum over window taps of the zero-padded input
    (count_include_pad=True)."""
    taps = _taps(x, kernel_size, stride, padding, 0.0, out.shape[2:])
    np.copyto(out, next(taps))
    for view in taps:
        np.add(out, view, out=out)
    out *= out.dtype.type(1 / (kernel_size[0] * kernel_size[1]))
    return out
