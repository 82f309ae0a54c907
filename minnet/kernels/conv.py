"""2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``) and its two gradients.

With x (N, C_in, H, W), weight w (C_out, C_in / G, k_h, k_w) and G groups, output channel o of
group g = o // (C_out / G) sees input channels g C_in / G ... (g + 1) C_in / G - 1:

    y[n, o, u, v] = sum_{c, i, j} w[o, c, i, j] xpad[n, g C_in / G + c, u s_h + i d_h, v s_w + j d_w]

In column form (``minnet.kernels.im2col``), per sample and group, Y = W X with
X = im2col(x) ((C_in / G) k_h k_w, H_out W_out) and W the weight as a (C_out / G, (C_in / G) k_h k_w)
matrix. Its adjoints give the gradients for an upstream gradient G_y:

    dL/dW = sum_n G_y[n] X[n]^T,      dL/dx = col2im(W^T G_y).

Bias is added by the op (``minnet.ops.conv``). Geometry arguments are (height, width) int pairs.

The forward product has three algorithms (``CONV_ALGORITHMS``): ``"im2col"`` (the column
matrix and a batched matrix product, any backend), ``"direct"`` and ``"indirect"``
(``minnet.kernels.conv_direct``: register-tiled kernels reading the padded input in place, no
column matrix; Numba backend on an AVX-512 host). ``applicable`` says which can run a shape and
``choose_algorithm`` picks the applicable one of least ``conv_cost``, per shape, which is what
``conv2d_forward`` runs. Without a column matrix, the forward returns a ``Columns`` that
computes im2col(x) only if the weight gradient asks for it.
Tests: ``tests/minnet/kernels/test_conv_kernels.py`` (brute-force definition, adjoint identities,
Numba equals NumPy, PyTorch) and ``tests/minnet/kernels/test_conv_direct.py`` (each algorithm
against the definition, the registry and the choice).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minnet.kernels import backend, conv_direct
from minnet.kernels.im2col import Pair, col2im, im2col, output_size


def _grouped(a: np.ndarray, n: int, groups: int) -> np.ndarray:
    """View (N, C, P) as (N, G, C / G, P)."""
    return a.reshape(n, groups, -1, a.shape[-1])


def conv2d_im2col(x: np.ndarray, weight: np.ndarray, stride: Pair, padding: Pair,
                  dilation: Pair, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """y = W im2col(x) per sample and group; returns ``(y, cols)``."""
    n = x.shape[0]
    c_out, _, kh, kw = weight.shape
    oh = output_size(x.shape[2], kh, stride[0], padding[0], dilation[0])
    ow = output_size(x.shape[3], kw, stride[1], padding[1], dilation[1])
    cols = im2col(x, (kh, kw), stride, padding, dilation)
    w = weight.reshape(groups, c_out // groups, -1)
    y = np.matmul(w, _grouped(cols, n, groups))
    return y.reshape(n, c_out, oh, ow), cols


class Columns(NamedTuple):
    """im2col(x) not yet computed: what a forward without a column matrix hands to
    ``conv2d_weight_grad`` (``materialize`` computes it)."""
    x: np.ndarray
    kernel_size: Pair
    stride: Pair
    padding: Pair
    dilation: Pair

    def materialize(self) -> np.ndarray:
        return im2col(self.x, self.kernel_size, self.stride, self.padding, self.dilation)


def _tile_algorithm(name: str):
    fast = {"direct": conv_direct.conv2d_direct_tiles,
            "indirect": conv_direct.conv2d_indirect_tiles}[name]

    def run(x, weight, stride, padding, dilation, groups):
        y = fast(x, weight, stride, padding, dilation, groups)
        return y, Columns(x, weight.shape[2:], stride, padding, dilation)

    run.__name__ = f"conv2d_{name}"
    run.__doc__ = f"``conv_direct.conv2d_{name}_tiles``; returns ``(y, Columns)``."
    return run


# algorithm name -> forward(x, weight, stride, padding, dilation, groups) -> (y, cols)
CONV_ALGORITHMS = {"im2col": conv2d_im2col, "direct": _tile_algorithm("direct"),
                   "indirect": _tile_algorithm("indirect")}


def applicable(algorithm: str, weight_shape: tuple, stride: Pair, padding: Pair,
               dilation: Pair, groups: int, dtype=np.float32) -> bool:
    """Whether ``CONV_ALGORITHMS[algorithm]`` can run this shape here: ``"im2col"`` always;
    ``"direct"`` (stride 1) and ``"indirect"`` only for float32/float64 under the Numba backend
    on an AVX-512 host."""
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {sorted(CONV_ALGORITHMS)}, got {algorithm!r}")
    if algorithm == "im2col":
        return True
    if not (conv_direct.HAVE_TILES and backend.get_backend() == "numba"
            and np.dtype(dtype) in (np.float32, np.float64)):
        return False
    return algorithm == "indirect" or tuple(stride) == (1, 1)


def choose_algorithm(x_shape: tuple, weight_shape: tuple, stride: Pair, padding: Pair,
                     dilation: Pair, groups: int, dtype=np.float32) -> str:
    """The applicable algorithm of least ``conv_direct.conv_cost`` for this shape."""
    names = [a for a in CONV_ALGORITHMS
             if applicable(a, weight_shape, stride, padding, dilation, groups, dtype)]
    return min(names, key=lambda a: conv_direct.conv_cost(a, x_shape, weight_shape, stride,
                                                          padding, dilation, groups, dtype))


def conv2d_forward(x: np.ndarray, weight: np.ndarray, stride: Pair, padding: Pair,
                   dilation: Pair, groups: int) -> tuple[np.ndarray, np.ndarray | Columns]:
    """y = conv2d(x, w) without bias, by ``choose_algorithm``'s algorithm. Returns
    ``(y, cols)``; ``cols`` is im2col(x) of shape (N, C_in k_h k_w, H_out W_out), or a
    ``Columns`` that computes it, as ``conv2d_weight_grad`` needs."""
    algorithm = choose_algorithm(x.shape, weight.shape, stride, padding, dilation, groups,
                                 x.dtype)
    return CONV_ALGORITHMS[algorithm](x, weight, stride, padding, dilation, groups)


def conv2d_input_grad(grad: np.ndarray, weight: np.ndarray, input_shape: tuple, stride: Pair,
                      padding: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """dL/dx = col2im(W^T G_y), per sample and group."""
    n, c_out = grad.shape[:2]
    w = weight.reshape(groups, c_out // groups, -1)
    g = _grouped(grad.reshape(n, c_out, -1), n, groups)
    cols = np.matmul(w.transpose(0, 2, 1), g)
    return col2im(cols.reshape(n, -1, g.shape[-1]), input_shape, weight.shape[2:], stride,
                  padding, dilation)


def conv2d_weight_grad(grad: np.ndarray, cols: np.ndarray, weight_shape: tuple,
                       groups: int) -> np.ndarray:
    """dL/dW = sum_n G_y[n] X[n]^T, per group; ``cols`` is the X returned by the forward
    (computed here if the forward returned a ``Columns``).

    Computed as the transpose of sum_n X[n] G_y[n]^T, the product shape BLAS runs faster here.
    """
    if isinstance(cols, Columns):
        cols = cols.materialize()
    n, c_out = grad.shape[:2]
    g = _grouped(grad.reshape(n, c_out, -1), n, groups)
    dw_t = np.matmul(_grouped(cols, n, groups), g.transpose(0, 1, 3, 2)).sum(axis=0)
    return dw_t.transpose(0, 2, 1).reshape(weight_shape)
