r"""PACT: parameterized clipping activation (Choi et al. 2018), a learnable clipping level
:math:`\alpha` for activations quantized to k bits.

``pact_quantize`` / ``pact_gradients`` state the forward values and the gradients;
``PACTQuantize`` wraps them as a ``Function`` and ``optim.quant.fake_quant.PACTFakeQuantize``
as a QAT activation quantizer.
"""
from __future__ import annotations

import numpy as np

from minnet.tensor import Function, Tensor, as_tensor

from ._checks import as_float_array, check_finite, check_int
from .affine import fake_quantize


def _check(x, alpha, bits):
    x = as_float_array(x, "x")
    check_finite(x, "x")
    alpha = np.asarray(alpha, dtype=x.dtype)
    if alpha.size != 1 or not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be one positive finite number, got {alpha!r}")
    bits = check_int(bits, "bits")
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")
    return x, alpha.reshape(()), bits


def pact_clip(x: object, alpha: float) -> np.ndarray:
    r"""PACT's clipping :math:`y = \tfrac12(|x| - |x - \alpha| + \alpha)`, which equals
    :math:`\operatorname{clip}(x, 0, \alpha)`.

    Source: Choi et al. 2018, "PACT", eq. (1).
    Checked by ``tests/optim/quant/test_quant_pact.py::test_pact_clip_is_clip_to_alpha``.

    >>> pact_clip(np.array([-1.0, 0.5, 3.0]), 2.0)
    array([0. , 0.5, 2. ])
    """
    x, alpha, _ = _check(x, alpha, 8)
    return (0.5 * (np.abs(x) - np.abs(x - alpha) + alpha)).astype(x.dtype)


def pact_quantize(x: object, alpha: float, bits: int) -> np.ndarray:
    r"""PACT's k-bit activations

    .. math:: y_q = \operatorname{round}\Big(y \frac{2^k - 1}{\alpha}\Big)
              \frac{\alpha}{2^k - 1}, \qquad y = \operatorname{clip}(x, 0, \alpha)

    (round half to even), computed as ``fake_quantize(x, α/(2^k − 1), 0, 0, 2^k − 1)``, which
    is equal: a frozen PACT quantizer is an ordinary affine quantizer with scale
    :math:`\alpha / (2^k - 1)` and zero point 0.

    Source: Choi et al. 2018, "PACT", eq. (2).
    Checked by ``tests/optim/quant/test_quant_pact.py::test_pact_quantize_rounds_the_clipped_value``.
    """
    x, alpha, bits = _check(x, alpha, bits)
    n = 2 ** bits - 1
    return fake_quantize(x, alpha / x.dtype.type(n), 0, 0, n)


def pact_gradients(grad: object, x: object, alpha: float,
                   alpha_decay: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    r"""Backward of ``pact_quantize`` with the STE for the rounding
    (:math:`\partial y_q / \partial y = 1`):

    .. math::
        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y_q} 1[0 \le x < \alpha],
        \qquad
        \frac{\partial L}{\partial \alpha} = \sum_i \frac{\partial L}{\partial y_{q,i}}
            1[x_i \ge \alpha] + \lambda_\alpha \alpha

    The last term is the gradient of the L2 regularisation
    :math:`\tfrac{\lambda_\alpha}{2} \alpha^2` the paper puts on :math:`\alpha`
    (``alpha_decay`` :math:`= \lambda_\alpha`), so that training pulls the clipping level in.

    Returns ``(grad_x, grad_alpha)``.

    Source: Choi et al. 2018, eq. (3) and section 3 (α is regularised with L2).
    Checked by ``tests/optim/quant/test_quant_pact.py::test_pact_alpha_gradient_is_paper_eq_3``
    and ``::test_pact_matches_finite_differences_of_the_clipped_surrogate``.
    """
    x, alpha, _ = _check(x, alpha, 8)
    g = np.asarray(grad, dtype=x.dtype)
    if g.shape != x.shape:
        raise ValueError(f"grad must have x's shape {x.shape}, got {g.shape}")
    if not (np.isfinite(alpha_decay) and alpha_decay >= 0):
        raise ValueError(f"alpha_decay must be finite and >= 0, got {alpha_decay}")
    above = x >= alpha
    grad_alpha = np.sum(g * above) + alpha_decay * alpha
    return g * ((x >= 0) & ~above), np.asarray(grad_alpha, dtype=x.dtype)


class PACTQuantize(Function):
    r""":math:`y_q = \operatorname{pact\_quantize}(x; \alpha)`, differentiable in :math:`x`
    and :math:`\alpha` (``pact_gradients``)."""

    @staticmethod
    def forward(ctx, x, alpha, *, bits, alpha_decay):
        ctx.save_for_backward(x, alpha)
        ctx.alpha_decay = alpha_decay
        return pact_quantize(x, alpha, bits)

    @staticmethod
    def backward(ctx, grad):
        x, alpha = ctx.saved_tensors
        grad_x, grad_alpha = pact_gradients(grad, x, alpha, ctx.alpha_decay)
        return grad_x, grad_alpha.reshape(np.shape(alpha))


def pact_fake_quantize(x: object, alpha: object, bits: int, alpha_decay: float = 0.0) -> Tensor:
    """``pact_quantize`` on Tensors, differentiable in ``x`` and ``alpha``.

    Checked by ``tests/optim/quant/test_quant_pact.py::test_pact_alpha_gradient_is_paper_eq_3``.
    """
    return PACTQuantize.apply(as_tensor(x), as_tensor(alpha), bits=bits, alpha_decay=alpha_decay)
