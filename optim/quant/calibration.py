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
    cumulative = np.cumsum(counts)
    if cumulative[-1] <= 0:
        raise ValueError("counts must hold at least one observation")
    target = q / 100.0 * cumulative[-1]
    k = max(int(np.searchsorted(cumulative, target, side="left")), int(np.argmax(counts > 0)))
    before = cumulative[k] - counts[k]
    return float(edges[k] + (target - before) / counts[k] * (edges[k + 1] - edges[k]))


def _xlogx(v: np.ndarray) -> np.ndarray:
    return v * np.log(np.where(v > 0, v, 1.0))


def kl_divergences(counts: np.ndarray, n_levels: int) -> np.ndarray:
    r"""TensorRT's entropy-calibration divergence :math:`KL(P_i \Vert Q_i)` for every number of
    kept bins :math:`i = n_{levels}, \dots, K` of a histogram :math:`h` of :math:`|x|`:

    * :math:`P_i = (h_0, \dots, h_{i-2},\ h_{i-1} + \sum_{k \ge i} h_k)` (outliers clipped into
      the last kept bin);
    * :math:`Q_i`: :math:`h_0 \dots h_{i-1}` merged into :math:`n_{levels}` chunks of
      :math:`m = \lfloor i / n_{levels} \rfloor` bins (the last takes the remainder); chunk
      :math:`j`'s total :math:`T_j` is spread evenly over its :math:`S_j` bins where
      :math:`P_i > 0`;
    * :math:`KL = \sum_{P_k > 0} \bar P_k \log(\bar P_k / \bar Q_k)` of the normalised
      histograms, :math:`+\infty` when some :math:`P_k > 0` has :math:`Q_k = 0`.

    Since :math:`Q` is constant on a chunk's support this is evaluated for all :math:`i` at
    once from prefix sums, with :math:`N = \sum_k h_k`, :math:`\sum_k Q_k = \sum_{k<i} h_k`
    and :math:`P_{(j)}` the mass of :math:`P` in chunk :math:`j`:

    .. math::
        KL = \frac{1}{N}\sum_k P_k \log P_k - \log N + \log \sum_{k<i} h_k
             - \frac{1}{N}\sum_j P_{(j)} \log \frac{T_j}{S_j}

    Source: Migacz 2017, "8-bit Inference with TensorRT" (GTC), entropy calibration.
    Checked by
    ``tests/optim/quant/test_quant_calibration.py::test_kl_clip_bins_matches_brute_force``
    (against the bin-by-bin construction of P and Q).
    """
    h = np.asarray(counts, dtype=np.float64)
    n_bins = h.size
    kept = np.arange(n_levels, n_bins + 1)
    width = (kept // n_levels)[:, None]
    chunk = np.arange(n_levels)
    start = width * chunk
    end = np.where(chunk < n_levels - 1, start + width, kept[:, None])
    mass = np.concatenate([[0.0], np.cumsum(h)])
    nonzero = np.concatenate([[0], np.cumsum(h > 0)])
    plogp = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    outliers = mass[-1] - mass[kept]
    last = h[kept - 1] + outliers
    totals = mass[end] - mass[start]
    support = nonzero[end] - nonzero[start]
    support[:, -1] += (h[kept - 1] == 0) & (outliers > 0)
    p_chunk = totals.copy()
    p_chunk[:, -1] += outliers
    used = support > 0
    finite = ~np.any(used & (totals == 0), axis=1)
    ratio = np.where(used & (totals > 0), totals / np.maximum(support, 1), 1.0)
    cross = np.sum(p_chunk * np.log(ratio), axis=1)
    n = mass[-1]
    with np.errstate(divide="ignore"):
        kl = (plogp[kept - 1] + _xlogx(last) - cross) / n - np.log(n) + np.log(mass[kept])
    return np.where(finite, np.maximum(kl, 0.0), np.inf)


def kl_clip_bins(counts: np.ndarray, n_levels: int) -> int:
    r"""Entropy calibration: the number of histogram bins :math:`i` to keep (the clipping
    threshold is :math:`i` bin widths) minimising ``kl_divergences``; ties go to the smallest
    :math:`i`. Keeping every bin has no outliers and a finite divergence, so the minimum is
    finite; a histogram with no more bins than levels keeps them all.

    Source: Migacz 2017, "8-bit Inference with TensorRT" (GTC): candidates i = 128..2048 for int8.
    Checked by
    ``tests/optim/quant/test_quant_calibration.py::test_kl_clip_bins_matches_brute_force``.
    """
    n_levels = check_count(n_levels, "n_levels")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size <= n_levels:
        return counts.size
    return n_levels + int(np.argmin(kl_divergences(counts, n_levels)))


class SignedHistogram:
    r"""Streaming per-channel histogram of x >= 0 and x < 0 by magnitude.

    Row ``c`` has ``bins`` bins of width :math:`w_c` on each side of 0: bin :math:`m` counts
    :math:`|x| \in (m w_c, (m+1) w_c]` (bin 0 also :math:`x = 0`). :math:`w_c` is set by the
    first non-zero batch to :math:`\max|x| / \text{bins}` and doubled, merging bins
    :math:`2m, 2m+1` into :math:`m`, whenever a later batch exceeds :math:`\text{bins}\cdot w_c`.
    The grid is anchored at 0, so a merge equals recounting with the doubled width, the
    histogram of :math:`|x|` is ``pos + neg``, and bins/2 to bins bins span the observed
    range. Exact minima and maxima are tracked alongside.

    Checked by
    ``tests/optim/quant/test_quant_calibration.py::test_signed_histogram_equals_recount``.
    """

    def __init__(self, n_channels: int, bins: int = 2048):
        self.bins = bins
        self.pos = np.zeros((n_channels, bins))
        self.neg = np.zeros((n_channels, bins))
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
        for c in np.flatnonzero(self.width > 0):
            while np.ceil(peak[c] / self.width[c]) > self.bins:
                self.width[c] *= 2
                self.pos[c] = self._merge_pairs(self.pos[c])
                self.neg[c] = self._merge_pairs(self.neg[c])
        width = np.where(self.width > 0, self.width, 1.0)[:, None]
        index = np.maximum(np.ceil(magnitude / width) - 1, 0).astype(np.int64)
        index += np.arange(rows.shape[0])[:, None] * self.bins
        size = self.pos.size
        self.pos += np.bincount(index[rows >= 0], minlength=size).reshape(self.pos.shape)
        self.neg += np.bincount(index[rows < 0], minlength=size).reshape(self.neg.shape)

    def _merge_pairs(self, counts: np.ndarray) -> np.ndarray:
        return np.bincount(np.arange(self.bins) // 2, weights=counts, minlength=self.bins)

    def signed(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Counts and edges of row ``c`` ordered from ``-bins·w`` to ``+bins·w``."""
        w = self.width[c] if self.width[c] > 0 else 1.0
        counts = np.concatenate([self.neg[c][::-1], self.pos[c]])
        return counts, np.arange(-self.bins, self.bins + 1) * w

    def magnitude(self, c: int) -> np.ndarray:
        """Counts of :math:`|x|` in row ``c`` (bin m is ``(m w, (m+1) w]``)."""
        return self.pos[c] + self.neg[c]
