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

Pooling (max, average with zero padding counted) follows ``minnet.kernels.pool`` without the
argmax indices that only training needs, as one vectorised update per window tap. ``relu`` flags apply max(·, 0) in the same pass.
Tests: ``tests/optim/graph/test_graph_kernels.py`` (every algorithm and pooling kernel equals
minnet's op, Numba equals NumPy).
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from minnet.kernels.backend import dispatch, jit
from minnet.kernels.conv import conv2d_forward
from minnet.kernels.im2col import Pair, im2col

__all__ = ["conv2d_direct", "conv2d_im2col", "conv2d_pointwise", "conv2d_fft", "conv2d_minnet",
           "fft_weight",
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


def conv2d_im2col(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: Pair,
                  padding: Pair, dilation: Pair, groups: int, relu: bool,
                  out: np.ndarray) -> np.ndarray:
    """Y[n, g] = W[g] · im2col(x)[n, g] (one batched GEMM), then bias and ReLU in place."""
    n, o, oh, ow = out.shape
    cols = im2col(x, w.shape[2:], stride, padding, dilation)
    np.matmul(w.reshape(groups, o // groups, -1), cols.reshape(n, groups, -1, oh * ow),
              out=out.reshape(n, groups, o // groups, oh * ow))
    _epilogue(out, bias, relu)
    return out


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

# ---- pooling -----------------------------------------------------------------------------


def _taps(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair, fill: float,
          out_hw: tuple[int, int]):
    """The k_h k_w strided views xpad[:, :, i::s_h, j::s_w] cropped to the output size."""
    xpad = _pad(x, padding, fill)
    (oh, ow), (sh, sw) = out_hw, stride
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            yield xpad[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def max_pool2d_into(x: np.ndarray, kernel_size: Pair, stride: Pair, padding: Pair,
                    out: np.ndarray) -> np.ndarray:
    """out = max over window taps, padding counting as -inf (NaN propagates, as np.maximum):
    one vectorised maximum per tap instead of one loop per window."""
    taps = _taps(x, kernel_size, stride, padding, -np.inf, out.shape[2:])
    np.copyto(out, next(taps))
    for view in taps:
        np.maximum(out, view, out=out)
    return out


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
