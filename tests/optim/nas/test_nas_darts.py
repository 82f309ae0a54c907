"""DARTS: the mixed operation against its definition, architecture gradients against finite
differences, the derived cell against a brute-force choice, and a tiny first-order search
that lowers the validation loss."""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minnet
from minnet import functional as F
from minnet.data import load_mnist
from optim import metrics
from optim.nas import (OPS, DartsSearchNetwork, build_darts, darts_search, derive_cell,
                       edge_list, mixed_op)


@given(seed=st.integers(0, 10_000), n_ops=st.integers(1, 5))
def test_mixed_op_is_the_softmax_weighted_sum(seed, n_ops):
    rng = np.random.default_rng(seed)
    outs = [rng.normal(size=(2, 3, 4)) for _ in range(n_ops)]
    alpha = rng.normal(size=n_ops) * 3
    p = np.exp(alpha) / np.exp(alpha).sum()
    expected = sum(p[o] * outs[o] for o in range(n_ops))
    got = mixed_op([minnet.Tensor(o) for o in outs], minnet.Tensor(alpha))
    np.testing.assert_allclose(got.data, expected, rtol=1e-12, atol=1e-12)
    # d/dα_o of <ō, g> is p_o (<o, g> − Σ_q p_q <q, g>)
    g = rng.normal(size=(2, 3, 4))
    a = minnet.Tensor(alpha, requires_grad=True)
    (mixed_op([minnet.Tensor(o) for o in outs], a) * minnet.Tensor(g)).sum().backward()
    inner = np.array([np.sum(o * g) for o in outs])
    np.testing.assert_allclose(a.grad, p * (inner - p @ inner), rtol=1e-9, atol=1e-12)


def _tiny_batch(n=3):
    x, y = load_mnist("train")
    return x[:n].astype(np.float64), y[:n]


def test_alpha_gradient_passes_gradcheck():
    minnet.manual_seed(0)
    net = DartsSearchNetwork(channels=2, n_nodes=2, seed=1).double()
    x, y = _tiny_batch()
    alpha = np.random.default_rng(2).normal(size=net.alpha.shape)
    assert minnet.gradcheck(lambda a: F.cross_entropy(net.logits(minnet.Tensor(x), a), y),
                            [alpha], eps=1e-6, atol=1e-6, rtol=1e-4)


def _brute_force_cell(alpha, op_names, n_nodes, k):
    """Every subset of each node's inputs; keep the one of largest total edge strength."""
    p = np.exp(alpha) / np.exp(alpha).sum(axis=1, keepdims=True)
    usable = [o for o, name in enumerate(op_names) if name != "none"]
    edges = edge_list(n_nodes)
    cell = []
    for j in range(1, n_nodes + 1):
        rows = {i: e for e, (i, jj) in enumerate(edges) if jj == j}
        best = max(itertools.combinations(sorted(rows), min(k, j)),
                   key=lambda subset: sum(max(p[rows[i], o] for o in usable) for i in subset))
        cell.append([(i, op_names[max(usable, key=lambda o: p[rows[i], o])]) for i in best])
    return cell


@given(seed=st.integers(0, 10_000), n_nodes=st.integers(1, 4), k=st.integers(1, 3))
def test_derive_cell_matches_a_brute_force_choice(seed, n_nodes, k):
    names = tuple(OPS)
    alpha = np.random.default_rng(seed).normal(size=(len(edge_list(n_nodes)), len(names))) * 2
    alpha[0, names.index("none")] = 50.0  # 'none' is never chosen, however strong
    assert derive_cell(alpha, names, n_nodes, k) == _brute_force_cell(alpha, names, n_nodes, k)


def test_a_tiny_search_decreases_the_validation_loss():
    minnet.manual_seed(0)
    x, y = load_mnist("train")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))[:256]
    train, val = (x[idx[:128]], y[idx[:128]]), (x[idx[128:]], y[idx[128:]])
    net = DartsSearchNetwork(channels=4, n_nodes=2, seed=0)
    start = net.alpha.data.copy()
    history = darts_search(net, train, val, epochs=3, batch_size=32, w_lr=0.05, alpha_lr=3e-3)
    assert len(history["val_loss"]) == 4 and len(history["genotype"]) == 3
    assert history["val_loss"][-1] < 0.8 * history["val_loss"][0]
    assert not np.allclose(net.alpha.data, start)  # the architecture steps moved alpha
    model = build_darts(history["genotype"][-1], channels=4)
    assert model(minnet.Tensor(x[:2])).shape == (2, 10)
    assert metrics.macs(model, (1, 1, 28, 28)) > 0


def test_discrete_cell_sums_its_chosen_operations():
    minnet.manual_seed(3)
    genotype = [[(0, "sep_conv_3x3")], [(0, "skip_connect"), (1, "max_pool_3x3")]]
    model = build_darts(genotype, channels=3).double().eval()
    x = _tiny_batch(2)[0]
    with minnet.no_grad():
        s = model.stem(minnet.Tensor(x))
        ops = model.cell.ops
        n1 = ops[0](s)
        n2 = ops[1](s) + ops[2](n1)
        expected = model.head(F.concatenate([n1, n2], axis=1)).data
        np.testing.assert_allclose(model(minnet.Tensor(x)).data, expected, rtol=1e-12)
        np.testing.assert_allclose(ops[1](s).data, s.data)  # skip is the identity


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="alpha must have shape"):
        mixed_op([minnet.Tensor(np.ones(2))] * 3, minnet.Tensor(np.ones(2)))
    with pytest.raises(ValueError, match="op_names"):
        DartsSearchNetwork(op_names=("none", "conv_7x7"))
    with pytest.raises(ValueError, match="alpha must have shape"):
        derive_cell(np.ones((2, 5)), tuple(OPS), 2)
    with pytest.raises(ValueError, match="node 1 of the genotype"):
        build_darts([[(1, "skip_connect")]])
    with pytest.raises(TypeError, match="DartsSearchNetwork"):
        darts_search(build_darts([[(0, "skip_connect")]]), (None, None), (None, None), 1)
