"""Declarative search spaces: named genes, constraints, and the variation operators.

An *architecture* is a plain ``dict`` mapping each gene's name to one of its values (str, int,
float, bool or None), so it serialises to JSON unchanged. A ``SearchSpace`` samples, mutates,
crosses over and encodes architectures; every architecture it returns satisfies the space's
constraints (predicates ``arch -> bool``), which are checked before anything is evaluated.
Turning an architecture into a model is left to the ``build`` callable given to the space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np

__all__ = ["Choice", "IntRange", "FloatRange", "Gene", "SearchSpace", "MUTATION_SCALE"]

#: Standard deviation of a range gene's mutation step, as a fraction of the range's width.
MUTATION_SCALE = 0.1
_SCALAR_TYPES = (str, int, float, bool, type(None))


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"gene name must be a non-empty string, got {name!r}")


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps types apart (``True`` is not ``1``, ``1`` is not ``1.0``)."""
    return type(a) is type(b) and a == b


def _reflect(x: float, low: float, high: float) -> float:
    """Fold ``x`` back into [low, high] by mirroring at the bounds (a triangle wave)."""
    width = high - low
    t = (x - low) % (2 * width)
    return low + (t if t <= width else 2 * width - t)


@dataclass(frozen=True)
class Choice:
    """A gene taking one of a finite tuple of distinct options.

    Mutation draws one of the *other* options uniformly. Encoding: options that are all
    numbers become their rank among the sorted options scaled to [0, 1] (one coordinate);
    otherwise a one-hot vector (one coordinate per option).
    """

    name: str
    options: tuple

    def __post_init__(self):
        _check_name(self.name)
        options = tuple(o.item() if isinstance(o, np.generic) else o for o in self.options)
        if not options:
            raise ValueError(f"gene {self.name!r}: options must not be empty")
        for option in options:
            if not isinstance(option, _SCALAR_TYPES) or (isinstance(option, float)
                                                         and not math.isfinite(option)):
                raise TypeError(f"gene {self.name!r}: options must be finite str/int/float/bool/"
                                f"None, got {option!r}")
        if any(a == b for i, a in enumerate(options) for b in options[i + 1:]):
            raise ValueError(f"gene {self.name!r}: options must be distinct, got {options!r}")
        object.__setattr__(self, "options", options)
        if self._numeric:
            ranks = sorted(options)
            codes = [[ranks.index(o) / max(len(options) - 1, 1)] for o in options]
        else:
            codes = np.eye(len(options))
        object.__setattr__(self, "_codes", {(type(o), o): np.array(c, dtype=np.float64)
                                            for o, c in zip(options, codes)})

    @property
    def n_values(self) -> float:
        return len(self.options)

    @property
    def _numeric(self) -> bool:
        return all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in self.options)

    @property
    def dim(self) -> int:
        return 1 if self._numeric else len(self.options)

    def contains(self, value: Any) -> bool:
        try:
            return (type(value), value) in self._codes
        except TypeError:  # unhashable
            return False

    def sample(self, rng: np.random.Generator) -> Any:
        return self.options[rng.integers(len(self.options))]

    def mutate(self, value: Any, rng: np.random.Generator) -> Any:
        others = [o for o in self.options if not _same(o, value)]
        return others[rng.integers(len(others))]

    def encode(self, value: Any) -> np.ndarray:
        return self._codes[(type(value), value)].copy()


@dataclass(frozen=True)
class _Range:
    name: str
    low: float
    high: float
    dim = 1  # a class attribute, not a field

    def __post_init__(self):
        _check_name(self.name)
        kind = int if isinstance(self, IntRange) else float
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    kind is int and not float(value).is_integer()) or not math.isfinite(value):
                raise TypeError(f"gene {self.name!r}: {bound} must be a finite "
                                f"{kind.__name__}, got {value!r}")
            object.__setattr__(self, bound, kind(value))
        if self.low > self.high:
            raise ValueError(f"gene {self.name!r}: empty range, low={self.low!r} > high={self.high!r}")

    def encode(self, value: Any) -> np.ndarray:
        width = self.high - self.low
        return np.array([(value - self.low) / width if width else 0.0])

    @property
    def _sigma(self) -> float:
        return MUTATION_SCALE * (self.high - self.low)


class IntRange(_Range):
    """A gene taking any integer in [low, high] (both included).

    Mutation adds a Gaussian step of standard deviation ``MUTATION_SCALE * (high - low)``,
    rounds it (at least one unit), and mirrors the result back into the range. Encoding:
    :math:`(v - low) / (high - low)`.
    """

    @property
    def n_values(self) -> float:
        return self.high - self.low + 1

    def contains(self, value: Any) -> bool:
        return type(value) is int and self.low <= value <= self.high

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def mutate(self, value: int, rng: np.random.Generator) -> int:
        while True:
            step = round(rng.normal(0.0, self._sigma)) or int(rng.choice((-1, 1)))
            new = round(_reflect(value + step, self.low, self.high))
            if new != value:
                return new


class FloatRange(_Range):
    """A gene taking any float in [low, high].

    Mutation adds a Gaussian step of standard deviation ``MUTATION_SCALE * (high - low)`` and
    mirrors the result back into the range. Encoding: :math:`(v - low) / (high - low)`.
    """

    @property
    def n_values(self) -> float:
        return 1 if self.low == self.high else math.inf

    def contains(self, value: Any) -> bool:
        return type(value) is float and self.low <= value <= self.high

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def mutate(self, value: float, rng: np.random.Generator) -> float:
        while True:
            new = float(_reflect(value + rng.normal(0.0, self._sigma), self.low, self.high))
            if new != value:
                return new


Gene = Union[Choice, IntRange, FloatRange]
Arch = dict


class SearchSpace:
    """A set of architectures: named genes, constraints on their combination, a model builder.

    Parameters
    ----------
    genes : sequence of Choice, IntRange, FloatRange
        At least one gene; names must be distinct. Architectures list genes in this order.
    constraints : sequence of callables ``arch -> bool``
        An architecture is valid when every gene holds one of its values and every constraint
        returns True. ``sample``, ``mutate`` and ``crossover`` only return valid architectures.
    build : callable ``arch -> model``, optional
        Used by ``decode``.
    max_tries : int
        Draws allowed to find a valid architecture before ``RuntimeError`` (constraints too tight).
    canonical : callable ``arch -> arch``, optional
        The representative of the architectures that build the same model (e.g. with the genes
        of unused blocks reset). Architectures with one canonical form share a ``key``, so
        strategies treat them as one; ``mutate`` always changes the canonical form. Default:
        every gene matters.
    """

    def __init__(self, genes: Sequence[Gene], constraints: Sequence[Callable[[Arch], bool]] = (),
                 build: Callable[[Arch], Any] | None = None, max_tries: int = 1000,
                 canonical: Callable[[Arch], Arch] | None = None):
        genes = tuple(genes)
        if not genes:
            raise ValueError("genes must not be empty")
        for gene in genes:
            if not isinstance(gene, (Choice, IntRange, FloatRange)):
                raise TypeError(f"genes must be Choice, IntRange or FloatRange, got {gene!r}")
        names = [g.name for g in genes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"gene names must be distinct, repeated: {duplicates}")
        constraints = tuple(constraints)
        for constraint in constraints:
            if not callable(constraint):
                raise TypeError(f"constraints must be callables, got {constraint!r}")
        if build is not None and not callable(build):
            raise TypeError(f"build must be callable or None, got {build!r}")
        if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
            raise ValueError(f"max_tries must be a positive integer, got {max_tries!r}")
        if canonical is not None and not callable(canonical):
            raise TypeError(f"canonical must be callable or None, got {canonical!r}")
        self.genes, self.constraints, self.build, self.max_tries = genes, constraints, build, max_tries
        self._canonical = canonical
        self._by_name = {g.name: g for g in genes}

    def __repr__(self) -> str:
        return f"SearchSpace({[g.name for g in self.genes]}, {len(self.constraints)} constraints)"

    def __getitem__(self, name: str) -> Gene:
        return self._by_name[name]

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.genes]

    @property
    def dim(self) -> int:
        """Length of ``encode``'s vector."""
        return sum(g.dim for g in self.genes)

    def with_constraints(self, *constraints: Callable[[Arch], bool]) -> "SearchSpace":
        """The same space with extra constraints (e.g. a MACs budget)."""
        return SearchSpace(self.genes, self.constraints + constraints, self.build, self.max_tries,
                           self._canonical)

    def contains(self, arch: Any) -> bool:
        """True when ``arch`` has exactly this space's genes, each holding one of its values."""
        return (isinstance(arch, dict) and sorted(arch, key=str) == sorted(self.names)
                and all(g.contains(arch[g.name]) for g in self.genes))

    def is_valid(self, arch: Any) -> bool:
        """``contains(arch)`` and every constraint holds."""
        return self.contains(arch) and all(c(arch) for c in self.constraints)

    def _check_member(self, arch: Any, name: str = "arch") -> None:
        if not isinstance(arch, dict):
            raise TypeError(f"{name} must be a dict, got {type(arch).__name__}")
        if sorted(arch, key=str) != sorted(self.names):
            raise ValueError(f"{name} must have the genes {self.names}, got {list(arch)}")
        for gene in self.genes:
            if not gene.contains(arch[gene.name]):
                raise ValueError(f"{name}[{gene.name!r}] = {arch[gene.name]!r} is not a value of {gene!r}")

    def _first_valid(self, draw: Callable[[], Arch], what: str,
                     accept: Callable[[Arch], bool] = lambda arch: True) -> Arch:
        for _ in range(self.max_tries):
            arch = draw()
            if all(c(arch) for c in self.constraints) and accept(arch):
                return arch
        raise RuntimeError(f"no valid architecture after {self.max_tries} {what}; "
                           f"the constraints of {self!r} may exclude every candidate")

    def sample(self, rng: np.random.Generator) -> Arch:
        """A valid architecture: each gene drawn uniformly, redrawn until the constraints hold.

        Tested by ``tests/optim/nas/test_nas_space.py::test_sample_is_valid_and_json_round_trips``.
        """
        _check_rng(rng)
        return self._first_valid(lambda: {g.name: g.sample(rng) for g in self.genes}, "samples")

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A valid copy of ``arch`` in which exactly one gene has a different value.

        The gene is drawn uniformly among those with at least two values, then given another
        of its values (see each gene class); redrawn until the constraints hold and the
        canonical form changes (the child builds another model). Tested by
        ``tests/optim/nas/test_nas_space.py::test_mutation_changes_exactly_one_gene_and_stays_valid``
        and ``tests/optim/nas/test_nas_build.py::test_mutation_changes_the_model``.
        """
        _check_rng(rng)
        self._check_member(arch)
        mutable = [g for g in self.genes if g.n_values > 1]
        if not mutable:
            raise ValueError(f"cannot mutate: every gene of {self!r} has a single value")

        def draw() -> Arch:
            gene = mutable[rng.integers(len(mutable))]
            return {name: gene.mutate(arch[name], rng) if name == gene.name else arch[name]
                    for name in self.names}

        old = self.key(arch)
        return self._first_valid(draw, "mutations", lambda child: self.key(child) != old)

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Uniform crossover: each gene's value taken from ``a`` or ``b`` with probability 1/2.

        Redrawn until the constraints hold; if no draw is valid, a copy of ``a``.
        Source: Syswerda (1989), uniform crossover. Tested by
        ``tests/optim/nas/test_nas_space.py::test_crossover_takes_every_gene_from_a_parent``.
        """
        _check_rng(rng)
        self._check_member(a, "a")
        self._check_member(b, "b")

        def draw() -> Arch:
            take_a = rng.random(len(self.genes)) < 0.5
            return {g.name: (a if t else b)[g.name] for g, t in zip(self.genes, take_a)}

        try:
            return self._first_valid(draw, "crossovers")
        except RuntimeError:
            return {name: a[name] for name in self.names}

    def encode(self, arch: Arch) -> np.ndarray:
        """A float64 vector in :math:`[0, 1]^{dim}`: the genes' encodings concatenated.

        Tested by ``tests/optim/nas/test_nas_space.py::test_encoding_is_in_unit_cube_and_injective``.
        """
        self._check_member(arch)
        return np.concatenate([g.encode(arch[g.name]) for g in self.genes])

    def canonical(self, arch: Arch) -> Arch:
        """The representative of the architectures that build the same model as ``arch``
        (a copy of ``arch`` when the space has no ``canonical`` callable)."""
        return dict(arch) if self._canonical is None else self._canonical(arch)

    def key(self, arch: Arch) -> tuple:
        """A hashable identity of ``arch``'s model: the values of its canonical form with
        their types, in gene order."""
        canonical = self.canonical(arch)
        return tuple((type(canonical[n]).__name__, canonical[n]) for n in self.names)

    def decode(self, arch: Arch) -> Any:
        """``build(arch)`` for a valid ``arch``."""
        if self.build is None:
            raise ValueError("this space has no build callable; pass build= to SearchSpace")
        self._check_member(arch)
        if not self.is_valid(arch):
            raise ValueError(f"arch violates the constraints of {self!r}: {arch!r}")
        return self.build(arch)
