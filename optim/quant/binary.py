"""Binary (XNOR-Net) and ternary (TWN) weights: codes in {-1, +1} / {-1, 0, +1} times a scale."""
from __future__ import annotations

import numpy as np

from ._checks import as_float_array, check_finite, n_channels


def _per_channel_mean(values: np.ndarray, axis: int | None) -> np.ndarray:
    """Mean over everything but ``axis`` (over everything when ``axis`` is None)."""
    if axis is None:
        return values.mean()
    other = tuple(a for a in range(values.ndim) if a != axis)
    return values.mean(axis=other)


def _expand(param: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    if axis is None:
        return param
    shape = [1] * ndim
    shape[axis] = -1
    return param.reshape(shape)


def binarize(w: object, axis: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    r"""XNOR-Net binary weights: :math:`W \approx \alpha B` with

    .. math::
        B = \operatorname{sign}(W) \in \{-1, +1\}, \qquad \alpha = \frac{1}{n}\lVert W \rVert_1

    the minimiser of :math:`\lVert W - \alpha B \rVert^2` over
    :math:`B \in \{\pm1\}^n,\ \alpha \ge 0`.
    ``sign(0) = +1``. ``axis`` is the output-channel axis (one :math:`\alpha` per channel, the
    mean over the other axes); ``axis=None`` uses one :math:`\alpha` for the whole tensor.

    Returns ``(B as int8, alpha)``; for non-zero weights ``dequantize(B, alpha, 0, axis)``
    rebuilds :math:`\alpha B`.

    Source: Rastegari et al. 2016, "XNOR-Net", section 3.1 (binary-weight networks).
    Checked by ``tests/optim/quant/test_quant_lowbit.py::test_binarize_is_least_squares_optimal``.

    >>> binarize(np.array([[0.5, -1.5], [0.0, 2.0]], dtype=np.float32))
    (array([[ 1, -1],
           [ 1,  1]], dtype=int8), array([1., 1.], dtype=float32))
    """
    w = as_float_array(w, "w")
    check_finite(w, "w")
    axis, _ = n_channels(w, axis)
    signs = np.where(w >= 0, 1, -1).astype(np.int8)
    return signs, _per_channel_mean(np.abs(w), axis).astype(w.dtype)


def ternarize(
    w: object, axis: int | None = None, delta_factor: float = 0.7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Ternary weight networks: :math:`W \approx \alpha T`, :math:`T \in \{-1, 0, +1\}^n`, with

    .. math::
        \Delta = 0.7\, \frac{1}{n} \sum_i |W_i|, \qquad
        T_i = \operatorname{sign}(W_i)\, [|W_i| > \Delta], \qquad
        \alpha = \frac{1}{|I_\Delta|} \sum_{i \in I_\Delta} |W_i|, \quad
        I_\Delta = \{i : |W_i| > \Delta\}

    :math:`\alpha` is the exact minimiser of :math:`\lVert W - \alpha T\rVert^2` for the given
    support. The optimal threshold maximises
    :math:`(\sum_{|W_i| > \Delta} |W_i|)^2 / |I_\Delta|`; for i.i.d. weights it is
    :math:`\Delta^* = c\, E|W|` with :math:`c = 2/3 \approx 0.667` for a uniform distribution
    (:math:`\Delta^* = a/3` on :math:`[-a, a]`) and :math:`c \approx 0.768` for a Gaussian
    (:math:`\Delta^* \approx 0.612\,\sigma`), so the paper's 0.7 is a compromise between the
    two, exact for neither (``test_twn_optimal_threshold_for_uniform_and_gaussian``).
    :math:`\alpha = 0` when no weight exceeds
    :math:`\Delta`. ``axis=None`` is per-layer as in the paper; ``axis=k`` gives one
    :math:`(\Delta, \alpha)` per channel along ``k``.

    Returns ``(T as int8, alpha, delta)``.

    Source: Li & Liu 2016, "Ternary Weight Networks", section 2 (threshold-based ternary
    function and its approximate solution).
    Checked by
    ``tests/optim/quant/test_quant_lowbit.py::test_ternarize_threshold_and_optimal_scale`` and
    ``::test_twn_optimal_threshold_for_uniform_and_gaussian``.

    >>> ternarize(np.array([0.1, -1.0, 0.8, 0.05]))
    (array([ 0, -1,  1,  0], dtype=int8), array(0.9), array(0.34125))
    """
    w = as_float_array(w, "w")
    check_finite(w, "w")
    if not (np.isfinite(delta_factor) and delta_factor >= 0):
        raise ValueError(f"delta_factor must be finite and >= 0, got {delta_factor}")
    axis, _ = n_channels(w, axis)
    magnitude = np.abs(w)
    delta = np.asarray(delta_factor * _per_channel_mean(magnitude, axis), dtype=w.dtype)
    support = magnitude > _expand(delta, w.ndim, axis)
    count = _per_channel_mean(support.astype(np.float64), axis)
    total = _per_channel_mean(np.where(support, magnitude, 0).astype(np.float64), axis)
    alpha = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    alpha = np.asarray(alpha, dtype=w.dtype)
    codes = (np.sign(w) * support).astype(np.int8)
    return codes, alpha, delta


def binary_connect(w: object) -> np.ndarray:
    r"""BinaryConnect's deterministic binarization :math:`w_b = \operatorname{sign}(w)` with
    :math:`\operatorname{sign}(0) = +1`, as float values of ``w``'s dtype.

    In training (``BinaryFakeQuantize``) the forward pass uses :math:`w_b`, the backward pass
    the clipped straight-through estimator ``binary_connect_mask``, and the real-valued
    weights are clipped to :math:`[-1, 1]` after each update (the paper's ``clip``).

    Source: Courbariaux, Bengio & David 2015, "BinaryConnect", eq. (1) and algorithm 1.
    Checked by ``tests/optim/quant/test_quant_binary_qat.py::test_binary_connect_is_sign``.

    >>> binary_connect(np.array([-0.5, 0.0, 2.0]))
    array([-1.,  1.,  1.])
    """
    w = as_float_array(w, "w")
    check_finite(w, "w")
    return np.where(w >= 0, 1, -1).astype(w.dtype)


def binary_connect_mask(w: object, bound: float = 1.0) -> np.ndarray:
    r"""Where the clipped STE of a sign function passes the gradient,
    :math:`\partial w_b / \partial w = 1[|w| \le 1]` (the derivative of
    :math:`\operatorname{htanh}(w) = \operatorname{clip}(w, -1, 1)`), ``bound`` in place of 1.

    Source: Courbariaux et al. 2016, "Binarized Neural Networks", eq. (4) (the clipped STE
    for BinaryConnect's sign); Bengio et al. 2013.
    Checked by ``tests/optim/quant/test_quant_binary_qat.py::test_binary_connect_gradient_is_clipped_ste``.
    """
    w = as_float_array(w, "w")
    if not (np.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be finite and > 0, got {bound}")
    return np.abs(w) <= bound
