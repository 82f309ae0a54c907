r"""Calibration: choosing the clipping range ``[x_min, x_max]`` from observed data.

Pure functions on arrays (rows = channels) and a streaming histogram; the observers in
``observers.py`` are thin wrappers around them.
"""
from __future__ import annotations

import numpy as np

from ._checks import check_count
from .affine import fake_quantize, qparams


def squared_error(
    rows: np.ndarray,
    x_min: np.ndarray,
    x_max: np.ndarray,
    qmin: int,
    qmax: int,
    symmetric: bool = False,
) -> np.ndarray:
    r"""Per-row quantization error :math:`\lVert x - \operatorname{fq}(x)\rVert^2` (float64) with
    the qparams of the range ``[x_min, x_max]`` (shapes ``(C,)``, ``rows`` of shape ``(C, N)``).

    Checked by ``tests/optim/quant/test_quant_observers.py::test_mse_error_at_most_minmax``.
    """
    scale, zero_point = qparams(x_min, x_max, qmin, qmax, symmetric)
    fq = fake_quantize(rows, scale, zero_point, qmin, qmax, axis=0)
    diff = rows.astype(np.float64) - fq
    return np.einsum("cn,cn->c", diff, diff)


def mse_clip_range(
    rows: np.ndarray,
    x_min: np.ndarray,
    x_max: np.ndarray,
    qmin: int,
    qmax: int,
    symmetric: bool = False,
    grid: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    r"""The shrunk range minimising the quantization error, per row:

    .. math::
        \alpha^* = \arg\min_{\alpha \in \{1/G, 2/G, \dots, 1\}}
            \lVert x - \operatorname{fq}(x;\ \alpha x_{min},\ \alpha x_{max}) \rVert^2,
        \qquad [x_{min}, x_{max}] \mapsto [\alpha^* x_{min},\ \alpha^* x_{max}]

    :math:`\alpha = 1` (the min-max range) is on the grid, so the error never exceeds
    min-max's. Ties go to the smallest :math:`\alpha`.

    Source: the MSE range setting in Nagel et al. 2021, "A White Paper on Neural Network
    Quantization" (arXiv:2106.08295), quantization range setting (grid search over the
    clipping range).
    Checked by ``tests/optim/quant/test_quant_calibration.py::test_mse_clip_range_is_grid_argmin``
    and ``tests/optim/quant/test_quant_observers.py::test_mse_error_at_most_minmax``.
    """
    grid = check_count(grid, "grid")
    alphas = np.arange(1, grid + 1) / grid
    errors = np.stack(
        [squared_error(rows, a * x_min, a * x_max, qmin, qmax, symmetric) for a in alphas]
    )
    best = alphas[np.argmin(errors, axis=0)].astype(x_min.dtype)
    return best * x_min, best * x_max


def histogram_quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    r"""Inverse of the piecewise-linear CDF of a histogram at percentile ``q`` (0..100):
    with :math:`t = \tfrac{q}{100} \sum_k c_k` and bin :math:`k` the first whose cumulative count
    reaches :math:`t`,

    .. math:: x_q = e_k + \frac{t - C_{k-1}}{c_k}\,(e_{k+1} - e_k)

    (counts spread uniformly inside a bin). ``q = 0`` gives the lower edge of the first
    non-empty bin and ``q = 100`` the upper edge of the last.

    Checked by
    ``tests/optim/quant/test_quant_calibration.py::test_histogram_quantile_within_a_bin``.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    counts, edges = _histogram(counts, edges)
    cumulative = np.cumsum(counts)
    target = q / 100.0 * cumulative[-1]
    k = max(int(np.searchsorted(cumulative, target, side="left")), int(np.argmax(counts > 0)))
    before = cumulative[k] - counts[k]
    return float(edges[k] + (target - before) / counts[k] * (edges[k + 1] - edges[k]))


def tail_percentile_range(counts: np.ndarray, edges: np.ndarray, p: float) -> tuple[float, float]:
    r"""Clip each signed tail at the same percentile: from a histogram of signed :math:`x`,

    .. math:: [x_{min}, x_{max}] = [Q_{100-p}(x),\ Q_p(x)]

    so up to :math:`(100 - p)\,\%` of the values are clipped in each tail (twice that in all;
    ONNX Runtime's asymmetric percentile calibration instead splits :math:`100 - p` evenly
    between the tails). :math:`Q` is ``histogram_quantile``; :math:`50 \le p \le 100`.

    Source: per-tail percentile clipping, the two-sided form of the percentile calibration in
    Wu et al. 2020, "Integer Quantization for Deep Learning Inference: Principles and Empirical
    Evaluation" (arXiv:2004.09602), section 4.2 (which clips :math:`|x|`, see
    ``abs_percentile_threshold``).
    Checked by
    ``tests/optim/quant/test_quant_calibration.py::test_percentiles_match_numpy_within_a_bin``.
    """
    _check_percentile(p)
    return histogram_quantile(counts, edges, 100 - p), histogram_quantile(counts, edges, p)


def abs_percentile_threshold(counts: np.ndarray, edges: np.ndarray, p: float) -> float:
    r"""One percentile of the magnitudes: from a histogram of :math:`|x|` (edges from 0),

    .. math:: T = Q_p(|x|), \qquad [x_{min}, x_{max}] = [-T, T] \cap [\min x, \max x]

    so up to :math:`(100 - p)\,\%` of the values, the largest in magnitude, are clipped
    ("99 % calibration would clip 1 % of the largest magnitude values").
    :math:`50 \le p \le 100`.

    Source: Wu et al. 2020, "Integer Quantization for Deep Learning Inference: Principles and
    Empirical Evaluation" (arXiv:2004.09602), section 4.2, percentile calibration.
    Checked by
    ``tests/optim/quant/test_quant_calibration.py::test_percentiles_match_numpy_within_a_bin``.
    """
    _check_percentile(p)
    return histogram_quantile(counts, edges, p)


def _check_percentile(p: float) -> None:
    if not 50 <= p <= 100:
        raise ValueError(f"percentile must be in [50, 100], got {p}")


def _xlogx(v: np.ndarray) -> np.ndarray:
    return v * np.log(np.where(v > 0, v, 1.0))


def _histogram(counts: object, edges: object) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 counts (>= 0, at least one) and matching increasing edges."""
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if counts.ndim != 1 or edges.shape != (counts.size + 1,):
        raise ValueError(f"counts must be 1-D and edges one longer, got shapes {counts.shape} "
                         f"and {edges.shape}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)) or counts.sum() <= 0:
        raise ValueError("counts must be finite, non-negative and hold at least one observation")
    if not np.all(np.diff(edges) > 0):
        raise ValueError("edges must be strictly increasing")
    return counts, edges


def kl_divergences_nvidia(
    counts: np.ndarray, num_bits: int = 8, unsigned: bool = False, start_bin: int = 128,
    stride: int = 1,
) -> np.ndarray:
    r"""The divergences of NVIDIA's entropy calibration, one per candidate
    :math:`i = s, s + \text{stride}, \dots \le K` kept bins of a histogram :math:`h` of
    :math:`|x|` with :math:`K` bins from 0:

    * the zero bin is replaced by its neighbour, :math:`h_0 \leftarrow h_1` (ReLU outputs put
      a spike there);
    * :math:`P = (h_0, \dots, h_{i-2},\ h_{i-1} + \sum_{k \ge i} h_k)`;
    * :math:`Q`: bin :math:`k < i` falls in chunk
      :math:`j(k) = \#\{j : \ell_j \le k\} - 1` of the grid
      :math:`\ell = \operatorname{linspace}(0, i, n + 1)`, :math:`n = 2^{b - 1 + u}`
      (128 for signed int8); chunk :math:`j`'s total is spread evenly over its bins with
      :math:`h_k \ne 0` (so :math:`Q_{i-1} = 0` when :math:`h_{i-1} = 0`, even if outliers
      make :math:`P_{i-1} > 0`);
    * :math:`D_i = KL(\bar P \Vert \bar Q)` of the normalised histograms (``scipy.stats.entropy``),
      :math:`+\infty` when some :math:`P_k > 0` has :math:`Q_k = 0`. No smoothing.

    Evaluated for all candidates at once from prefix sums (Q is constant on a chunk's support):
    with :math:`N = \sum h`, :math:`T_j, S_j` chunk :math:`j`'s total and support size and
    :math:`P_{(j)}` its mass of P,
    :math:`D_i = \frac1N \sum_k P_k \log P_k - \log N + \log \sum_{k<i} h_k
    - \frac1N \sum_j P_{(j)} \log (T_j / S_j)`.

    Source: NVIDIA TensorRT, ``tools/pytorch-quantization``, ``calib/histogram.py``
    ``_compute_amax_entropy`` (the histogram calibrator's "entropy" method), after Migacz 2017,
    "8-bit Inference with TensorRT" (GTC).
    Checked by ``tests/optim/quant/test_quant_calibration.py::test_nvidia_kl_matches_a_loop_over_the_description``.
    """
    num_bits = check_count(num_bits, "num_bits")
    start_bin = check_count(start_bin, "start_bin")
    stride = check_count(stride, "stride")
    h = np.array(counts, dtype=np.float64)
    if h.ndim != 1 or h.size < 2:
        raise ValueError(f"counts must be 1-D with at least 2 bins, got shape {h.shape}")
    if start_bin > h.size:
        raise ValueError(f"start_bin={start_bin} exceeds the {h.size} bins of the histogram")
    h[0] = h[1]
    if h.sum() <= 0:
        raise ValueError("counts must hold observations outside the zero bin")
    n = 1 << (num_bits - 1 + int(bool(unsigned)))
    kept = np.arange(start_bin, h.size + 1, stride)
    mass = np.concatenate([[0.0], np.cumsum(h)])
    plogp = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    outliers = mass[-1] - mass[kept]
    last_kept = h[kept - 1]
    log_last = np.log(np.where(last_kept > 0, last_kept, 1.0))
    if n >= h.size:  # chunks narrower than a bin: each bin alone in its chunk, Q_k = h_k
        cross = plogp[kept] + outliers * log_last
    else:  # chunk j holds the bins grid_j <= k < grid_j+1, the k that np.digitize puts there
        grid = np.ceil(np.linspace(0, kept, n + 1, axis=1)).astype(np.int64)
        nonzero = np.concatenate([[0], np.cumsum(h > 0)])
        totals = mass[grid[:, 1:]] - mass[grid[:, :-1]]
        support = nonzero[grid[:, 1:]] - nonzero[grid[:, :-1]]
        chunk_of_last = np.argmax(grid[:, 1:] >= kept[:, None], axis=1)  # holds bin i-1
        p_chunk = totals.copy()
        p_chunk[np.arange(kept.size), chunk_of_last] += np.where(last_kept > 0, outliers, 0.0)
        ratio = np.where(support > 0, totals / np.maximum(support, 1), 1.0)  # T_j / S_j > 0
        cross = np.sum(p_chunk * np.log(ratio), axis=1)
    total = mass[-1]
    infinite = (last_kept == 0) & (outliers > 0)  # also every case with sum_{k<i} h_k = 0
    kl = (plogp[kept - 1] + _xlogx(last_kept + outliers) - cross) / total - np.log(total) \
        + np.log(np.where(infinite, 1.0, mass[kept]))
    return np.where(infinite, np.inf, np.maximum(kl, 0.0))


def kl_threshold_nvidia(
    counts: np.ndarray, edges: np.ndarray, num_bits: int = 8, unsigned: bool = False,
    start_bin: int = 128, stride: int = 1,
) -> float:
    r"""NVIDIA's entropy-calibration threshold (amax) from a histogram of :math:`|x|`:
    :math:`T = e_{i^*}`, the upper edge of the last kept bin, where :math:`i^*` is the **last**
    minimiser of ``kl_divergences_nvidia`` (ties go to the widest range; divergences within
    :math:`10^{-12} \max(1, |D_{min}|)` of the minimum count as ties, the rounding of the
    prefix-sum form). With edges
    :math:`e_k = k w` from 0, as the calibrator collects them, :math:`T = i^* w`.

    Source: NVIDIA TensorRT ``pytorch-quantization``, ``calib/histogram.py``
    ``_compute_amax_entropy`` (defaults ``stride=1``, ``start_bin=128``).
    Checked by ``tests/optim/quant/test_quant_calibration.py::test_nvidia_kl_matches_a_loop_over_the_description``
    and ``::test_relu_gaussian_thresholds_of_the_two_conventions``.
    """
    counts, edges = _histogram(counts, edges)
    divergences = kl_divergences_nvidia(counts, num_bits, unsigned, start_bin, stride)
    best = divergences.min()  # ties within rounding of the prefix-sum form count as ties
    last = np.flatnonzero(divergences <= best + 1e-12 * max(1.0, abs(best)))[-1]
    return float(edges[start_bin + int(last) * stride])


def _smoothed(v: np.ndarray, eps: float) -> np.ndarray | None:
    """MXNet's smoothing: zeros become eps, the non-zeros give up the same total mass."""
    zero = v == 0
    if zero.all():
        return None
    return v + np.where(zero, eps, -eps * zero.sum() / (~zero).sum())


def kl_divergences_mxnet(hist: np.ndarray, n_quantized: int = 255, eps: float = 1e-4) -> np.ndarray:
    r"""The divergences of MXNet's entropy calibration, one per half-width
    :math:`i = \lfloor n/2 \rfloor, \dots, \lfloor K/2 \rfloor`, from a histogram :math:`h` of
    signed :math:`x` with an odd number :math:`K` of bins over :math:`[-M, M]` (zero bin
    :math:`z = \lfloor K/2 \rfloor` centred on 0):

    * the slice :math:`s = h_{z-i} \dots h_{z+i}` (2i + 1 bins); :math:`P = s` with the left
      outliers :math:`\sum_{k < z-i} h_k` added to :math:`P_0` and the right ones to
      :math:`P_{2i}`;
    * :math:`Q`: :math:`s` merged into :math:`n` chunks of :math:`m = \lfloor (2i+1)/n \rfloor`
      bins, the last chunk also taking the remainder; chunk :math:`j`'s total (of :math:`s`,
      outliers excluded) is spread evenly over its bins with :math:`P_k \ne 0`, and
      :math:`Q_k = 0` where :math:`P_k = 0`;
    * both smoothed: zero entries become :math:`\epsilon = 10^{-4}`, non-zero ones lose
      :math:`\epsilon \cdot \#\text{zeros} / \#\text{non-zeros}`;
    * :math:`D_i = KL(\bar P \Vert \bar Q)` of the normalised histograms; :math:`+\infty` when
      :math:`Q` is all zero.

    Computed in float64 (MXNet smooths in float32).

    Source: Apache MXNet ``python/mxnet/contrib/quantization.py``, ``_get_optimal_threshold``
    and ``_smooth_distribution`` (MXNet 1.x), after Migacz 2017.
    Checked by ``tests/optim/quant/test_quant_calibration.py::test_mxnet_kl_matches_a_loop_over_the_description``.
    """
    n_quantized = check_count(n_quantized, "n_quantized")
    h = np.asarray(hist, dtype=np.float64)
    if h.ndim != 1 or h.size % 2 == 0 or h.size < n_quantized:
        raise ValueError(f"hist must be 1-D with an odd number of bins >= n_quantized="
                         f"{n_quantized}, got shape {h.shape}")
    zero = h.size // 2
    divergences = []
    for i in range(n_quantized // 2, zero + 1):
        sliced = h[zero - i:zero + i + 1]
        p = sliced.copy()
        p[0] += h[:zero - i].sum()
        p[-1] += h[zero + i + 1:].sum()
        width = sliced.size // n_quantized
        chunk = np.minimum(np.arange(sliced.size) // width, n_quantized - 1)
        totals = np.bincount(chunk, weights=sliced, minlength=n_quantized)
        support = np.bincount(chunk, weights=p != 0, minlength=n_quantized)
        q = np.where(p != 0, totals[chunk] / np.maximum(support[chunk], 1), 0.0)
        p, q = _smoothed(p, eps), _smoothed(q, eps)
        if q is None:
            divergences.append(np.inf)
            continue
        p, q = p / p.sum(), q / q.sum()
        divergences.append(float(np.sum(p * np.log(p / q))))
    return np.array(divergences)


def kl_threshold_mxnet(hist: np.ndarray, edges: np.ndarray, n_quantized: int = 255) -> float:
    r"""MXNet's entropy-calibration threshold: :math:`T = e_{z + i^* + 1}`, the upper edge of the
    slice, i.e. :math:`(i^* + \tfrac12) w` for bins of width :math:`w` centred on 0, where
    :math:`i^*` is the **first** minimiser of ``kl_divergences_mxnet``. The histogram is
    ``np.histogram(x, bins=K, range=(-M, M))`` with :math:`M = \max|x|` and odd :math:`K`
    (8001 in MXNet); ``n_quantized`` is 255 for int8 and 511 for uint8 data that is never
    negative.

    Source: Apache MXNet ``contrib/quantization.py`` ``_get_optimal_threshold``.
    Checked by ``tests/optim/quant/test_quant_calibration.py::test_mxnet_kl_matches_a_loop_over_the_description``
    and ``::test_relu_gaussian_thresholds_of_the_two_conventions``.
    """
    hist, edges = _histogram(hist, edges)
    divergences = kl_divergences_mxnet(hist, n_quantized)
    return float(edges[hist.size // 2 + n_quantized // 2 + int(np.argmin(divergences)) + 1])


class SignedHistogram:
    r"""Streaming per-channel histogram of x >= 0 and x < 0 by magnitude, every bin inside the
    observed range.

    Row ``c`` has bins of width :math:`w_c` on each side of 0: bin :math:`m` counts
    :math:`|x| \in (m w_c, (m+1) w_c]` (bin 0 also :math:`x = 0`). The first non-zero batch sets
    :math:`w_c = \max|x| / \text{bins}`; a later batch with a larger :math:`\max|x|` keeps the
    width and appends bins, so row ``c`` always has
    :math:`n_c = \lceil \max|x| / w_c \rceil` bins and the last one holds the maximum. Only when
    :math:`n_c` would pass ``2 * bins`` is the width doubled, merging bins :math:`2m, 2m+1`
    into :math:`m` (exact, since the grid is anchored at 0), so
    :math:`\text{bins} \le n_c \le 2\,\text{bins}` and memory stays bounded. Up to that point the
    histogram of :math:`|x|` (``magnitude``) follows the scheme of NVIDIA's
    ``HistogramCalibrator`` (bins from 0, the first batch's width kept, whole bins appended);
    values exactly on an inner edge go to the lower bin here and to the upper one there. Exact
    minima and maxima are tracked alongside.

    Checked by
    ``tests/optim/quant/test_quant_calibration.py::test_signed_histogram_equals_recount``.
    """

    def __init__(self, n_channels: int, bins: int = 2048):
        self.bins = check_count(bins, "bins")
        self.pos = np.zeros((n_channels, 2 * self.bins))
        self.neg = np.zeros((n_channels, 2 * self.bins))
        self.n_bins = np.zeros(n_channels, dtype=np.int64)
        self.width = np.zeros(n_channels)
        self.min = np.full(n_channels, np.inf)
        self.max = np.full(n_channels, -np.inf)

    def update(self, rows: np.ndarray) -> None:
        """Count the rows of a ``(C, N)`` batch."""
        rows = rows.astype(np.float64)
        magnitude = np.abs(rows)
        self.min = np.minimum(self.min, rows.min(axis=1))
        self.max = np.maximum(self.max, rows.max(axis=1))
        peak = magnitude.max(axis=1)
        for c in np.flatnonzero((self.width == 0) & (peak > 0)):
            width = peak[c] / self.bins
            while np.ceil(peak[c] / width) > self.bins:  # float rounding of peak / bins
                width = np.nextafter(width, np.inf)
            self.width[c] = width
        capacity = self.pos.shape[1]
        for c in np.flatnonzero(self.width > 0):
            while np.ceil(peak[c] / self.width[c]) > capacity:
                self.width[c] *= 2
                self.pos[c] = self._merge_pairs(self.pos[c])
                self.neg[c] = self._merge_pairs(self.neg[c])
                self.n_bins[c] = (self.n_bins[c] + 1) // 2
            self.n_bins[c] = max(self.n_bins[c], int(np.ceil(peak[c] / self.width[c])))
        self.n_bins = np.maximum(self.n_bins, 1)  # an all-zero row so far: bin 0 holds it
        width = np.where(self.width > 0, self.width, 1.0)[:, None]
        index = np.maximum(np.ceil(magnitude / width) - 1, 0).astype(np.int64)
        index += np.arange(rows.shape[0])[:, None] * capacity
        size = self.pos.size
        self.pos += np.bincount(index[rows >= 0], minlength=size).reshape(self.pos.shape)
        self.neg += np.bincount(index[rows < 0], minlength=size).reshape(self.neg.shape)

    def _merge_pairs(self, counts: np.ndarray) -> np.ndarray:
        return np.bincount(np.arange(counts.size) // 2, weights=counts, minlength=counts.size)

    def signed(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Counts and edges of row ``c`` ordered from ``-n·w`` to ``+n·w`` (w = 1 while the
        row has seen only zeros, so the edges still increase)."""
        n, w = self.n_bins[c], (self.width[c] if self.width[c] > 0 else 1.0)
        counts = np.concatenate([self.neg[c, :n][::-1], self.pos[c, :n]])
        return counts, np.arange(-n, n + 1) * w

    def magnitude(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Counts and edges ``0, w, ..., n w`` of :math:`|x|` in row ``c`` (w = 1 while the row
        has seen only zeros)."""
        n, w = self.n_bins[c], (self.width[c] if self.width[c] > 0 else 1.0)
        return self.pos[c, :n] + self.neg[c, :n], np.arange(n + 1) * w
