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
                     indptr: np.ndarray, n_rows: int, loop: str | None = None) -> np.ndarray:
    """Y[:, r] = X[:, indices[s:e]] @ data[s:e] for each row r (s, e = indptr[r], indptr[r+1]);
    one loop, whatever ``loop`` asks of the Numba twin."""
    y = np.zeros((x.shape[0], n_rows), dtype=np.result_type(x, data))
    for r in range(n_rows):
        s, e = indptr[r], indptr[r + 1]
        y[:, r] = x[:, indices[s:e]] @ data[s:e]
    return y


@jit(fastmath=True)
def _gathered_dot(x, columns, values):
    """sum_k values_k x[columns_k] over whole 1-D arrays: a loop LLVM turns into SIMD gathers."""
    total = values.dtype.type(0)
    for k in range(values.shape[0]):
        total += values[k] * x[columns[k]]
    return total


@jit(fastmath=True)
def _rows_times_samples(x, data, indices, indptr, y):
    """Small batches: for each sample and row, a gathered dot product over the row's slices
    (written over offsets ``indptr[r] + k`` instead, the loop is not vectorised and runs
    2.5x slower)."""
    for b in range(x.shape[0]):
        xb = x[b]
        for r in range(y.shape[1]):
            start, end = indptr[r], indptr[r + 1]
            y[b, r] = _gathered_dot(xb, indices[start:end], data[start:end])


@jit(fastmath=True)
def _rows_times_batch(xt, data, indices, indptr, yt):
    """Large batches, on transposed operands: row r of Y^T accumulates data_k times the
    contiguous row indices_k of X^T (a dense axpy over the batch, no gather)."""
    for r in range(yt.shape[0]):
        out = yt[r]
        out[:] = 0
        for k in range(indptr[r], indptr[r + 1]):
            value = data[k]
            source = xt[indices[k]]
            for b in range(out.shape[0]):
                out[b] += value * source[b]


BATCHED_FROM = 12  # without a choice, the transposed loop from this batch size on
LOOPS = ("gather", "axpy")


def csr_matmul_numba(x: np.ndarray, data: np.ndarray, indices: np.ndarray,
                     indptr: np.ndarray, n_rows: int, loop: str | None = None) -> np.ndarray:
    """Numba twin of ``csr_matmul_numpy``: ``loop="gather"`` runs a gathered dot per sample and
    row, ``"axpy"`` an axpy over the transposed batch per non-zero; ``None`` takes gather below
    ``BATCHED_FROM`` samples (the compiled graph lets its cost model choose per batch instead).
    float32 sums may be reassociated."""
    if loop not in (None,) + LOOPS:
        raise ValueError(f"loop must be one of {LOOPS} or None, got {loop!r}")
    dtype = np.result_type(x, data)
    x, data = x.astype(dtype, copy=False), data.astype(dtype, copy=False)
    # the columns are non-negative: as uint32 they skip Numba's negative-index wraparound
    columns = indices.astype(np.int32, copy=False).view(np.uint32)
    if loop == "gather" or (loop is None and x.shape[0] < BATCHED_FROM):
        y = np.empty((x.shape[0], n_rows), dtype=dtype)
        _rows_times_samples(np.ascontiguousarray(x), data, columns, indptr, y)
        return y
    yt = np.empty((n_rows, x.shape[0]), dtype=dtype)
    _rows_times_batch(np.ascontiguousarray(x.T), data, columns, indptr, yt)
    return np.ascontiguousarray(yt.T)


_csr_matmul = dispatch(csr_matmul_numpy, csr_matmul_numba)


def csr_matmul(x: np.ndarray, csr: CSR, loop: str | None = None) -> np.ndarray:
    r""":math:`Y = X W^T` for ``x`` of shape (B, cols) and a CSR matrix :math:`W` (rows, cols):
    the sparse counterpart of ``F.linear`` without bias (see the module docstring). ``loop``
    picks the Numba loop (``csr_matmul_numba``); the NumPy backend has one."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != csr.shape[1]:
        raise ValueError(f"x must have shape (B, {csr.shape[1]}), got {x.shape}")
    return _csr_matmul(x, csr.data, csr.indices, csr.indptr, csr.shape[0], loop)
