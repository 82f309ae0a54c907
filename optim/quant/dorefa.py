r"""DoReFa-Net quantizers (Zhou et al. 2016): k-bit weights by tanh normalisation and k-bit
activations on the fixed range [0, 1], trained with the straight-through estimator.

The pure functions state the forward values; ``dorefa_weight_ste`` / ``dorefa_activation_ste``
are the differentiable forms used by ``optim.quant.fake_quant``'s ``DoReFaWeightQuantize`` and
``DoReFaActivationQuantize``.
"""
from __future__ import annotations

import numpy as np

from minnet import functional as F
from minnet.tensor import Tensor, as_tensor

from ._checks import as_float_array, check_finite, check_int
from .ste import straight_through

MAX_DOREFA_BITS = 16


def _check_bits(bits: object) -> int:
    bits = check_int(bits, "bits")
    if not 2 <= bits <= MAX_DOREFA_BITS:
        raise ValueError(f"bits must be in [2, {MAX_DOREFA_BITS}] (1-bit weights: "
                         f"binary_connect), got {bits}")
    return bits


def quantize_k(x: object, bits: int) -> np.ndarray:
    r"""DoReFa's :math:`\operatorname{quantize}_k(x) = \frac{1}{2^k - 1}
    \operatorname{round}((2^k - 1)\, x)` for :math:`x \in [0, 1]` (round half to even); its
    straight-through derivative is 1.

    Source: Zhou et al. 2016, "DoReFa-Net", eq. (5).
    Checked by ``tests/optim/quant/test_quant_dorefa.py::test_quantize_k_is_nearest_level``.

    >>> quantize_k(np.array([0.0, 0.3, 1.0]), 2)
    array([0.        , 0.33333333, 1.        ])
    """
    x = as_float_array(x, "x")
    n = 2 ** _check_bits(bits) - 1
    if np.any((x < 0) | (x > 1)) or not np.all(np.isfinite(x)):
        raise ValueError("x must lie in [0, 1]")
    return (np.rint(x * n) / n).astype(x.dtype)


def dorefa_weight_codes(w: object, bits: int) -> tuple[np.ndarray, float]:
    r"""DoReFa's k-bit weights as integer codes and a scale,
    :math:`w_q = c / (2^k - 1)`, :math:`c \in \{-(2^k - 1), -(2^k - 3), \dots, 2^k - 1\}`
    (odd integers), from

    .. math::
        w_q = 2 \operatorname{quantize}_k\Big(\frac{\tanh w}{2 \max |\tanh w|}
              + \frac12\Big) - 1

    with the maximum over the whole tensor: :math:`w_q` is the nearest of :math:`2^k` evenly
    spaced levels in :math:`[-1, 1]` to :math:`\tanh w / \max|\tanh w|`. An all-zero ``w``
    gives the codes of :math:`w_q = 0` rounded half to even (:math:`c = \pm 1`).

    Returns ``(codes as int32, scale = 1 / (2^k - 1))``.

    Source: Zhou et al. 2016, "DoReFa-Net", eq. (9).
    Checked by ``tests/optim/quant/test_quant_dorefa.py::test_dorefa_weight_is_nearest_normalised_level``.
    """
    w = as_float_array(w, "w")
    check_finite(w, "w")
    n = 2 ** _check_bits(bits) - 1
    t = np.tanh(w.astype(np.float64))
    peak = np.abs(t).max(initial=0.0)
    u = t / (2 * peak) + 0.5 if peak > 0 else np.full(t.shape, 0.5)
    codes = 2 * np.rint(u * n) - n
    return codes.astype(np.int32), 1.0 / n


def dorefa_weight(w: object, bits: int) -> np.ndarray:
    r"""DoReFa's k-bit weights :math:`w_q` (``dorefa_weight_codes`` times its scale), in
    ``w``'s dtype.

    Source: Zhou et al. 2016, eq. (9).
    Checked by ``tests/optim/quant/test_quant_dorefa.py::test_dorefa_weight_is_nearest_normalised_level``.

    >>> dorefa_weight(np.array([-2.0, 0.1, 2.0]), 2)
    array([-1.        ,  0.33333333,  1.        ])
    """
    w = as_float_array(w, "w")
    codes, scale = dorefa_weight_codes(w, bits)
    return (codes * scale).astype(w.dtype)


def dorefa_weight_ste(w: object, bits: int) -> Tensor:
    r"""``dorefa_weight`` on a Tensor, differentiable by the chain rule through the tanh
    normalisation (including the maximum) with the STE for :math:`\operatorname{quantize}_k`:
    the gradient equals that of :math:`\tanh w / \max|\tanh w|`.

    Source: Zhou et al. 2016, eq. (9) and section 2.3.
    Checked by ``tests/optim/quant/test_quant_dorefa.py::test_dorefa_weight_gradient_is_the_normalisation_gradient``
    and ``::test_dorefa_weight_matches_torch``.
    """
    w = as_tensor(w)
    bits = _check_bits(bits)
    t = F.tanh(w)
    u = t / (2 * F.abs(t).max()) + 0.5
    q = straight_through(u, quantize_k(np.clip(u.data, 0, 1), bits))
    return 2 * q - 1


def dorefa_activation(x: object, bits: int) -> np.ndarray:
    r"""DoReFa's k-bit activations :math:`x_q = \operatorname{quantize}_k(\operatorname{clip}(x,
    0, 1))`; the straight-through gradient is :math:`1[0 \le x \le 1]`.

    Source: Zhou et al. 2016, section 2.4 (the activation is clipped to [0, 1] before
    quantization).
    Checked by ``tests/optim/quant/test_quant_dorefa.py::test_dorefa_activation_grid_and_gradient``.
    """
    x = as_float_array(x, "x")
    check_finite(x, "x")
    return quantize_k(np.clip(x, 0, 1), bits)


def dorefa_activation_ste(x: object, bits: int) -> Tensor:
    """``dorefa_activation`` on a Tensor with the gradient :math:`1[0 \\le x \\le 1]`.

    Checked by ``tests/optim/quant/test_quant_dorefa.py::test_dorefa_activation_grid_and_gradient``.
    """
    x = as_tensor(x)
    return straight_through(x, dorefa_activation(x.data, bits), (x.data >= 0) & (x.data <= 1))
