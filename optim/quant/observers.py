r"""Observers: record statistics of the arrays passed through them and turn them into qparams.

``observer(x)`` updates the statistics and returns ``x`` unchanged; ``range()`` gives the
clipping range ``(x_min, x_max)`` and ``calculate_qparams()`` feeds it to ``qparams``.
``axis=None`` observes per tensor (scalars out); ``axis=k`` per channel along ``k``
(arrays of shape ``(C,)``). The integer range is ``int_range(bits, signed, restricted)``.
Calibration data with NaN or Inf, and ``calculate_qparams`` before any data, raise
``ValueError``. The methods follow ``torch.ao.quantization.observer`` where it has them.

``state_dict()`` / ``load_state_dict(state)`` save and restore the running statistics that
observing continues from: ``min`` and ``max`` (per channel, shape ``(C,)``) for the min-max
observers, as PyTorch's ``min_val`` / ``max_val`` buffers. The histogram and MSE observers are
calibration-only: their state is empty, and after a load they start observing afresh
(``tests/optim/quant/test_quant_observers.py::test_loaded_state_continues_like_the_original``).
"""
from __future__ import annotations

import numpy as np

from ._checks import as_float_array, check_axis, check_count, check_finite, check_int
from .affine import qparams
from .calibration import (SignedHistogram, abs_percentile_threshold, kl_threshold_nvidia,
                          mse_clip_range, tail_percentile_range)
from .ranges import check_bits, int_range


class Observer:
    """Base class; subclasses implement ``_observe(rows)`` and ``_range()`` on ``(C, N)`` rows
    and name in ``state_keys`` the ``(C,)`` attributes that ``state_dict`` saves."""

    state_keys: tuple[str, ...] = ()

    def __init__(
        self,
        bits: int = 8,
        *,
        signed: bool = True,
        symmetric: bool = False,
        restricted: bool = False,
        axis: int | None = None,
    ):
        self.bits = check_bits(bits)
        self.qmin, self.qmax = int_range(bits, signed, restricted)
        self.signed, self.symmetric, self.restricted = signed, symmetric, restricted
        self.axis = None if axis is None else check_int(axis, "axis")
        self.reset()

    def reset(self) -> None:
        """Forget everything observed."""
        self.channels: int | None = None
        self.dtype: np.dtype | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._observe(self._rows(x))
        return x

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the running statistics (``state_keys``); empty before any data."""
        if self.channels is None:
            return {}
        return {key: np.array(getattr(self, key)) for key in self.state_keys}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Forget everything observed, then continue from ``state`` (a ``state_dict()``; empty
        means no data seen). The channel count and dtype are the saved arrays'."""
        if state and set(state) != set(self.state_keys):
            raise ValueError(f"state must be empty or have the keys {list(self.state_keys)}, "
                             f"got {sorted(state)}")
        arrays = [np.array(state[key]) for key in self.state_keys if state]
        shapes = [a.shape for a in arrays]
        if arrays and (len(set(shapes)) > 1 or arrays[0].ndim != 1 or arrays[0].size == 0
                       or (self.axis is None and arrays[0].size != 1)
                       or any(a.dtype.kind != "f" for a in arrays)):
            raise ValueError("state arrays must be floating and of one shape (C,), C = 1 per "
                             f"tensor (axis={self.axis}), got shapes {shapes}")
        self.reset()
        if arrays:
            self.channels, self.dtype = arrays[0].shape[0], arrays[0].dtype
            for key, value in zip(self.state_keys, arrays):
                setattr(self, key, value.astype(self.dtype))

    def _rows(self, x: object) -> np.ndarray:
        """``x`` as ``(C, N)``: channel rows (one row per tensor when ``axis`` is None)."""
        arr = as_float_array(x)
        if arr.size == 0:
            raise ValueError("x must not be empty")
        check_finite(arr, "x")
        if self.axis is None:
            rows = arr.reshape(1, -1)
        else:
            axis = check_axis(self.axis, arr.ndim)
            rows = np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
        if self.channels is None:
            self.channels, self.dtype = rows.shape[0], arr.dtype
        elif rows.shape[0] != self.channels:
            raise ValueError(
                f"x has {rows.shape[0]} channels along axis {self.axis}, but this observer has "
                f"seen {self.channels}; call reset() first to observe a different tensor"
            )
        return rows

    def _require_data(self) -> None:
        if self.channels is None:
            raise ValueError(
                f"{type(self).__name__} has observed no data: call it on calibration data "
                "before range() or calculate_qparams()"
            )

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        """The clipping range ``(x_min, x_max)`` chosen from the data observed so far."""
        self._require_data()
        lo, hi = (np.asarray(v, dtype=self.dtype) for v in self._range())
        return (lo[0], hi[0]) if self.axis is None else (lo, hi)

    def calculate_qparams(self) -> tuple[np.ndarray, np.ndarray]:
        """``qparams`` of ``range()`` with this observer's integer range and scheme."""
        lo, hi = self.range()
        return qparams(lo, hi, self.qmin, self.qmax, self.symmetric)

    def _observe(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _range(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class MinMaxObserver(Observer):
    r"""Running extremes: :math:`x_{min} = \min_t \min x_t`, :math:`x_{max} = \max_t \max x_t`.

    Source: ``torch.ao.quantization.MinMaxObserver`` / ``PerChannelMinMaxObserver``.
    Checked by ``tests/optim/quant/test_quant_observers.py::test_minmax_is_running_extremes`` and
    ``tests/optim/quant/test_quant_torch.py::test_qparams_match_torch_minmax_observer``.
    """

    state_keys = ("min", "max")

    def reset(self) -> None:
        super().reset()
        self.min = self.max = None

    def _observe(self, rows):
        lo, hi = rows.min(axis=1), rows.max(axis=1)
        if self.min is None:
            self.min, self.max = lo, hi
        else:
            self.min, self.max = np.minimum(self.min, lo), np.maximum(self.max, hi)

    def _range(self):
        return self.min, self.max


class MovingAverageMinMaxObserver(MinMaxObserver):
    r"""Exponential moving average of the per-batch extremes (the first batch initialises):

    .. math:: x_{min} \leftarrow x_{min} + c\,(\min x_t - x_{min}), \quad
              x_{max} \leftarrow x_{max} + c\,(\max x_t - x_{max})

    with ``averaging_constant`` :math:`c = 0.01` by default.

    Source: ``torch.ao.quantization.MovingAverageMinMaxObserver``.
    Checked by ``tests/optim/quant/test_quant_observers.py::test_moving_average_recurrence`` and
    ``tests/optim/quant/test_quant_torch.py::test_moving_average_matches_torch``.
    """

    def __init__(self, bits: int = 8, *, averaging_constant: float = 0.01, **kwargs):
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = averaging_constant
        super().__init__(bits, **kwargs)

    def _observe(self, rows):
        lo, hi = rows.min(axis=1), rows.max(axis=1)
        if self.min is None:
            self.min, self.max = lo, hi
        else:
            c = rows.dtype.type(self.averaging_constant)
            self.min = self.min + c * (lo - self.min)
            self.max = self.max + c * (hi - self.max)


class _HistogramObserver(Observer):
    """Keeps a ``SignedHistogram`` of ``bins`` bins per side and channel."""

    def __init__(self, bits: int = 8, *, bins: int = 2048, **kwargs):
        self.n_bins = check_count(bins, "bins", minimum=2)
        super().__init__(bits, **kwargs)

    def reset(self) -> None:
        super().reset()
        self.histogram = None

    def _observe(self, rows):
        if self.histogram is None:
            self.histogram = SignedHistogram(rows.shape[0], self.n_bins)
        self.histogram.update(rows)


class PercentileObserver(_HistogramObserver):
    r"""Clip at a percentile ``p`` read off a streaming histogram (``SignedHistogram``) and
    clamped to the observed extremes, so ``p = 100`` gives exactly the min-max range;
    ``50 <= p <= 100``, default 99.99.

    ``method="tails"`` clips each signed tail, :math:`[Q_{100-p}(x), Q_p(x)]`
    (``tail_percentile_range``); ``method="abs"`` takes one percentile of the magnitudes,
    :math:`T = Q_p(|x|)` and :math:`[-T, T]`, as Wu et al. 2020, section 4.2
    (``abs_percentile_threshold``).

    Checked by ``tests/optim/quant/test_quant_observers.py::test_percentile_100_is_minmax`` and
    ``tests/optim/quant/test_quant_calibration.py::test_percentile_observer_matches_numpy_within_a_bin``.
    """

    METHODS = ("tails", "abs")

    def __init__(self, bits: int = 8, *, percentile: float = 99.99, method: str = "tails",
                 **kwargs):
        if not 50 <= percentile <= 100:
            raise ValueError(f"percentile must be in [50, 100], got {percentile}")
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        self.percentile, self.method = percentile, method
        super().__init__(bits, **kwargs)

    def _range(self):
        h, p = self.histogram, self.percentile
        lo, hi = np.empty(self.channels), np.empty(self.channels)
        for c in range(self.channels):
            if self.method == "tails":
                lo[c], hi[c] = np.clip(tail_percentile_range(*h.signed(c), p), h.min[c], h.max[c])
            else:
                t = abs_percentile_threshold(*h.magnitude(c), p)
                lo[c], hi[c] = max(h.min[c], -t), min(h.max[c], t)
        return lo, hi


class HistogramKLObserver(_HistogramObserver):
    r"""Entropy calibration in NVIDIA's convention: a histogram of :math:`|x|` (``bins`` = 2048
    by default, grown by whole bins as the range grows) and the threshold :math:`T` of
    ``kl_threshold_nvidia``, giving :math:`[\max(x_{min}, -T),\ \min(x_{max}, T)]`.

    The quantized levels compared against are :math:`2^{b-1}` (128 for int8), or :math:`2^b`
    (``unsigned``) for affine quantization of data that is never negative; candidates start at
    128 bins (or the histogram's size if smaller). :math:`T` is at most the largest observed
    :math:`|x|`; an all-zero channel gets :math:`T = 0`. MXNet's convention needs its own
    zero-centred histogram: see ``kl_threshold_mxnet``.

    Source: NVIDIA TensorRT ``pytorch-quantization`` ``HistogramCalibrator`` with
    ``compute_amax("entropy")``; Migacz 2017, "8-bit Inference with TensorRT" (GTC).
    Checked by ``tests/optim/quant/test_quant_observers.py::test_kl_threshold_at_most_max_abs`` and
    ``tests/optim/quant/test_quant_calibration.py::test_kl_observer_is_nvidia_on_its_histogram``.
    """

    def threshold(self) -> np.ndarray:
        """The clipping threshold :math:`T` per channel (a scalar per tensor)."""
        self._require_data()
        t = self._thresholds().astype(self.dtype)
        return t[0] if self.axis is None else t

    def _thresholds(self) -> np.ndarray:
        h = self.histogram
        unsigned = not self.symmetric and bool(np.all(h.min >= 0))
        peak = np.maximum(np.abs(h.min), np.abs(h.max))
        t = np.zeros(self.channels)
        for c in np.flatnonzero(h.width > 0):
            counts, edges = h.magnitude(c)
            t[c] = kl_threshold_nvidia(counts, edges, self.bits, unsigned,
                                       start_bin=min(128, counts.size))
        return np.minimum(t, peak)

    def _range(self):
        h = self.histogram
        t = self._thresholds()
        return np.maximum(h.min, -t), np.minimum(h.max, t)


class MSEObserver(Observer):
    r"""The clipping range minimising :math:`\lVert x - \operatorname{fq}(x)\rVert^2` over all
    observed values, searched over ``grid`` shrink factors of the min-max range
    (``mse_clip_range``); the error is never above min-max's. Keeps every observed value.

    Source: Nagel et al. 2021, "A White Paper on Neural Network Quantization", range setting.
    Checked by ``tests/optim/quant/test_quant_observers.py::test_mse_error_at_most_minmax``.
    """

    def __init__(self, bits: int = 8, *, grid: int = 100, **kwargs):
        self.grid = check_count(grid, "grid")
        super().__init__(bits, **kwargs)

    def reset(self) -> None:
        super().reset()
        self.batches: list[np.ndarray] = []

    def _observe(self, rows):
        self.batches.append(rows.astype(self.dtype, copy=True))

    def _range(self):
        rows = np.concatenate(self.batches, axis=1)
        lo, hi = rows.min(axis=1), rows.max(axis=1)
        return mse_clip_range(rows, lo, hi, self.qmin, self.qmax, self.symmetric, self.grid)


def histogram_l2_error(counts: object, bin_width: float, start_bin: int, end_bin: int,
                       dst_bins: int) -> float:
    r"""PyTorch ``HistogramObserver``'s estimate of the L2 quantization error when source bins
    ``start_bin..end_bin`` (inclusive) of a histogram are mapped onto ``dst_bins`` uniform
    destination bins of width :math:`w = (e - s + 1)\,\Delta / D`.

    Mass in source bin :math:`k` is spread uniformly (density :math:`d_k = n_k / \Delta`) over
    :math:`[a_k, b_k)`, offsets from the start of the range; each value is replaced by the
    centre :math:`c_i = (i + \tfrac12) w` of its destination bin. With
    :math:`i = \operatorname{clamp}(\lfloor a_k / w\rfloor, 0, D - 1)` and :math:`j` likewise
    for :math:`b_k`,

    .. math::
        E = \sum_k d_k \Big[\frac{(w/2)^3 - (a_k - c_i)^3}{3}
            + (j - i - 1)\frac{w^3}{12}
            + \frac{(b_k - c_j)^3 + (w/2)^3}{3}\Big]

    which is the exact :math:`\int (x - c(x))^2 d_k\,dx` for a source bin inside the range
    (also when :math:`i = j`), and PyTorch's approximation for bins beyond it. 0 when
    :math:`w = 0`.

    Source: ``torch.ao.quantization.HistogramObserver._compute_quantization_error``.
    Checked by ``tests/optim/quant/test_quant_histogram_l2.py::test_l2_error_is_the_integral_inside_the_range``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    dst_width = bin_width * (end_bin - start_bin + 1) / dst_bins
    if dst_width == 0.0:
        return 0.0
    begin = (np.arange(counts.size) - start_bin) * bin_width
    end = begin + bin_width
    first = np.clip(np.floor(begin / dst_width), 0, dst_bins - 1)
    last = np.clip(np.floor(end / dst_width), 0, dst_bins - 1)
    half = dst_width / 2

    def cube_integral(lo, hi):
        return (hi ** 3 - lo ** 3) / 3

    density = counts / bin_width
    error = (cube_integral(begin - (first + 0.5) * dst_width, half)
             + (last - first - 1) * cube_integral(-half, half)
             + cube_integral(-half, end - (last + 0.5) * dst_width))
    return float(np.sum(density * error))


def histogram_l2_search(counts: object, x_min: float, x_max: float,
                        dst_bins: int = 256) -> tuple[float, float]:
    r"""PyTorch ``HistogramObserver``'s range search (``_non_linear_param_search``, after
    caffe2's ``NormMinimization``): shrink the histogram's range one side at a time and keep
    the last range before the L2 error (``histogram_l2_error``) goes up.

    With the cumulative counts :math:`C` and total :math:`N`, quantile bounds
    :math:`\alpha = 0, \beta = 1` advance by :math:`10^{-5}`: the candidate left bin
    :math:`l` is the first bin (from the current start) with :math:`C_l \ge (\alpha + 10^{-5})N`,
    the right bin :math:`r` the last (down to the current start) with
    :math:`C_r \le (\beta - 10^{-5})N`; the side that would drop more bins moves (the start
    when :math:`l - s > e - r`, else the end) and its bound advances. When the bins change the
    error of the new range is computed; the search stops when it exceeds the smallest so far,
    or when :math:`\alpha \ge \beta`. The smallest error starts at :math:`+\infty`, not at the
    full range's, so the first move is always taken. Returns
    :math:`(x_{min} + s\Delta,\ x_{min} + (e + 1)\Delta)`, :math:`\Delta = (x_{max} - x_{min})/B`.
    A greedy search, not the global minimum of the error.

    Source: ``torch.ao.quantization.HistogramObserver._non_linear_param_search``.
    Checked by ``tests/optim/quant/test_quant_histogram_l2.py::test_l2_search_matches_torch_histogram_observer``
    and ``::test_l2_search_keeps_uniform_data``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or np.any(counts < 0):
        raise ValueError(f"counts must be a 1-d array of >= 2 non-negative counts, got shape "
                         f"{counts.shape}")
    if not (np.isfinite(x_min) and np.isfinite(x_max) and x_min <= x_max):
        raise ValueError(f"need finite x_min <= x_max, got {x_min}, {x_max}")
    dst_bins = check_count(dst_bins, "dst_bins", minimum=2)
    bins = counts.size
    bin_width = (x_max - x_min) / bins
    total = counts.sum()
    cumulative = np.cumsum(counts)
    step = 1e-5
    alpha, beta = 0.0, 1.0
    start, end = 0, bins - 1
    best = np.inf
    while alpha < beta:
        next_alpha, next_beta = alpha + step, beta - step
        left = min(max(int(np.searchsorted(cumulative, next_alpha * total, "left")), start), end)
        right = max(min(int(np.searchsorted(cumulative, next_beta * total, "right")) - 1, end),
                    start)
        new_start, new_end = start, end
        if left - start > end - right:
            new_start, alpha = left, next_alpha
        else:
            new_end, beta = right, next_beta
        if (new_start, new_end) == (start, end):
            continue
        error = histogram_l2_error(counts, bin_width, new_start, new_end, dst_bins)
        if error > best:
            break
        best, start, end = error, new_start, new_end
    return x_min + bin_width * start, x_min + bin_width * (end + 1)


class HistogramL2Observer(Observer):
    r"""PyTorch ``HistogramObserver``'s convention: a ``bins``-bin histogram (default 2048)
    of all observed values over their :math:`[x_{min}, x_{max}]`, and the range chosen by
    ``histogram_l2_search`` against :math:`2^b` destination bins (PyTorch uses the dtype's
    :math:`2^8` even for a reduced range). Per channel, each channel's values get their own
    histogram. Keeps every observed value and builds the histogram once, when the range is
    asked for: for one batch this is PyTorch's histogram (``torch.histc``); PyTorch merges
    the histograms of later batches approximately, this observer does not need to.

    Source: ``torch.ao.quantization.HistogramObserver``.
    Checked by ``tests/optim/quant/test_quant_histogram_l2.py::test_l2_search_matches_torch_histogram_observer``
    and ``::test_l2_observer_per_channel_and_constant_input``.
    """

    def __init__(self, bits: int = 8, *, bins: int = 2048, **kwargs):
        self.n_bins = check_count(bins, "bins", minimum=2)
        super().__init__(bits, **kwargs)

    def reset(self) -> None:
        super().reset()
        self.batches: list[np.ndarray] = []

    def _observe(self, rows):
        self.batches.append(rows.astype(self.dtype, copy=True))

    def _range(self):
        rows = np.concatenate(self.batches, axis=1)
        lo, hi = np.empty(self.channels), np.empty(self.channels)
        for c, row in enumerate(rows):
            x_min, x_max = float(row.min()), float(row.max())
            if x_min == x_max:
                lo[c] = hi[c] = x_min
                continue
            counts, _ = np.histogram(row, self.n_bins, (x_min, x_max))
            lo[c], hi[c] = histogram_l2_search(counts, x_min, x_max, 2 ** self.bits)
        return lo, hi
