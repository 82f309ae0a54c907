"""Search spaces: sampling, one-gene mutation, uniform crossover, encoding, validation."""
import json
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optim.nas import Choice, FloatRange, IntRange, SearchSpace, cnn_space, mlp_space

OPTIONS = st.one_of(st.integers(-50, 50), st.sampled_from(["relu", "tanh", "a", "b", "c"]),
                    st.sampled_from([0.25, 1.5, -3.0]), st.booleans(), st.none())


@st.composite
def genes(draw, name):
    kind = draw(st.sampled_from(["choice", "int", "float"]))
    if kind == "choice":
        options = draw(st.lists(OPTIONS, min_size=1, max_size=5, unique_by=lambda o: (o, type(o))))
        # options must be distinct under == (True == 1): keep the first of each class
        distinct = []
        for o in options:
            if all(o != d for d in distinct):
                distinct.append(o)
        return Choice(name, tuple(distinct))
    low = draw(st.integers(-20, 20))
    width = draw(st.integers(0, 30))
    if kind == "int":
        return IntRange(name, low, low + width)
    return FloatRange(name, float(low), low + width / 3)


@st.composite
def spaces(draw, constrained=True):
    n = draw(st.integers(1, 6))
    space = SearchSpace([draw(genes(f"gene{i}")) for i in range(n)])
    if constrained and draw(st.booleans()):
        # a constraint that a fair share of architectures satisfies
        first, kept = space.genes[0].name, space.genes[0].sample(np.random.default_rng(0))
        space = space.with_constraints(lambda arch: zlib.crc32(repr(arch[first]).encode()) % 3 != 0
                                       or arch[first] == kept)
    return space


@given(spaces(), st.integers(0, 2**32 - 1))
def test_sample_is_valid_and_json_round_trips(space, seed):
    arch = space.sample(np.random.default_rng(seed))
    assert space.is_valid(arch) and list(arch) == space.names
    assert space.is_valid(json.loads(json.dumps(arch)))


@given(spaces(), st.integers(0, 2**32 - 1))
def test_mutation_changes_exactly_one_gene_and_stays_valid(space, seed):
    rng = np.random.default_rng(seed)
    if all(g.n_values == 1 for g in space.genes):
        with pytest.raises(ValueError, match="single value"):
            space.mutate(space.sample(rng), rng)
        return
    arch = space.sample(rng)
    for _ in range(5):
        child = space.mutate(arch, rng)
        assert sum(not (type(child[n]) is type(arch[n]) and child[n] == arch[n]) for n in space.names) == 1
        assert space.is_valid(child)
        arch = child


@given(spaces(), st.integers(0, 2**32 - 1))
def test_crossover_takes_every_gene_from_a_parent(space, seed):
    rng = np.random.default_rng(seed)
    a, b = space.sample(rng), space.sample(rng)
    child = space.crossover(a, b, rng)
    assert space.is_valid(child)
    for name in space.names:
        assert any(type(child[name]) is type(p[name]) and child[name] == p[name] for p in (a, b))


def test_crossover_mixes_parents():
    space = SearchSpace([Choice(f"g{i}", (0, 1)) for i in range(20)])
    rng = np.random.default_rng(0)
    child = space.crossover({f"g{i}": 0 for i in range(20)}, {f"g{i}": 1 for i in range(20)}, rng)
    assert 0 < sum(child.values()) < 20  # probability 2 * 2**-20 of failing by chance


@given(spaces(constrained=False), st.integers(0, 2**32 - 1))
def test_encoding_is_in_unit_cube_and_injective(space, seed):
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(10)]
    codes = np.array([space.encode(a) for a in archs])
    assert codes.shape == (10, space.dim) and np.all((codes >= 0) & (codes <= 1))
    for a, ca in zip(archs, codes):
        for b, cb in zip(archs, codes):
            if space.key(a) != space.key(b):
                assert not np.array_equal(ca, cb)


def test_choice_encoding_ordinal_for_numbers_one_hot_otherwise():
    widths = Choice("width", (64, 16, 32))
    assert [widths.encode(v).tolist() for v in (16, 32, 64)] == [[0.0], [0.5], [1.0]]
    act = Choice("act", ("relu", "tanh"))
    assert act.encode("tanh").tolist() == [0.0, 1.0]
    assert FloatRange("x", 2.0, 4.0).encode(3.0).tolist() == [0.5]
    assert IntRange("n", 3, 3).encode(3).tolist() == [0.0]


def test_range_mutation_is_local_and_inside_the_range():
    rng = np.random.default_rng(0)
    gene = IntRange("n", 0, 100)
    steps = [gene.mutate(50, rng) - 50 for _ in range(500)]
    assert all(s != 0 for s in steps) and np.median(np.abs(steps)) < 20
    at_bound = [FloatRange("x", 0.0, 1.0).mutate(1.0, rng) for _ in range(200)]
    assert all(0.0 <= v < 1.0 for v in at_bound)


def test_membership_keeps_types_apart():
    space = SearchSpace([Choice("a", (1, 2)), IntRange("b", 0, 3), FloatRange("c", 0.0, 1.0)])
    assert space.contains({"a": 1, "b": 0, "c": 0.5})
    assert space.contains({"c": 0.5, "b": 0, "a": 1})  # gene order does not matter
    for bad in ({"a": True, "b": 0, "c": 0.5}, {"a": 1.0, "b": 0, "c": 0.5},
                {"a": 1, "b": 0.0, "c": 0.5}, {"a": 1, "b": 0, "c": 1}, {"a": 1, "b": 4, "c": 0.5},
                {"a": 1, "b": 0}, {"a": [1], "b": 0, "c": 0.5}, [1, 0, 0.5]):
        assert not space.contains(bad)


def test_constraints_are_applied_and_extended():
    space = SearchSpace([IntRange("a", 0, 9), IntRange("b", 0, 9)], constraints=[lambda x: x["a"] < x["b"]])
    tighter = space.with_constraints(lambda x: x["a"] + x["b"] <= 9)
    rng = np.random.default_rng(1)
    assert all(space.is_valid(space.sample(rng)) for _ in range(50))
    archs = [tighter.sample(rng) for _ in range(50)]
    assert all(a["a"] < a["b"] and a["a"] + a["b"] <= 9 for a in archs)
    assert all(tighter.is_valid(tighter.mutate(a, rng)) for a in archs)
    assert not space.is_valid({"a": 5, "b": 5}) and space.contains({"a": 5, "b": 5})
    # no single-gene change keeps b - a == 1: mutation reports it instead of looping
    stuck = space.with_constraints(lambda x: x["b"] - x["a"] == 1)
    with pytest.raises(RuntimeError, match="no valid architecture after 1000 mutations"):
        stuck.mutate(stuck.sample(rng), rng)


def test_decode_uses_build_on_valid_architectures_only():
    space = SearchSpace([IntRange("a", 0, 3)], constraints=[lambda x: x["a"] != 2],
                        build=lambda arch: ("model", arch["a"]))
    assert space.decode({"a": 1}) == ("model", 1)
    with pytest.raises(ValueError, match="constraints"):
        space.decode({"a": 2})
    with pytest.raises(ValueError, match="build"):
        SearchSpace([IntRange("a", 0, 3)]).decode({"a": 1})


@pytest.mark.parametrize("make, error, match", [
    (lambda: SearchSpace([]), ValueError, "genes must not be empty"),
    (lambda: Choice("a", ()), ValueError, "options must not be empty"),
    (lambda: Choice("a", (1, 1)), ValueError, "distinct"),
    (lambda: Choice("a", (1, True)), ValueError, "distinct"),
    (lambda: Choice("a", ([1],)), TypeError, "options"),
    (lambda: Choice("a", (float("nan"),)), TypeError, "options"),
    (lambda: Choice("", (1,)), ValueError, "name"),
    (lambda: IntRange("n", 3, 2), ValueError, "empty range"),
    (lambda: IntRange("n", 0.5, 2), TypeError, "low"),
    (lambda: FloatRange("x", 0.0, float("inf")), TypeError, "high"),
    (lambda: SearchSpace([IntRange("a", 0, 1), Choice("a", (1,))]), ValueError, "distinct"),
    (lambda: SearchSpace([("a", (1, 2))]), TypeError, "Choice"),
    (lambda: SearchSpace([IntRange("a", 0, 1)], constraints=[1]), TypeError, "callables"),
    (lambda: SearchSpace([IntRange("a", 0, 1)], max_tries=0), ValueError, "max_tries"),
])
def test_bad_space_definitions_are_rejected(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_calls_are_rejected():
    space = SearchSpace([IntRange("a", 0, 3)], max_tries=20)
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="rng"):
        space.sample(0)
    with pytest.raises(ValueError, match="genes"):
        space.mutate({"b": 1}, rng)
    with pytest.raises(ValueError, match=r"arch\['a'\]"):
        space.encode({"a": 7})
    with pytest.raises(RuntimeError, match="constraints"):
        space.with_constraints(lambda arch: False).sample(rng)
    with pytest.raises(ValueError, match="single value"):
        SearchSpace([Choice("a", (1,))]).mutate({"a": 1}, rng)


def test_shipped_spaces_are_search_spaces():
    assert isinstance(mlp_space(), SearchSpace) and isinstance(cnn_space(), SearchSpace)
