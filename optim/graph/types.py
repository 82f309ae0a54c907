"""The value types of the graph IR: ``TensorType`` (a shape of ``Dim``s and a dtype), ``Node`` and
``GraphError``. Kept apart from ``ir`` so that the op table (``ops``) and the graph (``ir``) both
build on it without importing each other.
Tests: ``tests/optim/graph/test_graph_ir.py``, ``tests/optim/graph/test_graph_dims.py``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from optim.graph import dims
from optim.graph.dims import Dim, DimError

__all__ = ["GraphError", "TensorType", "as_type", "Node", "attr_key"]


class GraphError(DimError):
    """A malformed graph: cycle, dangling or duplicate value, shape or dtype mismatch, or a
    symbolic shape that cannot be proven (a ``DimError``, hence a ``ValueError``)."""


class TensorType(NamedTuple):
    """Shape and dtype of a value; a dimension is an int or a symbolic name (``optim.graph.dims``)."""
    shape: tuple[Dim, ...]
    dtype: np.dtype

    @property
    def static(self) -> bool:
        return dims.is_static(self.shape)

    @property
    def size(self) -> int:
        """Number of elements (static shapes only)."""
        if not self.static:
            raise GraphError(f"the size of {self} is symbolic; bind its dimensions first")
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        return f"{np.dtype(self.dtype).name}[{', '.join(map(str, self.shape))}]"


def as_type(shape: Iterable[Any], dtype: Any) -> TensorType:
    """A TensorType; each dimension a non-negative int or a symbolic name (GraphError if not)."""
    try:
        checked = tuple(dims.check_dim(n) for n in shape)
    except DimError as e:
        raise GraphError(f"shape {tuple(shape)}: {e}") from None
    return TensorType(checked, np.dtype(dtype))


@dataclass(frozen=True)
class Node:
    """``output = op(*inputs, **attrs)``; the output name also names the node."""
    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        args = ", ".join(name or "None" for name in self.inputs)
        attrs = ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.attrs.items()))
        return f"%{self.output} = {self.op}({args})" + (f" {{{attrs}}}" if attrs else "")


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array{list(value.shape)}"
    return repr(value)


def attr_key(attrs: Mapping[str, Any]) -> tuple:
    """A hashable, order-independent key of an attribute dict (arrays by dtype, shape, bytes)."""
    def freeze(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return ("array", v.dtype.str, v.shape, hashlib.sha1(np.ascontiguousarray(v)).hexdigest())
        if isinstance(v, (list, tuple)):
            return (type(v).__name__,) + tuple(freeze(x) for x in v)
        if isinstance(v, slice):
            return ("slice", v.start, v.stop, v.step)
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, dict):
            return tuple(sorted((k, freeze(x)) for k, x in v.items()))
        return v
    return tuple(sorted((k, freeze(v)) for k, v in attrs.items()))
