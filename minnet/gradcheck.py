"""Finite-difference gradient checking in float64.

Two checks, following ``torch.autograd.gradcheck`` and HIPS/autograd's ``check_grads``:

- the full Jacobian, column by column, by central differences
  J[:, j] ≈ (f(x + eps e_j) - f(x - eps e_j)) / (2 eps), compared with the rows
  v^T J that backward computes (inputs up to ``max_full`` elements in total);
- the dot-product (projection) test for a random direction u and random output weights v:
  <v, (f(x + eps u) - f(x - eps u)) / (2 eps)> ≈ <J^T v, u>, which scales to any input size.

Tested by ``tests/minnet/test_gradcheck.py`` (it accepts correct ops and rejects a wrong one).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from minnet.tensor import Tensor


class GradcheckError(AssertionError):
    """Analytical and numerical gradients disagree."""


def _as_inputs(inputs) -> list[Tensor]:
    if isinstance(inputs, (Tensor, np.ndarray)):
        inputs = [inputs]
    tensors = []
    for i, x in enumerate(inputs):
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if data.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs; input {i} has dtype {data.dtype}")
        requires = x.requires_grad if isinstance(x, Tensor) else True
        tensors.append(Tensor(data.copy(), requires_grad=requires))
    return tensors


def _evaluate(fn: Callable, tensors: list[Tensor]) -> np.ndarray:
    out = fn(*tensors)
    return np.asarray(out.data if isinstance(out, Tensor) else out, dtype=np.float64)


def _vjp(fn: Callable, tensors: list[Tensor], v: np.ndarray) -> list[np.ndarray]:
    for t in tensors:
        t.grad = None
    out = fn(*tensors)
    if not out.requires_grad:
        return [np.zeros_like(t.data) for t in tensors]
    out.backward(v)
    return [np.zeros_like(t.data) if t.grad is None else t.grad for t in tensors]


def _directional(fn: Callable, tensors: list[Tensor], directions: list[np.ndarray],
                 eps: float) -> np.ndarray:
    """(f(x + eps u) - f(x - eps u)) / (2 eps) with every input moved along its direction."""
    originals = [t.data for t in tensors]
    try:
        for t, x, u in zip(tensors, originals, directions):
            t.data = x + eps * u
        plus = _evaluate(fn, tensors)
        for t, x, u in zip(tensors, originals, directions):
            t.data = x - eps * u
        minus = _evaluate(fn, tensors)
    finally:
        for t, x in zip(tensors, originals):
            t.data = x
    return (plus - minus) / (2 * eps)


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, *, max_full: int = 64, seed: int = 0,
              raise_exception: bool = True) -> bool:
    """Check the gradients of ``fn`` at float64 ``inputs`` against central differences.

    Parameters
    ----------
    fn : callable mapping Tensors to a Tensor.
    inputs : Tensors or ndarrays (float64); a Tensor with ``requires_grad=False`` is held fixed.
    eps, atol, rtol : step and the ``np.allclose`` tolerances.
    max_full : the full Jacobian is checked when the inputs hold at most this many elements.
    raise_exception : raise ``GradcheckError`` with the details instead of returning False.

    Examples
    --------
    >>> import numpy as np, minnet
    >>> minnet.gradcheck(lambda x: (x * x).sum(), [np.array([1.0, -2.0])])
    True
    """
    tensors = _as_inputs(inputs)
    rng = np.random.default_rng(seed)
    out_shape = _evaluate(fn, tensors).shape
    zeros = [np.zeros_like(t.data) for t in tensors]
    active = [i for i, t in enumerate(tensors) if t.requires_grad]

    def fail(message: str) -> bool:
        if raise_exception:
            raise GradcheckError(message)
        return False

    # projection test
    v = rng.standard_normal(out_shape)
    directions = [rng.standard_normal(t.shape) if t.requires_grad else z for t, z in zip(tensors, zeros)]
    analytic = sum(float((g * u).sum()) for g, u in zip(_vjp(fn, tensors, v), directions))
    numeric = float((v * _directional(fn, tensors, directions, eps)).sum())
    if not np.isclose(analytic, numeric, atol=atol, rtol=rtol):
        return fail(f"projection test failed: <J^T v, u> = {analytic!r}, numerical {numeric!r}")

    # full Jacobian for small inputs
    if sum(tensors[i].size for i in active) > max_full:
        return True
    n_out = int(np.prod(out_shape))
    for i in active:
        t = tensors[i]
        numeric_jac = np.empty((n_out, t.size))
        for j in range(t.size):
            unit = list(zeros)
            unit[i] = np.zeros(t.shape)
            unit[i].flat[j] = 1.0
            numeric_jac[:, j] = _directional(fn, tensors, unit, eps).ravel()
        analytic_jac = np.empty((n_out, t.size))
        for k in range(n_out):
            row = np.zeros(n_out)
            row[k] = 1.0
            analytic_jac[k] = _vjp(fn, tensors, row.reshape(out_shape))[i].ravel()
        if not np.allclose(analytic_jac, numeric_jac, atol=atol, rtol=rtol):
            worst = np.unravel_index(np.argmax(np.abs(analytic_jac - numeric_jac)), analytic_jac.shape)
            return fail(f"Jacobian of input {i} differs: at (output {worst[0]}, element {worst[1]}) "
                        f"analytic {analytic_jac[worst]!r}, numerical {numeric_jac[worst]!r}")
    return True

