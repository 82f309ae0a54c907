"""Folding an inference-mode BatchNorm into the convolution or linear layer before it.

Shared by the graph passes, pruning and quantization (one definition of the formula).
"""
from __future__ import annotations

import numpy as np

__all__ = ["fold_batchnorm"]


def _vector(name: str, value, channels: int, default: float) -> np.ndarray:
    if value is None:
        return np.full(channels, default)
    value = np.asarray(value, dtype=np.float64)
    if value.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},), got {value.shape}")
    return value


def fold_batchnorm(weight: np.ndarray, bias: np.ndarray | None, mean: np.ndarray,
                   var: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None,
                   eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of a conv/linear layer with the BatchNorm that follows it folded in.

    BN(W x + b) = γ (W x + b − μ) / √(σ² + ε) + β = W' x + b' with, per output channel o,

    .. math::
        W'_o = W_o \\frac{\\gamma_o}{\\sqrt{\\sigma^2_o + \\varepsilon}}, \\qquad
        b'_o = \\beta_o + (b_o - \\mu_o) \\frac{\\gamma_o}{\\sqrt{\\sigma^2_o + \\varepsilon}}

    (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", section 3.2; PyTorch's ``fuse_conv_bn_weights``).

    Parameters
    ----------
    weight : (C_out, ...) array: a Linear weight (out, in) or a Conv2d weight (out, in/g, kh, kw).
    bias : (C_out,) or None (taken as 0).
    mean, var : running statistics μ, σ² of shape (C_out,); var >= 0.
    gamma, beta : BN affine parameters of shape (C_out,) or None (1 and 0).
    eps : ε > 0.

    Returns
    -------
    (W', b') in ``weight``'s dtype, computed in float64.

    Tested by ``tests/optim/graph/test_graph_passes.py::test_fold_batchnorm_matches_conv_then_bn``
    (against the layers run one after the other, and against PyTorch's fused conv).

    Examples
    --------
    >>> w, b = fold_batchnorm(np.ones((2, 3)), None, np.zeros(2), np.full(2, 3.0), None, None, 1.0)
    >>> w[:, 0], b
    (array([0.5, 0.5]), array([0., 0.]))
    """
    weight = np.asarray(weight)
    if weight.ndim < 2 or not np.issubdtype(weight.dtype, np.floating):
        raise ValueError(f"weight must be a floating array of at least 2 dimensions, got "
                         f"{weight.dtype} {weight.shape}")
    channels = weight.shape[0]
    if not (isinstance(eps, (int, float, np.floating)) and eps > 0):
        raise ValueError(f"eps must be positive, got {eps!r}")
    mean, var = _vector("mean", mean, channels, 0.0), _vector("var", var, channels, 1.0)
    if (var < 0).any():
        raise ValueError(f"var must be non-negative, got minimum {var.min()}")
    scale = _vector("gamma", gamma, channels, 1.0) / np.sqrt(var + eps)
    folded_w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    folded_b = _vector("beta", beta, channels, 0.0) + (_vector("bias", bias, channels, 0.0) - mean) * scale
    return folded_w.astype(weight.dtype), folded_b.astype(weight.dtype)
