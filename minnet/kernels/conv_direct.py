r"""Convolution without a column matrix: the direct (implicit-GEMM) and indirect algorithms.

Both compute the definition of ``minnet.kernels.conv`` (cross-correlation, groups G),

.. math::
    y[n, o, u, v] = \sum_{c, i, j} w[o, c, i, j]\,
        x_{pad}[n, g C_g + c, u s_h + i d_h, v s_w + j d_w],

as register-tiled rank-1 updates (``minnet.kernels.microkernel``) that read the zero-padded
input in place, one depth step per kernel tap :math:`q = (c, i, j)` at the fixed offset
:math:`\mathrm{off}_q = c H_p W_p + i d_h W_p + j d_w` from an output's window origin:

- **direct** (vector lanes = output positions; stride 1): an output at flat padded position
  :math:`p = u W_p + v` reads :math:`x_{pad}` at :math:`p + \mathrm{off}_q`, so 16 neighbouring
  outputs read 16 neighbouring inputs (one vector load) and every weight is broadcast. The
  :math:`W_p - W_{out}` positions per row that wrap around are computed and dropped. Suits few
  output channels (LeNet-5's first layer);
- **indirect** (vector lanes = output channels; any stride and dilation): a table of window
  origins, one per output position, and the weights as a (C_g k_h k_w, C_out) matrix; each
  input value is broadcast against 16 channels at once (Dukhan 2019, "The indirect convolution
  algorithm", with the indirection table reduced to one origin per output thanks to the
  padded copy). Suits 16 or more output channels.

``conv2d_taps_numpy`` is the NumPy reference for both: the sum over taps of a channel
contraction with the strided input window. The fast paths need Numba and AVX-512
(``microkernel.HAVE_AVX512``). ``conv_cost`` counts the lane-multiply-adds each algorithm
spends, waste included, for a cost model to choose among them per shape
(``minnet.kernels.conv.CONV_ALGORITHMS``).
Tests: ``tests/minnet/kernels/test_conv_direct.py``.
"""
from __future__ import annotations

import numpy as np

from minnet.kernels.im2col import Pair, output_size
from minnet.kernels.microkernel import HAVE_AVX512, LANES, ROWS, run_tiles


def _out_hw(x_shape: tuple, w_shape: tuple, stride: Pair, padding: Pair,
            dilation: Pair) -> Pair:
    return tuple(output_size(x_shape[2 + a], w_shape[2 + a], stride[a], padding[a], dilation[a])
                 for a in (0, 1))


def conv2d_taps_numpy(x: np.ndarray, weight: np.ndarray, stride: Pair, padding: Pair,
                      dilation: Pair, groups: int) -> np.ndarray:
    """Reference: y = sum over taps (i, j) of w[:, :, i, j] contracted with the input window
    x_pad[:, :, i d_h :: s_h, j d_w :: s_w], per group."""
    n, c_in = x.shape[:2]
    c_out, c_group, kh, kw = weight.shape
    oh, ow = _out_hw(x.shape, weight.shape, stride, padding, dilation)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))).reshape(n, groups, c_group,
                                                                   *np.add(x.shape[2:],
                                                                           (2 * ph, 2 * pw)))
    w = weight.reshape(groups, c_out // groups, c_group, kh, kw)
    y = np.zeros((n, groups, c_out // groups, oh, ow), dtype=np.result_type(x, weight))
    for i in range(kh):
        for j in range(kw):
            window = xpad[..., i * dh:i * dh + sh * (oh - 1) + 1:sh,
                          j * dw:j * dw + sw * (ow - 1) + 1:sw]
            y += np.einsum("goc,ngchw->ngohw", w[..., i, j], window)
    return y.reshape(n, c_out, oh, ow)


def tap_offsets(c_group: int, kh: int, kw: int, hp: int, wp: int, dilation: Pair) -> np.ndarray:
    """off[(c, i, j)] = c H_p W_p + i d_h W_p + j d_w, in the weight's (c, i, j) order."""
    c = np.arange(c_group)[:, None, None] * (hp * wp)
    i = np.arange(kh)[None, :, None] * (dilation[0] * wp)
    j = np.arange(kw)[None, None, :] * dilation[1]
    return (c + i + j).reshape(-1).astype(np.int64)


def _padded_flat(x: np.ndarray, padding: Pair, slack: int) -> np.ndarray:
    """x zero-padded, flattened, with ``slack`` zeros after it (read by dropped positions)."""
    n, c, h, w = x.shape
    ph, pw = padding
    flat = np.zeros(n * c * (h + 2 * ph) * (w + 2 * pw) + slack, dtype=x.dtype)
    flat[:n * c * (h + 2 * ph) * (w + 2 * pw)].reshape(n, c, h + 2 * ph, w + 2 * pw)[
        :, :, ph:ph + h, pw:pw + w] = x
    return flat


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _direct_vectors(positions: int, lanes: int) -> int:
    """Vectors per tile (1-4) that pad ``positions`` the least (ties: more vectors)."""
    return min(range(4, 0, -1), key=lambda v: _round_up(positions, lanes * v))


def conv2d_direct_tiles(x: np.ndarray, weight: np.ndarray, stride: Pair, padding: Pair,
                        dilation: Pair, groups: int) -> np.ndarray:
    """Fast path of the direct algorithm (stride 1): lanes are flat padded positions."""
    if stride != (1, 1):
        raise ValueError(f"the direct algorithm needs stride (1, 1), got {stride}")
    n, c_in, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    oh, ow = _out_hw(x.shape, weight.shape, stride, padding, dilation)
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    kind = "f32" if x.dtype == np.float32 else "f64"
    lanes, rows_per_tile = LANES[kind], ROWS[kind]
    vectors = _direct_vectors(oh * wp, lanes)
    positions = _round_up(oh * wp, lanes * vectors)
    per_group = c_out // groups
    rows = _round_up(per_group, rows_per_tile)
    offsets = tap_offsets(c_group, kh, kw, hp, wp, dilation)
    sample = c_in * hp * wp
    xflat = _padded_flat(x, padding, positions + int(offsets.max()))
    # weights per group as (rows, K) matrices, zero rows past C_out / G
    wmat = np.zeros((groups, rows, c_group * kh * kw), dtype=x.dtype)
    wmat[:, :per_group] = weight.reshape(groups, per_group, -1)
    c = np.empty((n * groups * rows, positions), dtype=x.dtype)
    starts = np.arange(0, positions, lanes * vectors)
    samples = np.repeat(np.arange(n), starts.size)
    starts = np.tile(starts, n)
    depth = np.arange(c_group * kh * kw, dtype=np.int64)
    for g in range(groups):
        run_tiles(wmat[g].reshape(-1), np.arange(rows, dtype=np.int64) * depth.size, depth,
                  xflat, samples * sample + g * c_group * hp * wp + starts, offsets,
                  np.full(starts.size, vectors), (samples * groups + g) * rows, starts, c)
    y = c.reshape(n, groups, rows, positions)[:, :, :per_group, :oh * wp]
    return np.ascontiguousarray(y.reshape(n, c_out, oh, wp)[..., :ow])


def conv2d_indirect_tiles(x: np.ndarray, weight: np.ndarray, stride: Pair, padding: Pair,
                          dilation: Pair, groups: int) -> np.ndarray:
    """Fast path of the indirect algorithm: lanes are output channels, rows output positions
    addressed through their window origins."""
    n, c_in, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    oh, ow = _out_hw(x.shape, weight.shape, stride, padding, dilation)
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    kind = "f32" if x.dtype == np.float32 else "f64"
    lanes, rows_per_tile = LANES[kind], ROWS[kind]
    per_group = c_out // groups
    width = _round_up(per_group, lanes)
    offsets = tap_offsets(c_group, kh, kw, hp, wp, dilation)
    xflat = _padded_flat(x, padding, 0)
    origins = (np.arange(n)[:, None, None] * (c_in * hp * wp)
               + np.arange(oh)[None, :, None] * (stride[0] * wp)
               + np.arange(ow)[None, None, :] * stride[1]).reshape(-1)
    rows = _round_up(origins.size, rows_per_tile)
    origins = np.concatenate([origins, np.zeros(rows - origins.size, np.int64)])
    # weights per group as (K, width) matrices: depth q is row q, channels along it
    wmat = np.zeros((groups, c_group * kh * kw, width), dtype=x.dtype)
    wmat[:, :, :per_group] = weight.reshape(groups, per_group, -1).transpose(0, 2, 1)
    panels = np.arange(0, width, 4 * lanes)
    vectors = np.minimum(width - panels, 4 * lanes) // lanes
    c = np.empty((groups, rows, width), dtype=x.dtype)
    for g in range(groups):
        run_tiles(xflat, origins + g * c_group * hp * wp, offsets, wmat[g].reshape(-1), panels,
                  width * np.arange(offsets.size, dtype=np.int64), vectors,
                  np.zeros_like(panels), panels, c[g])
    y = c[:, :n * oh * ow, :per_group].reshape(groups, n, oh, ow, per_group)
    return np.ascontiguousarray(y.transpose(1, 0, 4, 2, 3)).reshape(n, c_out, oh, ow)


# The tile algorithms' Python-side set-up per call (about 20 us more than im2col's here), in
# lane-multiply-adds at their measured ~30 per ns: below it, im2col wins (LeNet-5 at batch 1-4).
TILE_CALL_COST = 600_000


def conv_cost(algorithm: str, x_shape: tuple, weight_shape: tuple, stride: Pair,
              padding: Pair, dilation: Pair, groups: int, dtype=np.float32) -> int:
    """Lane-multiply-adds an algorithm spends on one call, its padding waste included: the
    useful MACs N C_out H_out W_out C_g k_h k_w scaled by (computed lanes) / (useful lanes),
    plus ``TILE_CALL_COST`` for the tile algorithms' per-call set-up (padded copy, tables).
    For ``"im2col"`` the MACs plus the column matrix written and read (3 N C_in k_h k_w
    H_out W_out element moves, each counted as one multiply-add)."""
    n, c_in, h, w = x_shape
    c_out, c_group, kh, kw = weight_shape
    oh, ow = _out_hw(x_shape, weight_shape, stride, padding, dilation)
    depth = c_group * kh * kw
    kind = "f32" if np.dtype(dtype) == np.float32 else "f64"
    lanes, rows_per_tile = LANES[kind], ROWS[kind]
    per_group = c_out // groups
    if algorithm == "im2col":
        return n * c_out * oh * ow * depth + 3 * n * c_in * kh * kw * oh * ow
    if algorithm == "direct":
        wp = w + 2 * padding[1]
        positions = _round_up(oh * wp, lanes * _direct_vectors(oh * wp, lanes))
        return TILE_CALL_COST + n * groups * _round_up(per_group, rows_per_tile) * positions * depth
    if algorithm == "indirect":
        return TILE_CALL_COST + (_round_up(n * oh * ow, rows_per_tile) * groups
                                 * _round_up(per_group, lanes) * depth)
    raise ValueError(f"unknown conv algorithm {algorithm!r}")


HAVE_TILES = HAVE_AVX512
