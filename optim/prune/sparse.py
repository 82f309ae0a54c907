"""Sparse inference layers: a pruned Linear or Conv2d whose weight is stored in CSR form.

``SparseLinear`` computes ``x W^T + b`` with ``csr.csr_matmul``; ``SparseConv2d`` does the
same on the im2col columns of its input. They are inference layers: their outputs carry no
gradient (use the masked dense model to train). ``sparsify`` swaps them in where the weight is
sparse enough to be faster (see ``benchmarks/bench_prune.py`` for the measured crossover).
Tests: ``tests/optim/prune/test_prune_csr.py``.
"""
from __future__ import annotations

import copy

import numpy as np

import minnet
from minnet import nn
from minnet.kernels.im2col import im2col, output_size
from minnet.ops.conv import int_pair
from optim.graph.compiled import algorithm_options
from optim.graph.ir import Graph, Node

from ._checks import check_fraction
from minnet.kernels.csr import CSR, LOOPS, csr_matmul, to_csr
from .masks import sparsity
from .parametrize import effective_weight, remove_all
from .shrink import flat_layers


def _input(x) -> np.ndarray:
    if isinstance(x, minnet.Tensor):
        if x.requires_grad and minnet.is_grad_enabled():
            raise RuntimeError("sparse layers are for inference: their output has no gradient; "
                               "call them under minnet.no_grad() or on a tensor without grad")
        return x.data
    return np.asarray(x)


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` in CSR form (buffers ``data``, ``indices``, ``indptr``);
    ``loop`` fixes the Numba loop (``"gather"`` or ``"axpy"``, see ``minnet.kernels.csr``),
    None lets the kernel switch at its default batch size."""

    def __init__(self, linear: nn.Linear, loop: str | None = None):
        super().__init__()
        if loop not in (None,) + LOOPS:
            raise ValueError(f"loop must be one of {LOOPS} or None, got {loop!r}")
        self.loop = loop
        csr = to_csr(effective_weight(linear, "weight"))
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("data", csr.data)
        self.register_buffer("indices", csr.indices)
        self.register_buffer("indptr", csr.indptr)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.data.copy())

    @property
    def csr(self):
        # read from the buffer table: Module attribute look-ups cost ~0.75 µs each here, against
        # a 7.7 µs kernel at batch 1
        buffers = self._buffers
        return CSR(buffers["data"], buffers["indices"], buffers["indptr"],
                   (self.out_features, self.in_features))

    def forward(self, x):
        x = _input(x)
        y = csr_matmul(x.reshape(-1, self.in_features), self.csr, self.loop)
        bias = self._buffers["bias"]
        if bias is not None:
            y += bias
        return minnet.Tensor(y.reshape(*x.shape[:-1], self.out_features))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self.data.size}")


class SparseConv2d(nn.Module):
    """A Conv2d (groups=1) whose (C_out, C_in k_h k_w) weight matrix is in CSR form:
    ``y[n, :, p] = W cols[n, :, p] + b`` over the im2col columns."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.groups != 1:
            raise ValueError(f"SparseConv2d supports groups=1, got groups={conv.groups}")
        w = effective_weight(conv, "weight")
        csr = to_csr(w.reshape(w.shape[0], -1))
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = conv.kernel_size
        self.stride = int_pair("stride", conv.stride, 1)
        self.padding = int_pair("padding", conv.padding, 0)
        self.dilation = int_pair("dilation", conv.dilation, 1)
        self.register_buffer("data", csr.data)
        self.register_buffer("indices", csr.indices)
        self.register_buffer("indptr", csr.indptr)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.data.copy())

    @property
    def csr(self):
        return CSR(self.data, self.indices, self.indptr,
                   (self.out_channels, self.in_channels * int(np.prod(self.kernel_size))))

    def forward(self, x):
        x = _input(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (N, {self.in_channels}, H, W), got {x.shape}")
        geometry = (self.kernel_size, self.stride, self.padding, self.dilation)
        oh, ow = (output_size(x.shape[2 + a], self.kernel_size[a], self.stride[a],
                              self.padding[a], self.dilation[a]) for a in (0, 1))
        cols = im2col(np.ascontiguousarray(x), *geometry)          # (N, C k k, P)
        n, ckk, p = cols.shape
        y = csr_matmul(cols.transpose(0, 2, 1).reshape(n * p, ckk), self.csr)  # (N P, C_out)
        if self.bias is not None:
            y += self.bias
        return minnet.Tensor(np.ascontiguousarray(
            y.reshape(n, p, self.out_channels).transpose(0, 2, 1)).reshape(n, -1, oh, ow))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, nnz={self.data.size}")


def linear_kernel_choice(weight: np.ndarray, batch_size: int, cost_model) -> str:
    """``"dense"``, ``"sparse_gather"`` or ``"sparse_axpy"``: the kernel a calibrated
    ``optim.graph.CostModel`` predicts fastest for ``x W^T`` at ``batch_size`` rows (the same
    choice the compiled graph makes for that shape)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    weight = np.asarray(weight)
    graph = Graph.build({"x": ((batch_size, weight.shape[1]), weight.dtype)},
                        [Node("Linear", ("x", "w"), "y")], ["y"], {"w": weight})
    node = graph.nodes[0]
    return min(algorithm_options(node, graph), key=lambda a: cost_model.node_cost(node, graph, a))


def sparsify(model: nn.Sequential, min_sparsity: float = 0.95,
             types: tuple[type, ...] = (nn.Linear,), cost_model=None,
             batch_size: int = 1) -> nn.Sequential:
    """A copy of ``model`` in which every layer of ``types`` (Linear and/or Conv2d with
    groups=1) whose effective weight is at least ``min_sparsity`` zeros is replaced by its
    sparse twin; the copy is for inference.

    With a calibrated ``cost_model`` (``optim.graph.calibrate``) a Linear is swapped instead
    exactly when the model predicts a CSR loop faster than the dense product at ``batch_size``
    (``linear_kernel_choice``), with that loop fixed: a fixed sparsity threshold does not carry
    across machines (on one machine of this kind the 90 %-sparse 784→300 layer at batch 1 ran
    1.4–1.6× faster in CSR, on another 0.45–0.54×). Without one, the default threshold is where
    ``benchmarks/bench_prune.py`` measured the CSR layer at least as fast as the dense Linear
    (784→300, one core) at every batch size it tried (1, 4, 8, 64)."""
    min_sparsity = check_fraction(min_sparsity, "min_sparsity")
    flat_layers(model)
    out = remove_all(copy.deepcopy(model))
    for name, module in list(out.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, types):
                continue
            if cost_model is not None and isinstance(child, nn.Linear):
                choice = linear_kernel_choice(child.weight.data, batch_size, cost_model)
                if choice != "dense":
                    module.register_module(child_name,
                                           SparseLinear(child, choice.removeprefix("sparse_")))
                continue
            if sparsity(child.weight.data) < min_sparsity:
                continue
            if isinstance(child, nn.Linear):
                module.register_module(child_name, SparseLinear(child))
            elif isinstance(child, nn.Conv2d) and child.groups == 1:
                module.register_module(child_name, SparseConv2d(child))
    return out
