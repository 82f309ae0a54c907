"""Symbolic dimensions: a dimension is an ``int`` or a ``str`` naming an unknown size.

A name is either a plain symbol (``"N"``, ``"batch"``), bound at run time from an input's shape,
or an expression over symbols built by the shape rules (``"(H-5)//2+1"`` for a strided conv, ``"N*2"``
for a concat of two batches). Expressions use ``+ - * //``, integers and names, are kept in one
canonical spelling so that equal derivations give equal strings, and are evaluated by a small
whitelisting interpreter (never ``eval``).

Shape rules may only *prove* facts: two dims are equal when they are the same int or the same
string. Anything a rule cannot prove (``"N"`` against ``3`` in a matmul, two different symbols
broadcast together) is rejected with a ``GraphError``, as ONNX's strict shape inference does.
Specialisation (``bind`` + ``substitute``) turns a symbolic graph into a static one for the
concrete shapes of a call.
Tests: ``tests/optim/graph/test_graph_dims.py``.
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence, Union

Dim = Union[int, str]

__all__ = ["Dim", "is_static", "is_symbol", "check_dim", "add", "sub", "mul", "floordiv",
           "conv_out", "product", "same", "broadcast_shapes", "reshape_shape", "evaluate",
           "symbols", "bind", "substitute"]

SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DimError(ValueError):
    """A dimension that is malformed, cannot be proven, or cannot be bound."""


def is_static(shape: Iterable[Dim]) -> bool:
    return all(isinstance(d, int) for d in shape)


def is_symbol(d: Any) -> bool:
    """A plain symbol (bound from an input shape), not an expression."""
    return isinstance(d, str) and bool(SYMBOL.match(d))


def check_dim(d: Any, what: str = "dimension") -> Dim:
    """``d`` as a Dim: a non-negative int, or a symbol / expression string."""
    if isinstance(d, bool):
        raise DimError(f"{what} must be an int or a name, got {d!r}")
    if isinstance(d, str):
        if not d or _parse(d) is None:
            raise DimError(f"{what} {d!r} is not a valid symbolic dimension")
        return d
    try:
        n = int(d)
    except (TypeError, ValueError):
        raise DimError(f"{what} must be an int or a name, got {d!r}") from None
    if n != d or n < 0:
        raise DimError(f"{what} must be a non-negative integer, got {d!r}")
    return n


# ---- expressions -----------------------------------------------------------------------------

def _wrap(d: Dim) -> str:
    """``d`` as an operand: atoms bare, compound expressions in parentheses."""
    s = str(d)
    return s if isinstance(d, int) or is_symbol(s) or _balanced_group(s) else f"({s})"


def _balanced_group(s: str) -> bool:
    if not (s.startswith("(") and s.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(s):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(s) - 1:
            return False
    return True


def add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(a, int):
        a, b = b, a
    if b == 0:
        return a
    if isinstance(b, int):
        return f"{_wrap(a)}{b:+d}"
    return f"{_wrap(a)}+{_wrap(b)}"


def sub(a: Dim, b: Dim) -> Dim:
    if isinstance(b, int):
        return add(a, -b)
    if a == b:
        return 0
    return f"{_wrap(a)}-{_wrap(b)}"


def mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if isinstance(a, int):
        a, b = b, a
    if b == 1:
        return a
    if b == 0:
        return 0
    return f"{_wrap(a)}*{_wrap(b)}"


def floordiv(a: Dim, b: int) -> Dim:
    if not isinstance(b, int) or b <= 0:
        raise DimError(f"a dimension can only be divided by a positive int, got {b!r}")
    if isinstance(a, int):
        return a // b
    return a if b == 1 else f"{_wrap(a)}//{b}"


def conv_out(size: Dim, kernel: int, stride: int, padding: int, dilation: int,
             padding_end: int | None = None) -> Dim:
    """⌊(H + p_begin + p_end − d(k−1) − 1)/s⌋ + 1 (PyTorch ``Conv2d``), kept symbolic for a
    symbolic H."""
    end = padding if padding_end is None else padding_end
    span = padding + end - dilation * (kernel - 1) - 1
    if isinstance(size, int):
        return (size + span) // stride + 1
    return add(floordiv(add(size, span), stride), 1) if stride > 1 else add(size, span + 1)


def product(dims: Sequence[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(out, d)
    return out


def same(a: Dim, b: Dim) -> bool:
    """Provably equal: the same int or the same expression."""
    return a == b and type(a) is type(b)


def broadcast_shapes(*shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """NumPy broadcasting over Dims: per axis, equal dims, or 1 against anything.

    Raises DimError when the result is not provable (``"N"`` against ``3``: N may be 1 or 3).
    """
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(ndim):
        dims = [s[len(s) - ndim + axis] for s in shapes if len(s) - ndim + axis >= 0]
        kept = [d for d in dims if not same(d, 1)]
        first = kept[0] if kept else 1
        for d in kept[1:]:
            if not same(d, first):
                raise DimError(f"shapes {', '.join(str(tuple(s)) for s in shapes)} do not "
                               f"broadcast provably (axis {axis}: {first!r} vs {d!r})")
        out.append(first)
    return tuple(out)


def _monomial(dims: Iterable[Dim]) -> tuple[int, Counter]:
    """A product of dims as (integer coefficient, multiset of symbolic factors)."""
    coefficient, factors = 1, Counter()
    for d in dims:
        if isinstance(d, int):
            coefficient *= d
        else:
            factors[d] += 1
    return coefficient, factors


def reshape_shape(shape: Sequence[Dim], target: Sequence[Dim]) -> tuple[Dim, ...]:
    """The shape of reshaping ``shape`` to ``target`` (one ``-1`` allowed; ONNX's ``0`` is not
    accepted here, importers resolve it).

    With symbols, the element counts must be provably equal: the symbolic factors of the
    target must be those of the input, and the integer parts must divide.
    """
    target = tuple(target)
    if any(isinstance(d, int) and d < -1 for d in target) or sum(1 for d in target if d == -1) > 1:
        raise DimError(f"reshape target {target} is invalid (one -1 at most, no other negatives)")
    known = [d for d in target if d != -1]
    have_c, have_f = _monomial(shape)
    want_c, want_f = _monomial(known)
    if -1 in target:
        if want_f - have_f or want_c == 0 or have_c % want_c:
            raise DimError(f"cannot reshape {tuple(shape)} into {target}")
        rest = (have_f - want_f)
        inferred = product([have_c // want_c] + sorted(rest.elements(), key=str))
        return tuple(inferred if d == -1 else d for d in target)
    if have_c != want_c or have_f != want_f:
        raise DimError(f"cannot reshape {tuple(shape)} into {target}: element counts are not "
                       "provably equal")
    return target


# ---- evaluation and binding ------------------------------------------------------------------

_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv,
            ast.USub, ast.Constant, ast.Name, ast.Load)


def _parse(text: str) -> ast.Expression | None:
    masked = _NAME.sub("s", text)
    try:
        tree = ast.parse(masked, mode="eval")
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            return None
        if isinstance(node, ast.Constant) and not isinstance(node.value, int):
            return None
    return tree


def symbols(d: Dim) -> set[str]:
    """The plain symbols an expression reads."""
    return set() if isinstance(d, int) else set(_NAME.findall(d))


def evaluate(d: Dim, bindings: Mapping[str, int]) -> int:
    """The value of ``d`` with its symbols bound; DimError naming a missing symbol."""
    if isinstance(d, int):
        return d
    missing = symbols(d) - set(bindings)
    if missing:
        raise DimError(f"dimension {d!r} needs a value for {sorted(missing)}")
    names = {}

    def rename(m: re.Match) -> str:
        key = f"s{len(names)}"
        names[key] = m.group()
        return key
    tree = ast.parse(_NAME.sub(rename, d), mode="eval")

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant):
            return int(node.value)
        if isinstance(node, ast.Name):
            return int(bindings[names[node.id]])
        if isinstance(node, ast.UnaryOp):
            return -value(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = value(node.left), value(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            return a // b
        raise DimError(f"dimension {d!r} is not a valid expression")
    return value(tree)


def bind(expected: Mapping[str, Sequence[Dim]], actual: Mapping[str, Sequence[int]],
         bindings: Mapping[str, int] | None = None) -> dict[str, int]:
    """Symbol values from the concrete ``actual`` shapes of the values named in ``expected``.

    Every static dim must match; a plain symbol takes the actual size (at least 1); a symbol
    met twice must get the same size. Raises DimError naming the value, the axis and both
    sizes.
    """
    found = dict(bindings or {})
    for name, want in expected.items():
        have = tuple(actual[name])
        if len(have) != len(want):
            raise DimError(f"{name!r} has shape {have}, but the graph expects {len(want)} "
                           f"dimensions {tuple(want)}")
        for axis, (w, h) in enumerate(zip(want, have)):
            if isinstance(w, int):
                if w != h:
                    raise DimError(f"{name!r} has shape {have}, but the graph expects "
                                   f"{tuple(want)} (axis {axis}: {h} != {w})")
            elif is_symbol(w):
                if h < 1:
                    raise DimError(f"{name!r} axis {axis} ({w!r}) must be at least 1, got {h}")
                if found.setdefault(w, h) != h:
                    raise DimError(f"{name!r} axis {axis} binds {w!r} to {h}, but it is already "
                                   f"{found[w]}")
    for name, want in expected.items():
        for axis, (w, h) in enumerate(zip(want, actual[name])):
            if isinstance(w, str) and not is_symbol(w) and evaluate(w, found) != h:
                raise DimError(f"{name!r} axis {axis} is {h}, but {w!r} gives "
                               f"{evaluate(w, found)}")
    return found


def substitute(value: Any, bindings: Mapping[str, int]) -> Any:
    """``value`` (a Dim, or nested tuples/lists of them) with every symbolic dim evaluated."""
    if isinstance(value, str):
        return evaluate(value, bindings)
    if isinstance(value, (tuple, list)):
        return type(value)(substitute(v, bindings) for v in value)
    return value

