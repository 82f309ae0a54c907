r"""DARTS: differentiable architecture search (Liu, Simonyan & Yang 2019), first-order.

**Continuous relaxation** (Sec. 2.2, eq. 2). Every edge :math:`(i, j)` of a cell carries all
candidate operations :math:`o \in \mathcal O` at once, mixed by a softmax over its
architecture parameters :math:`\alpha^{(i,j)}`:

.. math:: \bar o^{(i,j)}(x) = \sum_{o \in \mathcal O}
          \frac{\exp \alpha^{(i,j)}_o}{\sum_{o'} \exp \alpha^{(i,j)}_{o'}}\, o(x)

and an intermediate node is the sum of its incoming edges,
:math:`x^{(j)} = \sum_{i < j} \bar o^{(i,j)}(x^{(i)})` (eq. 1). The cell's output concatenates
its intermediate nodes along the channels.

**Bilevel optimisation, first order** (Sec. 2.3, Algorithm 1 with :math:`\xi = 0`): alternate

1. an architecture step :math:`\alpha \leftarrow \alpha - \eta_\alpha \nabla_\alpha
   \mathcal L_{val}(w, \alpha)` on a validation batch,
2. a weight step :math:`w \leftarrow w - \eta_w \nabla_w \mathcal L_{train}(w, \alpha)` on a
   training batch,

i.e. the gradient of the validation loss at the current weights instead of at the unrolled
:math:`w - \xi \nabla_w \mathcal L_{train}`. The paper's optimisers: momentum SGD with cosine
learning rate for :math:`w`; Adam (lr 3e-4, betas (0.5, 0.999), weight decay 1e-3) for
:math:`\alpha`.

**Discrete cell** (Sec. 2.4): each edge takes its strongest operation other than ``none``,
:math:`o^{(i,j)} = \arg\max_{o \ne \text{none}} \alpha^{(i,j)}_o`, and each intermediate node
keeps its ``k`` = 2 strongest incoming edges, the strength of an edge being that largest
softmax weight (fewer when the node has fewer inputs).

Here, for 28×28 MNIST: a stem (3×3 conv, BatchNorm, ReLU, 2×2 max pool to 14×14), one cell of
``n_nodes`` intermediate nodes over ``channels`` channels, then a 2×2 max pool and a Linear
classifier. The candidate set ``OPS`` follows the paper's operation list, reduced: ``none``,
``skip_connect``, ``max_pool_3x3``, ``sep_conv_3x3``, ``sep_conv_5x5``; a separable
convolution here is ReLU, depthwise k×k, pointwise 1×1, BatchNorm, applied once (DARTS
applies that block twice). In the search network the BatchNorms have no affine parameters,
as in the paper's search.

Tests: ``tests/optim/nas/test_nas_darts.py``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

import minnet
from minnet import functional as F
from minnet import nn, optimizers
from minnet.data import DataLoader

from .strategy import check_positive_int

__all__ = ["OPS", "mixed_op", "MixedOp", "SearchCell", "DiscreteCell", "DartsNetwork",
           "DartsSearchNetwork", "edge_list", "derive_cell", "darts_search", "build_darts"]


class Zero(nn.Module):
    """The ``none`` operation: :math:`o(x) = 0` (no edge)."""

    def forward(self, x):
        return x * 0.0


def _sep_conv(channels: int, k: int, affine: bool) -> nn.Module:
    return nn.Sequential(nn.ReLU(),
                         nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels,
                                   bias=False),
                         nn.Conv2d(channels, channels, 1, bias=False),
                         nn.BatchNorm2d(channels, affine=affine))


#: Candidate operations: name -> constructor ``(channels, affine) -> Module`` (shape-preserving).
OPS: dict[str, Callable[[int, bool], nn.Module]] = {
    "none": lambda c, affine: Zero(),
    "skip_connect": lambda c, affine: nn.Identity(),
    "max_pool_3x3": lambda c, affine: nn.MaxPool2d(3, stride=1, padding=1),
    "sep_conv_3x3": lambda c, affine: _sep_conv(c, 3, affine),
    "sep_conv_5x5": lambda c, affine: _sep_conv(c, 5, affine),
}


def mixed_op(outputs: Sequence[minnet.Tensor], alpha: minnet.Tensor) -> minnet.Tensor:
    r""":math:`\bar o(x) = \sum_o \operatorname{softmax}(\alpha)_o\, o(x)` from the candidate
    outputs :math:`o(x)` (equal shapes) and the edge's architecture parameters ``alpha``
    (shape (len(outputs),)); differentiable in both. Source: Liu et al. 2019, eq. 2. Test:
    ``tests/optim/nas/test_nas_darts.py::test_mixed_op_is_the_softmax_weighted_sum``."""
    if alpha.shape != (len(outputs),):
        raise ValueError(f"alpha must have shape ({len(outputs)},) for {len(outputs)} "
                         f"operations, got {alpha.shape}")
    weights = F.softmax(alpha, axis=0)
    total = outputs[0] * weights[0]
    for o in range(1, len(outputs)):
        total = total + outputs[o] * weights[o]
    return total


def edge_list(n_nodes: int) -> list[tuple[int, int]]:
    """The edges ``(i, j)``, :math:`0 \\le i < j \\le n`, of a cell with one input node 0 and
    ``n_nodes`` intermediate nodes, in the order of the rows of :math:`\\alpha`."""
    n_nodes = check_positive_int(n_nodes, "n_nodes")
    return [(i, j) for j in range(1, n_nodes + 1) for i in range(j)]


class MixedOp(nn.Module):
    """All candidate operations of one edge; ``forward(x, alpha)`` is ``mixed_op``."""

    def __init__(self, channels: int, op_names: Sequence[str]):
        super().__init__()
        self.ops = nn.ModuleList([OPS[name](channels, False) for name in op_names])

    def forward(self, x, alpha):
        return mixed_op([op(x) for op in self.ops], alpha)


class SearchCell(nn.Module):
    """The continuous cell: node j = Σ_{i<j} MixedOp_{ij}(node i); output = concat(nodes 1..n)."""

    def __init__(self, channels: int, n_nodes: int, op_names: Sequence[str]):
        super().__init__()
        self.n_nodes, self.edges = n_nodes, edge_list(n_nodes)
        self.mixed = nn.ModuleList([MixedOp(channels, op_names) for _ in self.edges])

    def forward(self, x, alpha):
        nodes = [x]
        for j in range(1, self.n_nodes + 1):
            node = None
            for e, (i, target) in enumerate(self.edges):
                if target == j:
                    term = self.mixed[e](nodes[i], alpha[e])
                    node = term if node is None else node + term
            nodes.append(node)
        return F.concatenate(nodes[1:], axis=1)


class DiscreteCell(nn.Module):
    """The derived cell: node j = Σ over its kept edges (i, op) of op(node i)."""

    def __init__(self, channels: int, genotype: Sequence[Sequence[tuple[int, str]]]):
        super().__init__()
        self.genotype = [list(node) for node in genotype]
        for j, node in enumerate(self.genotype, start=1):
            if not node or any(not 0 <= i < j or op not in OPS or op == "none" for i, op in node):
                raise ValueError(f"node {j} of the genotype must list (input < {j}, operation) "
                                 f"pairs with operations from {sorted(set(OPS) - {'none'})}, "
                                 f"got {node!r}")
        self.ops = nn.ModuleList([OPS[op](channels, True) for node in self.genotype
                                  for _, op in node])

    def forward(self, x):
        nodes, k = [x], 0
        for node in self.genotype:
            total = None
            for i, _ in node:
                out = self.ops[k](nodes[i])
                total, k = (out if total is None else total + out), k + 1
            nodes.append(total)
        return F.concatenate(nodes[1:], axis=1)


class DartsNetwork(nn.Module):
    """Stem (3×3 conv to ``channels``, BatchNorm, ReLU, 2×2 max pool), a cell, 2×2 max pool,
    Linear classifier over the concatenated nodes (1×28×28 inputs)."""

    def __init__(self, cell: nn.Module, channels: int, n_nodes: int, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2))
        self.cell = cell
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(n_nodes * channels * 7 * 7, n_classes))

    def forward(self, x):
        return self.head(self.cell(self.stem(x)))


class DartsSearchNetwork(DartsNetwork):
    """The supernet: a ``SearchCell`` and its architecture parameters ``alpha`` (one row per
    edge, one column per operation, initialised to :math:`10^{-3}\\,\\mathcal N(0, 1)` as in
    the paper's code). ``weights()`` and ``arch_parameters()`` split the two sets of
    parameters for the bilevel steps."""

    def __init__(self, channels: int = 8, n_nodes: int = 3,
                 op_names: Sequence[str] = tuple(OPS), n_classes: int = 10, seed: int = 0):
        channels = check_positive_int(channels, "channels")
        unknown = [name for name in op_names if name not in OPS]
        if unknown or len(op_names) < 2 or len(set(op_names)) != len(op_names):
            raise ValueError(f"op_names must be at least two distinct names from {list(OPS)}, "
                             f"got {list(op_names)!r}")
        super().__init__(SearchCell(channels, n_nodes, op_names), channels, n_nodes, n_classes)
        self.op_names, self.n_nodes = tuple(op_names), n_nodes
        rng = np.random.default_rng(seed)
        self.alpha = nn.Parameter(1e-3 * rng.normal(size=(len(self.cell.edges), len(op_names)))
                                  .astype(np.float32))

    def forward(self, x):
        return self.logits(x, self.alpha)

    def logits(self, x, alpha):
        """The network's output with the architecture parameters ``alpha`` (a Tensor)."""
        return self.head(self.cell(self.stem(x), alpha))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weights(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p is not self.alpha]

    def genotype(self, k: int = 2) -> list[list[tuple[int, str]]]:
        """``derive_cell`` of the current ``alpha``."""
        return derive_cell(self.alpha.data, self.op_names, self.n_nodes, k)


def derive_cell(alpha: np.ndarray, op_names: Sequence[str], n_nodes: int, k: int = 2
                ) -> list[list[tuple[int, str]]]:
    r"""The discrete cell of Liu et al. 2019, Sec. 2.4: for every edge the operation
    :math:`\arg\max_{o \ne \text{none}} \alpha_o`, and for every node j its
    :math:`\min(k, j)` incoming edges of largest :math:`\max_{o \ne \text{none}}
    \operatorname{softmax}(\alpha)_o` (ties: lower input index first). Returns, per node, the
    list of ``(input node, operation name)``. Test:
    ``tests/optim/nas/test_nas_darts.py::test_derive_cell_matches_a_brute_force_choice``."""
    edges = edge_list(n_nodes)
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.shape != (len(edges), len(op_names)):
        raise ValueError(f"alpha must have shape {(len(edges), len(op_names))} for {n_nodes} "
                         f"nodes and {len(op_names)} operations, got {alpha.shape}")
    k = check_positive_int(k, "k")
    usable = [o for o, name in enumerate(op_names) if name != "none"]
    if not usable:
        raise ValueError("op_names must hold an operation other than 'none'")
    weights = np.exp(alpha - alpha.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    genotype = []
    for j in range(1, n_nodes + 1):
        rows = [e for e, (_, jj) in enumerate(edges) if jj == j]
        strength = [weights[e, usable].max() for e in rows]
        order = sorted(range(len(rows)), key=lambda r: (-strength[r], r))[:min(k, j)]
        genotype.append([(edges[rows[r]][0], op_names[usable[int(np.argmax(weights[rows[r], usable]))]])
                         for r in sorted(order)])
    return genotype


def build_darts(genotype: Sequence[Sequence[tuple[int, str]]], channels: int = 8,
                n_classes: int = 10) -> DartsNetwork:
    """The network of a derived cell (``derive_cell``), trained from scratch afterwards."""
    return DartsNetwork(DiscreteCell(check_positive_int(channels, "channels"), genotype),
                        channels, len(genotype), n_classes)


def _mean_loss(model: nn.Module, data: tuple[np.ndarray, np.ndarray], batch_size: int) -> float:
    total = 0.0
    with minnet.no_grad():
        for xb, yb in DataLoader(*data, batch_size=batch_size):
            total += float(F.cross_entropy(model(minnet.Tensor(xb)), yb, reduction="sum").data)
    return total / len(data[1])


def darts_search(model: DartsSearchNetwork, train: tuple[np.ndarray, np.ndarray],
                 val: tuple[np.ndarray, np.ndarray], epochs: int, *, batch_size: int = 64,
                 w_lr: float = 0.025, w_momentum: float = 0.9, w_weight_decay: float = 3e-4,
                 alpha_lr: float = 3e-4, alpha_weight_decay: float = 1e-3, seed: int = 0
                 ) -> dict[str, list]:
    r"""First-order DARTS (Liu et al. 2019, Algorithm 1 with :math:`\xi = 0`): per step, one
    Adam step of :math:`\alpha` on :math:`\nabla_\alpha \mathcal L_{val}` (a validation batch),
    then one momentum-SGD step of the weights on :math:`\nabla_w \mathcal L_{train}` (a
    training batch; cosine learning rate over ``epochs``). Defaults are the paper's
    CIFAR-10 search settings (Sec. 3). Returns per epoch the mean validation loss in eval mode
    (``val_loss``, the first entry measured before any step) and the ``genotype``. Tests:
    ``tests/optim/nas/test_nas_darts.py::test_alpha_gradient_passes_gradcheck``,
    ``::test_a_tiny_search_decreases_the_validation_loss``."""
    if not isinstance(model, DartsSearchNetwork):
        raise TypeError(f"model must be a DartsSearchNetwork, got {type(model).__name__}")
    epochs, batch_size = check_positive_int(epochs, "epochs"), check_positive_int(batch_size, "batch_size")
    w_opt = optimizers.SGD(model.weights(), lr=w_lr, momentum=w_momentum,
                           weight_decay=w_weight_decay)
    scheduler = optimizers.CosineAnnealingLR(w_opt, T_max=epochs)
    a_opt = optimizers.Adam(model.arch_parameters(), lr=alpha_lr, betas=(0.5, 0.999),
                            weight_decay=alpha_weight_decay)
    model.eval()
    history = {"val_loss": [_mean_loss(model, val, batch_size)], "genotype": []}
    for epoch in range(epochs):
        model.train()
        train_batches = DataLoader(*train, batch_size=batch_size, shuffle=True, seed=seed + epoch)
        val_batches = DataLoader(*val, batch_size=batch_size, shuffle=True,
                                 seed=seed + 10_000 + epoch)
        for (xt, yt), (xv, yv) in zip(train_batches, val_batches):
            model.zero_grad()
            F.cross_entropy(model(minnet.Tensor(xv)), yv).backward()
            a_opt.step()  # architecture step on the validation batch
            model.zero_grad()
            F.cross_entropy(model(minnet.Tensor(xt)), yt).backward()
            w_opt.step()  # weight step on the training batch
        scheduler.step()
        model.eval()
        history["val_loss"].append(_mean_loss(model, val, batch_size))
        history["genotype"].append(model.genotype())
    model.zero_grad()
    return history
