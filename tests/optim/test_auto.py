"""Accuracy-targeted compression: option compression, costs, energy, sensitivities and their
additivity, the integer programme against brute force, and the repair loop."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import minnet
from minnet import models, nn
from optim import auto


def tiny_model_and_data(seed=0, n=60):
    """A 6-5-3 MLP and inputs labelled by a random linear teacher."""
    minnet.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x @ rng.standard_normal((6, 3))).argmax(axis=1)
    return model, (x, y)


def numpy_forward(w1, b1, w2, b2, x):
    return np.maximum(x @ w1.T + b1, 0) @ w2.T + b2


def numpy_loss(logits, y):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def numpy_prune(w, sparsity):
    """w with its round(sparsity · n) entries of smallest |w| set to zero."""
    smallest = np.argsort(np.abs(w), axis=None, kind="stable")[:int(round(sparsity * w.size))]
    out = w.copy().ravel()
    out[smallest] = 0
    return out.reshape(w.shape)


OPTIONS = auto.make_options((0.0, 0.5), (8, 3))


@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 12)),
              elements=st.floats(-4, 4, allow_nan=False, allow_subnormal=False)),
       st.sampled_from([0.0, 0.25, 0.5, 0.9]), st.integers(2, 8))
def test_compress_weight_prunes_then_quantizes(w, sparsity, bits):
    """The pruned entries are exactly the smallest |w| and are zero; per row a row takes at
    most 2^b values; with min-max ranges each kept weight moves
    by at most half of the step peak / (2^(b-1) - 1)."""
    out = auto.compress_weight(w, sparsity, bits, observer="minmax")
    n_pruned = int(round(sparsity * w.size))
    order = np.lexsort((np.arange(w.size), np.abs(w).ravel()))
    pruned = np.zeros(w.size, bool)
    pruned[order[:n_pruned]] = True
    pruned = pruned.reshape(w.shape)
    assert np.all(out[pruned] == 0)
    for row_in, row_out, row_pruned in zip(w, out, pruned):
        kept = row_in[~row_pruned]
        peak = np.abs(kept).max() if kept.size else 0.0
        if peak < 1e-6:
            continue
        values = np.unique(np.append(row_out, 0.0))
        assert len(values) <= 2 ** bits
        assert np.all(np.abs(row_out[~row_pruned] - kept) <= peak / (2 ** (bits - 1) - 1) / 2
                      + 1e-9 * peak)


def test_layer_macs_by_hand():
    """LeNet-5's layers: conv1 28·28·6·25, conv2 10·10·16·150, then 400·120, 120·84,
    84·10."""
    counts = auto.layer_macs(models.lenet5(), (1, 1, 28, 28))
    assert list(counts.values()) == [28 * 28 * 6 * 25, 10 * 10 * 16 * 150, 400 * 120,
                                     120 * 84, 84 * 10]


def test_energy_by_hand():
    """Horowitz 2014 / Han et al. 2016 figures: 3.7 + 0.9 pJ per float MAC, 0.2 + 0.1 pJ per
    8-bit MAC with a 32-bit accumulator, 640 pJ per 32 DRAM bits."""
    assert auto.energy_per_inference(10, 64, "fp32") == pytest.approx(10 * 4.6 + 2 * 640)
    assert auto.energy_per_inference(10, 64) == pytest.approx(10 * 0.3 + 2 * 640)
    with pytest.raises(ValueError, match="arithmetic"):
        auto.energy_per_inference(1, 1, "int4")


def test_option_costs_by_hand():
    """8 weights, 2 channels, 100 MACs at (s, b) = (0.5, 4): 4 codes of 4 bits + an 8-entry
    mask at H2(0.5) = 1 bit each → 3 bytes, + 8 bytes of scales; 50 MACs."""
    args = ({"a": 8}, {"a": 2}, {"a": 100}, [(0.5, 4), (0.0, 8)])
    assert auto.option_costs(*args, "bytes").tolist() == [[11.0, 16.0]]
    assert auto.option_costs(*args, "macs").tolist() == [[50.0, 100.0]]
    energy = auto.option_costs(*args, "energy")
    assert energy[0, 0] == pytest.approx(50 * 0.3 + 24 / 32 * 640)
    with pytest.raises(ValueError, match="objective"):
        auto.option_costs(*args, "latency_ms")


def test_sensitivity_table_is_one_layer_joint_change():
    """Row l, column k is the loss change of a copy where only layer l's weight is replaced
    by its compressed version, computed here by a NumPy forward pass."""
    model, data = tiny_model_and_data()
    table = auto.sensitivity_table(model, data, OPTIONS)
    w1, b1 = model[0].weight.data, model[0].bias.data
    w2, b2 = model[2].weight.data, model[2].bias.data
    base = numpy_loss(numpy_forward(w1, b1, w2, b2, data[0]), data[1])
    for k, (s, b) in enumerate(OPTIONS):
        one = numpy_loss(numpy_forward(auto.compress_weight(w1, s, b), b1, w2, b2, data[0]),
                         data[1])
        two = numpy_loss(numpy_forward(w1, b1, auto.compress_weight(w2, s, b), b2, data[0]),
                         data[1])
        assert table[0, k] == pytest.approx(one - base, abs=1e-5)
        assert table[1, k] == pytest.approx(two - base, abs=1e-5)


def test_recovered_sensitivities_prune_then_fine_tune():
    """With ``recover``: a pruned option is measured on the model with only that layer pruned
    (its mask kept), after ``recover`` (here: every bias halved, a change a NumPy forward pass
    can repeat), then the layer quantized at each width; unpruned options as without it.
    ``recover`` runs once per (layer, sparsity > 0)."""
    model, data = tiny_model_and_data(2)
    calls = []

    def recover(m):
        layers = [layer for layer in m.modules() if isinstance(layer, nn.Linear)]
        calls.append([float(np.mean(layer.weight.data == 0)) for layer in layers])
        for layer in layers:
            layer.bias.data = layer.bias.data / 2

    table = auto.sensitivity_table(model, data, OPTIONS, recover=recover)
    plain = auto.sensitivity_table(model, data, OPTIONS)
    assert sorted(calls) == sorted([[15 / 30, 0.0], [0.0, 8 / 15]])  # round(s n) of n
    w1, b1 = model[0].weight.data, model[0].bias.data
    w2, b2 = model[2].weight.data, model[2].bias.data
    base = numpy_loss(numpy_forward(w1, b1, w2, b2, data[0]), data[1])
    for k, (s, b) in enumerate(OPTIONS):
        if s == 0:
            assert table[:, k] == pytest.approx(plain[:, k], abs=1e-6)
            continue
        one = auto.compress_weight(numpy_prune(w1, s), 0.0, b)
        two = auto.compress_weight(numpy_prune(w2, s), 0.0, b)
        changed_one = numpy_loss(numpy_forward(one, b1 / 2, w2, b2 / 2, data[0]), data[1])
        changed_two = numpy_loss(numpy_forward(w1, b1 / 2, two, b2 / 2, data[0]), data[1])
        assert table[0, k] == pytest.approx(changed_one - base, abs=1e-5)
        assert table[1, k] == pytest.approx(changed_two - base, abs=1e-5)


def test_additivity_matches_brute_force():
    """The reported correlation equals np.corrcoef of (sum of table entries, joint change
    computed by a NumPy forward pass) over the configurations it drew."""
    model, data = tiny_model_and_data(1)
    table = auto.sensitivity_table(model, data, OPTIONS)
    result = auto.additivity(model, data, OPTIONS, table, n_configs=8, rng=3)
    w1, b1 = model[0].weight.data, model[0].bias.data
    w2, b2 = model[2].weight.data, model[2].bias.data
    base = numpy_loss(numpy_forward(w1, b1, w2, b2, data[0]), data[1])
    predicted, measured = [], []
    for k1, k2 in result["configs"]:
        predicted.append(table[0, k1] + table[1, k2])
        logits = numpy_forward(auto.compress_weight(w1, *OPTIONS[k1]), b1,
                               auto.compress_weight(w2, *OPTIONS[k2]), b2, data[0])
        measured.append(numpy_loss(logits, data[1]) - base)
    assert np.allclose(result["measured"], measured, atol=1e-5)
    assert result["r"] == pytest.approx(np.corrcoef(predicted, measured)[0, 1], abs=1e-4)


def test_hawq_v2_trace_matches_exact_hessian():
    """For one Linear layer under softmax cross-entropy, H = mean_i (diag p_i − p_i p_iᵀ) ⊗
    x_i x_iᵀ, so Tr H = mean_i Σ_c p_ic (1 − p_ic) ‖x_i‖²;
    Ω = Tr H / n · ‖C(W) − W‖²."""
    minnet.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 3))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    table, traces = auto.hawq_v2_table(model, (x, y), OPTIONS, n_samples=400, rng=0)
    w, b = model[0].weight.data.astype(np.float64), model[0].bias.data.astype(np.float64)
    logits = x.astype(np.float64) @ w.T + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    exact = float(np.mean((p * (1 - p)).sum(axis=1) * (x.astype(np.float64) ** 2).sum(axis=1)))
    assert traces[0] == pytest.approx(exact, rel=0.15)
    for k, (s, bits) in enumerate(OPTIONS):
        delta = auto.compress_weight(model[0].weight.data, s, bits).astype(np.float64) - w
        assert table[0, k] == pytest.approx(traces[0] / w.size * np.sum(delta ** 2), rel=1e-6)


@st.composite
def programmes(draw):
    layers, n_options = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    values = st.integers(0, 20).map(float)
    costs = np.array(draw(st.lists(values, min_size=layers * n_options,
                                   max_size=layers * n_options))).reshape(layers, n_options)
    drops = np.array(draw(st.lists(values, min_size=layers * n_options,
                                   max_size=layers * n_options))).reshape(layers, n_options)
    limit = float(draw(st.integers(0, 20 * layers)))
    return costs, drops, limit


@given(programmes(), st.booleans())
def test_allocate_equals_brute_force(problem, by_budget):
    """The MILP's choice is feasible and its objective equals the minimum over every choice
    enumerated; no feasible choice → ValueError."""
    costs, drops, limit = problem
    objective, constrained = (drops, costs) if by_budget else (costs, drops)
    rows = np.arange(costs.shape[0])
    feasible = [c for c in itertools.product(range(costs.shape[1]), repeat=costs.shape[0])
                if constrained[rows, list(c)].sum() <= limit]
    kwargs = {"budget": limit} if by_budget else {"tolerance": limit}
    if not feasible:
        with pytest.raises(ValueError, match="no allocation"):
            auto.allocate(costs, drops, **kwargs)
        return
    choice = auto.allocate(costs, drops, **kwargs)
    assert constrained[rows, choice].sum() <= limit
    best = min(objective[rows, list(c)].sum() for c in feasible)
    assert objective[rows, choice].sum() == pytest.approx(best)


def test_allocate_rejects_bad_input():
    with pytest.raises(ValueError, match="exactly one"):
        auto.allocate([[1.0]], [[1.0]], tolerance=1.0, budget=1.0)
    with pytest.raises(ValueError, match="drops must have the shape"):
        auto.allocate([[1.0, 2.0]], [[1.0]], tolerance=1.0)
    with pytest.raises(ValueError, match="finite"):
        auto.allocate([[np.nan]], [[1.0]], tolerance=1.0)


GROW_OPTIONS = auto.make_options((0.0, 0.5, 0.75), (8, 4))


@given(st.integers(0, 2**32 - 1), st.floats(0.0, 3.0), st.integers(1, 8))
def test_grow_cuts_keeps_only_fitting_steps(seed, tolerance, max_steps):
    """From an uncut choice that fits (its true drop 0), each measured proposal moves one
    layer to its next larger sparsity at the same bit width; it is the proposal of the
    smallest tiebreak increase per cost saved; a kept proposal fits (the true drops summed)
    and one that does not is never followed by a proposal on its layer; the excluded layer
    and every bit width stay; the result is the last kept choice and it fits."""
    rng = np.random.default_rng(seed)
    layers = 4
    sparsity = np.array([s for s, _ in GROW_OPTIONS])
    costs = rng.uniform(1, 2, (layers, 1)) - sparsity * rng.uniform(0.1, 1, (layers, 1))
    tiebreak = sparsity * rng.uniform(0, 1, (layers, 1)) + rng.uniform(0, 0.01, costs.shape)
    true_drop = sparsity * rng.uniform(0, 4, (layers, 1))
    rows = np.arange(layers)

    def measure(choice):
        return float(true_drop[rows, choice].sum())

    start = [int(rng.integers(0, 2)) for _ in range(layers)]  # sparsity 0, 8 or 4 bits
    out, history = auto.grow_cuts(start, GROW_OPTIONS, costs, tiebreak, tolerance, measure,
                                  max_steps=max_steps, exclude=[3])
    assert len(history) <= max_steps
    current, failed = list(start), set()
    for item in history:
        moved = [l for l in rows if item["choice"][l] != current[l]]
        assert len(moved) == 1 and moved[0] not in failed and moved[0] != 3
        l, old, new = moved[0], current[moved[0]], item["choice"][moved[0]]
        assert GROW_OPTIONS[new][1] == GROW_OPTIONS[old][1]
        assert GROW_OPTIONS[new][0] == min(s for s, b in GROW_OPTIONS
                                           if b == GROW_OPTIONS[old][1]
                                           and s > GROW_OPTIONS[old][0])
        ranks = {}
        for m in rows:
            if m in failed or m == 3 or GROW_OPTIONS[current[m]][0] == 0.75:
                continue
            nxt = current[m] + 2  # the same width at the next sparsity (options' order)
            ranks[m] = (max(tiebreak[m, nxt] - tiebreak[m, current[m]], 0)
                        / (costs[m, current[m]] - costs[m, nxt]))
        assert ranks[l] == min(ranks.values())
        assert item["measured"] == measure(item["choice"])
        if item["measured"] <= tolerance:
            current = item["choice"]
        else:
            failed.add(l)
    assert out == current and measure(out) <= tolerance


@given(programmes(), st.floats(1.0, 3.0), st.floats(0.0, 2.0))
def test_repair_terminates_and_meets_the_tolerance(problem, factor, extra):
    """With a measured drop that the one-layer sum underestimates (factor × sum + extra on
    any non-zero drop) and a zero-drop option in every layer, the loop stops within
    layers × options steps, every step lowers one layer's predicted drop, and it ends within
    the tolerance — or with no layer left to back off."""
    costs, drops, limit = problem
    drops[:, 0] = 0.0
    tolerance = limit / 2

    def measure(choice):
        total = drops[np.arange(len(choice)), choice].sum()
        return factor * total + (extra if total > 0 else 0.0)

    start = auto.allocate(costs, drops, tolerance=tolerance)
    choice, history = auto.verify_and_repair(start, costs, drops, tolerance, measure,
                                             max_steps=costs.size)
    assert len(history) <= costs.size + 1
    for before, after in zip(history, history[1:]):
        changed = [l for l, (a, b) in enumerate(zip(before["choice"], after["choice"])) if a != b]
        assert len(changed) == 1
        assert drops[changed[0], after["choice"][changed[0]]] < \
            drops[changed[0], before["choice"][changed[0]]]
    assert history[-1]["measured"] <= tolerance
    assert history[-1]["choice"] == choice


def test_back_off_breaks_ties_of_the_predicted_drop():
    """Every predicted drop 0 (a coarse accuracy table) and a joint drop that is not: without
    a tiebreak nothing can back off; with the one-layer loss changes, the layer of largest
    loss change (layer 1: 0.3) moves to its cheapest option of smaller loss change (option 1,
    cost 2, not option 2, cost 3), then layer 0; the repair loop follows these steps until the
    measured drop fits."""
    costs = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    drops = np.zeros((2, 3))
    loss = np.array([[0.2, 0.1, 0.0], [0.3, 0.05, 0.0]])
    assert auto.back_off([0, 0], costs, drops) is None
    assert auto.back_off([0, 0], costs, drops, loss) == [0, 1]
    assert auto.back_off([0, 1], costs, drops, loss) == [1, 1]
    assert auto.back_off([2, 2], costs, drops, loss) is None
    _, history = auto.verify_and_repair([0, 0], costs, drops, 0.5,
                                        lambda c: 1.0 - 0.3 * sum(c), tiebreak=loss)
    assert [h["choice"] for h in history] == [[0, 0], [0, 1], [1, 1]]
    assert history[-1]["measured"] == pytest.approx(0.4)


@given(programmes(), st.floats(0.1, 1.0))
def test_search_tolerance_finds_a_cheaper_fitting_choice(problem, factor):
    """When the one-layer sum overestimates the measured drop (measured = factor × sum,
    factor <= 1), the choice at limit τ fits, so the search returns a fitting choice at most
    as costly as it; every returned choice measures within τ."""
    costs, drops, limit = problem
    drops[:, 0] = 0.0

    def measure(choice):
        return factor * drops[np.arange(len(choice)), choice].sum()

    first = auto.allocate(costs, drops, tolerance=limit)
    best, history = auto.search_tolerance(costs, drops, limit, measure, max_steps=4)
    assert history[0]["choice"] == first
    assert best is not None
    rows = np.arange(costs.shape[0])
    assert measure(best) <= limit
    assert costs[rows, best].sum() <= costs[rows, first].sum()
    assert len(history) <= 4


@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_paired_drop_is_mean_and_standard_error(pairs):
    """The drop is 100 × mean(r − c) and its error 100 × sd(r − c) / √n (population sd)."""
    r, c = np.array(pairs, dtype=bool).T
    d = r.astype(float) - c.astype(float)
    drop, se = auto.paired_drop(r, c)
    assert drop == pytest.approx(100 * d.mean())
    assert se == pytest.approx(100 * d.std() / math.sqrt(len(d)), abs=1e-9)
    with pytest.raises(ValueError, match="equal-length"):
        auto.paired_drop(r, np.append(c, True))


@given(arrays(np.float64, st.tuples(st.integers(2, 6), st.integers(1, 5)),
              elements=st.integers(-4000, 4000).map(lambda v: v / 1000)),
       st.sampled_from([0.25, 0.5, 0.75]))
def test_structured_compress_weight_removes_the_smallest_l1_rows(w, sparsity):
    """``structured``: exactly round(s · C_out) rows are zero, and no kept row has a smaller
    L1 norm than a removed one (Li et al. 2017's filter ranking), checked by sorting here."""
    out = auto.compress_weight(w, sparsity, 8, observer="minmax", structured=True)
    removed = np.all(out == 0, axis=1) & np.any(w != 0, axis=1)
    n_removed = int(round(sparsity * w.shape[0]))
    norms = np.abs(w).sum(axis=1)
    assert np.count_nonzero(np.all(out == 0, axis=1)) >= n_removed
    smallest = np.argsort(norms, kind="stable")[:n_removed]
    assert np.all(out[smallest] == 0)
    kept = np.setdiff1d(np.arange(w.shape[0]), smallest)
    if kept.size and n_removed:
        assert norms[kept].min() >= norms[smallest].max()
    assert removed.sum() <= n_removed


def test_latency_costs_come_from_the_table_whatever_the_bits():
    """Option (s, b) of layer l costs latency[l][s]: the bit width does not change a dense
    kernel's time; a missing table is refused."""
    table = {"a": {0.0: 3e-5, 0.5: 2e-5}, "b": {0.0: 1e-5, 0.5: 4e-6}}
    options = [(0.5, 4), (0.0, 8), (0.5, 8)]
    costs = auto.option_costs({"a": 8, "b": 4}, {"a": 2, "b": 2}, {"a": 10, "b": 5}, options,
                              "latency", table)
    assert costs.tolist() == [[2e-5, 3e-5, 2e-5], [4e-6, 1e-5, 4e-6]]
    with pytest.raises(ValueError, match="latency"):
        auto.option_costs({"a": 8}, {"a": 2}, {"a": 10}, options, "latency")


def test_latency_table_times_every_layer_at_every_sparsity():
    """One positive finite time per (layer, sparsity), keyed by the layer names that
    ``quantizable_layers`` gives; no timing is compared (timings belong in benchmarks)."""
    model, _ = tiny_model_and_data()
    table = auto.latency_table(model, (1, 6), [0.0, 0.4], repeats=3)
    assert list(table) == ["0", "2"]
    assert all(list(row) == [0.0, 0.4] for row in table.values())
    assert all(np.isfinite(t) and t > 0 for row in table.values() for t in row.values())
    with pytest.raises(ValueError, match="repeats"):
        auto.latency_table(model, (1, 6), [0.0], repeats=0)


def test_integer_latency_table_times_the_integer_kernels(monkeypatch):
    """``engine="integer"`` times the integer-only kernels on uint8 codes with read-only int8
    weights of the kept output channels (LeNet-5: conv1 keeps 6 - round(0.5 · 6) = 3, the
    first Linear 120 - 60), with the layer's geometry; the float layers are not run."""
    calls = []

    def recording(kind):
        def kernel(x_q, x_zero_point, w_q, *rest):
            calls.append((kind, x_q.dtype, x_q.shape, w_q.dtype, w_q.shape, w_q.flags.writeable,
                          rest[-3:] if kind == "conv" else ()))
            return np.zeros(1, np.uint8)
        return kernel
    monkeypatch.setattr(auto, "conv2d_kernel", recording("conv"))
    monkeypatch.setattr(auto, "linear_kernel", recording("linear"))
    model = models.lenet5()
    table = auto.latency_table(model, (1, 1, 28, 28), [0.0, 0.5], repeats=2, engine="integer")
    assert list(table) == ["0", "3", "7", "9", "11"]
    assert all(np.isfinite(t) and t > 0 for row in table.values() for t in row.values())
    shapes = {(kind, x_shape, w_shape) for kind, _, x_shape, _, w_shape, _, _ in calls}
    assert ("conv", (1, 1, 28, 28), (3, 1, 5, 5)) in shapes
    assert ("conv", (1, 1, 28, 28), (6, 1, 5, 5)) in shapes
    assert ("linear", (1, 400), (60, 400)) in shapes
    assert ("conv", (1, 3, 14, 14), (16, 3, 5, 5)) in shapes  # conv2 after conv1 lost 3
    assert ("linear", (1, 200), (120, 200)) in shapes  # fc1 after conv2 lost 8 of 16 · 25
    assert all(x_dtype == np.uint8 and w_dtype == np.int8 and not writeable
               for _, x_dtype, _, w_dtype, _, writeable, _ in calls)
    assert {geometry for kind, *_, geometry in calls if kind == "conv"} == {
        ((1, 1), (2, 2), (1, 1)), ((1, 1), (0, 0), (1, 1))}
    with pytest.raises(ValueError, match="engine"):
        auto.latency_table(model, (1, 1, 28, 28), [0.0], engine="onnx")


def test_latency_table_charges_the_consumers_saving(monkeypatch):
    """With a stand-in time T = outputs kept · inputs seen, LeNet-5 at s = 0.5: conv1 keeps 3
    of 6 (3 · 1) and conv2 then sees 3 of its 6 inputs (16 · 3 - 16 · 6); conv2 keeps 8 of
    16 (8 · 6) and fc1 sees 400 - 8 · 25 inputs (120 · 200 - 120 · 400); the output layer
    has no consumer (5 · 84); at s = 0 each layer costs its own T."""
    monkeypatch.setattr(auto, "_layer_call", lambda layer, shape, keep, engine: (keep, shape))
    monkeypatch.setattr(auto, "_fastest_times", lambda runs, repeats: {
        key: float(keep * shape[1]) for key, (keep, shape) in runs.items()})
    table = auto.latency_table(models.lenet5(), (1, 1, 28, 28), [0.0, 0.5], engine="integer")
    assert table["0"] == {0.0: 6 * 1, 0.5: 3 * 1 + 16 * 3 - 16 * 6}
    assert table["3"] == {0.0: 16 * 6, 0.5: 8 * 6 + 120 * 200 - 120 * 400}
    assert table["7"][0.5] == 60 * 400 + 84 * 60 - 84 * 120
    assert table["11"] == {0.0: 10 * 84, 0.5: 5 * 84}


def test_option_costs_count_the_zeros_a_pruned_input_keeps():
    """A layer already half zero costs at sparsity 0 what it costs at 0.5 (8 weights at 8 bits:
    4 codes · 8 bits + 8 mask bits = 5 bytes, + 8 bytes of scales); a larger s still counts."""
    args = ({"a": 8}, {"a": 2}, {"a": 100}, [(0.0, 8), (0.5, 8), (0.75, 8)])
    costs = auto.option_costs(*args, "bytes", zeros={"a": 0.5})
    assert costs[0, 0] == costs[0, 1] == 13.0
    assert costs[0, 2] == auto.option_costs(*args, "bytes")[0, 2]
    assert auto.option_costs(*args, "macs", zeros={"a": 0.5})[0].tolist() == [50.0, 50.0, 25.0]
