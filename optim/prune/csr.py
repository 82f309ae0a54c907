r"""Compressed sparse row (CSR) weights and the sparse product :math:`Y = X W^T`.

A matrix :math:`W` (rows × cols) in CSR form is three arrays: ``data`` (the non-zeros, row by
row), ``indices`` (their columns) and ``indptr`` (row :math:`r` owns entries
``indptr[r]:indptr[r+1]``), as ``scipy.sparse.csr_matrix``. For :math:`X` of shape (B, cols):

.. math:: Y_{b r} = \sum_{k = \text{indptr}_r}^{\text{indptr}_{r+1} - 1}
          \text{data}_k \, X_{b,\, \text{indices}_k}

costing one multiply-add per non-zero per sample instead of rows × cols. ``csr_matmul`` has a
NumPy reference and a Numba loop behind ``minnet.kernels.backend.dispatch``. Tests:
``tests/optim/prune/test_prune_csr.py`` (both equal the dense product, and each other).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minnet.kernels.backend import dispatch, jit


class CSR(NamedTuple):
    data: np.ndarray      # (nnz,) non-zero values, row-major
    indices: np.ndarray   # (nnz,) int32 column of each value
    indptr: np.ndarray    # (rows + 1,) int32 start of each row in data
    shape: tuple[int, int]


def to_csr(dense: np.ndarray) -> CSR:
    """The CSR form of a 2-D array (exact zeros are dropped)."""
    dense = np.asarray(dense)
    if dense.ndim != 2:
        raise ValueError(f"dense must be 2-D, got shape {dense.shape}")
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
    return CSR(np.ascontiguousarray(dense[rows, cols]), cols.astype(np.int32), indptr,
               tuple(int(n) for n in dense.shape))


def csr_to_dense(csr: CSR) -> np.ndarray:
    """The dense array of a CSR matrix (inverse of ``to_csr``)."""
    dense = np.zeros(csr.shape, dtype=csr.data.dtype)
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    dense[rows, csr.indices] = csr.data
    return dense


def csr_matmul_numpy(x: np.ndarray, data: np.ndarray, indices: np.ndarray,
                     indptr: np.ndarray, n_rows: int) -> np.ndarray:
    """Y[:, r] = X[:, indices[s:e]] @ data[s:e] for each row r (s, e = indptr[r], indptr[r+1])."""
    y = np.zeros((x.shape[0], n_rows), dtype=np.result_type(x, data))
    for r in range(n_rows):
        s, e = indptr[r], indptr[r + 1]
        y[:, r] = x[:, indices[s:e]] @ data[s:e]
    return y


@jit
def _csr_matmul_loop(x, data, indices, indptr, y):
    for b in range(x.shape[0]):
        for r in range(y.shape[1]):
            acc = 0.0
            for k in range(indptr[r], indptr[r + 1]):
                acc += data[k] * x[b, indices[k]]
            y[b, r] = acc


def csr_matmul_numba(x: np.ndarray, data: np.ndarray, indices: np.ndarray,
                     indptr: np.ndarray, n_rows: int) -> np.ndarray:
    dtype = np.result_type(x, data)
    y = np.empty((x.shape[0], n_rows), dtype=dtype)
    _csr_matmul_loop(np.ascontiguousarray(x, dtype=dtype), data.astype(dtype, copy=False),
                     indices, indptr, y)
    return y


_csr_matmul = dispatch(csr_matmul_numpy, csr_matmul_numba)


def csr_matmul(x: np.ndarray, csr: CSR) -> np.ndarray:
    r""":math:`Y = X W^T` for ``x`` of shape (B, cols) and a CSR matrix :math:`W` (rows, cols):
    the sparse counterpart of ``F.linear`` without bias (see the module docstring)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != csr.shape[1]:
        raise ValueError(f"x must have shape (B, {csr.shape[1]}), got {x.shape}")
    return _csr_matmul(x, csr.data, csr.indices, csr.indptr, csr.shape[0])
