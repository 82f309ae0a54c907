"""Dependency-aware structured pruning on graphs (optim/prune/dependency.py): the shrunk
graph computes what the masked graph computes, groups follow the couplings by hand, frozen
dimensions never change, and group importance is the DepGraph sum."""
import numpy as np
import pytest

from minnet.models import lenet5
from optim.graph import execute, trace
from optim.graph.ir import Graph, Node, as_type
from optim.graph.zoo import random_model, residual_cnn
from optim.prune.dependency import (dependency_groups, group_importance, mask_channels,
                                    prune_graph_channels, remove_channels, select_channels)


def _sample(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("amount", [0.25, 0.5, 0.75])
def test_removing_channels_computes_exactly_what_masking_them_does(seed, amount):
    model, shape = random_model(seed)
    x = _sample(shape)
    graph = trace(model, x, dynamic_axes={0: "N"})
    groups = dependency_groups(graph)
    removed = select_channels(graph, groups, amount)
    shrunk = remove_channels(graph, groups, removed)
    masked = mask_channels(graph, groups, removed)
    for batch in (1, 5):
        xb = _sample((batch,) + shape[1:], seed=batch)
        np.testing.assert_allclose(execute(shrunk, xb), execute(masked, xb), rtol=1e-5, atol=1e-5)
    kept = sum(len(g) - len(r) for g, r in zip(groups, removed))
    assert kept >= len(groups)  # never a whole group
    assert shrunk.types[shrunk.outputs[0]].shape[1:] == graph.types[graph.outputs[0]].shape[1:]


def test_residual_groups_span_both_branches_and_the_skip():
    graph = trace(residual_cnn(channels=8), _sample((2, 1, 28, 28)))
    groups = dependency_groups(graph)
    assert [len(g) for g in groups] == [8, 8, 8]
    chain = groups[0]  # the stem and both blocks' second convs are tied by the skip adds
    names = {name for name, axis in chain.slices}
    for layer in ("0", "3.body.3", "5.body.3"):
        assert (f"{layer}.weight", 0) in chain.slices
    assert ("8.weight", 1) in chain.slices and "1.running_mean" in names
    inner = {name for g in groups[1:] for name, _ in g.slices}
    assert {"3.body.0.weight", "5.body.0.weight"} <= inner


def test_flatten_couples_a_channel_with_its_block_of_features():
    graph = trace(lenet5(), _sample((2, 1, 28, 28)))
    groups = {len(g): g for g in dependency_groups(graph)}
    conv2 = groups[16]
    block = conv2.channels[3][("7.weight", 1)]
    np.testing.assert_array_equal(block, np.arange(3 * 25, 4 * 25))
    assert len(conv2.channels[3][("3.weight", 0)]) == 1


def test_concat_offsets_and_graph_boundaries():
    x = as_type(("N", 3, 6, 6), np.float32)
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 3, 1, 1))
    w3 = rng.standard_normal((5, 6, 1, 1))
    conv = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    point = {**conv, "padding": (0, 0)}
    nodes = [Node("Conv2d", ("x", "w1"), "a", conv), Node("Conv2d", ("x", "w2"), "b", point),
             Node("Concatenate", ("a", "b"), "c", {"axis": 1}),
             Node("Conv2d", ("c", "w3"), "y", point)]
    consts = {k: v.astype(np.float32) for k, v in {"w1": w1, "w2": w2, "w3": w3}.items()}
    graph = Graph.build({"x": x}, nodes, ["y"], consts)
    groups = dependency_groups(graph)
    assert sorted(len(g) for g in groups) == [2, 4]  # the input and output channels are frozen
    second = next(g for g in groups if len(g) == 2)
    assert [int(ch[("w3", 1)][0]) for ch in second.channels] == [4, 5]  # offset by a's 4
    removed = [np.array([1]) if len(g) == 4 else np.array([0]) for g in groups]
    shrunk = remove_channels(graph, groups, removed)
    assert shrunk.constants["w3"].shape == (5, 4, 1, 1)
    xb = _sample((2, 3, 6, 6))
    np.testing.assert_allclose(execute(shrunk, xb), execute(mask_channels(graph, groups, removed), xb),
                               rtol=1e-5, atol=1e-5)


def test_group_importance_is_the_sum_of_squares_over_every_coupled_slice():
    graph = trace(lenet5(batch_norm=True), _sample((2, 1, 28, 28)))
    group = next(g for g in dependency_groups(graph) if len(g) == 6)
    scores = group_importance(graph, group)
    k = 2
    brute = sum(float(np.sum(np.moveaxis(graph.constants[name].astype(np.float64), axis, 0)[idx] ** 2))
                for (name, axis), idx in group.channels[k].items())
    assert scores[k] == pytest.approx(brute, rel=1e-12)
    mean = group_importance(graph, group, reduction="mean")
    np.testing.assert_allclose(mean, scores / len(group.slices))
    l1 = group_importance(graph, group, saliency=np.abs)
    assert l1[k] == pytest.approx(sum(float(np.abs(np.moveaxis(graph.constants[n], a, 0)[i]).sum())
                                      for (n, a), i in group.channels[k].items()), rel=1e-6)


def test_the_least_important_channels_go_first_and_bad_arguments_are_named():
    graph = trace(lenet5(), _sample((2, 1, 28, 28)))
    groups = dependency_groups(graph)
    removed = select_channels(graph, groups, 0.5)
    for group, cut in zip(groups, removed):
        scores = group_importance(graph, group)
        kept = np.setdiff1d(np.arange(len(group)), cut)
        assert scores[cut].max() <= scores[kept].min()
    with pytest.raises(ValueError, match="amount"):
        select_channels(graph, groups, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        remove_channels(graph, groups, [np.array([999])] + removed[1:])
    with pytest.raises(ValueError, match="reduction"):
        group_importance(graph, groups[0], reduction="max")
    assert prune_graph_channels(graph, 0.0).signature() == graph.signature()
