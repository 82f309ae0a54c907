"""Tensor, Function and reverse-mode automatic differentiation.

A ``Tensor`` wraps an ``np.ndarray``. When a differentiable op (a ``Function`` subclass) runs
on tensors that require gradients, the output remembers a ``Node``: the Function, its
context ``ctx`` and its input tensors. ``Tensor.backward`` walks these nodes in reverse
topological order (computed iteratively, so deep graphs do not hit Python's recursion limit),
calls each ``Function.backward`` and accumulates the gradients of leaves into ``.grad``.

Broadcasting is undone in one place (``unbroadcast``): a Function may return a gradient with
its output's broadcast shape and the engine sums it down to the input's shape, then checks it.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable

import numpy as np

__all__ = ["Tensor", "Function", "Context", "tensor", "no_grad", "enable_grad",
           "is_grad_enabled", "unbroadcast", "observe_ops"]

_state = threading.local()


def is_grad_enabled() -> bool:
    """True unless inside ``no_grad`` (per thread)."""
    return getattr(_state, "grad_enabled", True)


class _GradMode(contextlib.ContextDecorator):
    enabled: bool

    def __init__(self):
        self._previous: list[bool] = []  # a stack: one object may be entered while active

    def __enter__(self):
        self._previous.append(is_grad_enabled())
        _state.grad_enabled = self.enabled

    def __exit__(self, *exc):
        _state.grad_enabled = self._previous.pop()
        return False

    def _recreate_cm(self):
        """A fresh guard for each call of a decorated function (recursion, threads)."""
        return type(self)()


class no_grad(_GradMode):
    """Context manager and decorator: ops inside record no graph (as ``torch.no_grad``)."""
    enabled = False


class enable_grad(_GradMode):
    """Context manager and decorator: re-enable graph recording inside ``no_grad``."""
    enabled = True


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes that broadcasting added or stretched to reach ``shape``.

    If y = broadcast(x), then dL/dx = sum of dL/dy over every broadcast axis.
    Tested by ``tests/minnet/test_tensor.py::test_unbroadcast_is_adjoint_of_broadcast``.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0 or any(n not in (1, m) for n, m in zip(shape, grad.shape[extra:])):
        raise RuntimeError(f"gradient of shape {grad.shape} cannot be reduced to shape {shape}")
    stretched = tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    reduced = grad.sum(axis=tuple(range(extra)) + stretched, keepdims=True)
    return reduced.reshape(shape)


class Context:
    """Scratch space shared by a Function's forward and backward.

    ``needs_input_grad[i]`` tells whether the i-th positional input needs a gradient; arrays
    saved with ``save_for_backward`` come back as ``saved_tensors``; any other attribute may
    be set freely.
    """

    def __init__(self, needs_input_grad: tuple[bool, ...]):
        self.needs_input_grad = needs_input_grad
        self.saved_tensors: tuple = ()

    def save_for_backward(self, *arrays) -> None:
        self.saved_tensors = arrays


class Node:
    """How a tensor was made: the Function, its context, its inputs and its attributes."""
    __slots__ = ("fn", "ctx", "inputs", "attrs", "freed")

    def __init__(self, fn: type[Function], ctx: Context, inputs: list, attrs: dict):
        self.fn, self.ctx, self.inputs, self.attrs, self.freed = fn, ctx, inputs, attrs, False

    def free(self) -> None:
        self.ctx = self.inputs = None
        self.freed = True


class Function:
    """A differentiable operation: subclass and define ``forward`` and ``backward``.

    ``forward(ctx, *inputs, **attrs)`` receives the positional inputs as ndarrays (or None) and
    the keyword attributes unchanged, and returns an ndarray. ``backward(ctx, grad)`` returns one
    gradient (ndarray or None) per positional input, possibly in broadcast shape.
    """

    @staticmethod
    def forward(ctx: Context, *inputs, **attrs) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **attrs) -> Tensor:
        # list comprehensions, not generators: this runs once per op, batch-1 inference
        # spends most of its time here
        tensors = [x if x is None or isinstance(x, Tensor) else Tensor(x) for x in inputs]
        needs = tuple([t is not None and t.requires_grad for t in tensors])
        record = True in needs and is_grad_enabled()
        ctx = Context(needs)
        out = cls.forward(ctx, *[None if t is None else t.data for t in tensors], **attrs)
        # 0-d NumPy arithmetic returns a scalar, which Tensor() would turn into float32
        result = Tensor(out if isinstance(out, np.ndarray) else np.asarray(out),
                        requires_grad=record)
        if record:
            result._node = Node(cls, ctx, tensors, attrs)
        observers = getattr(_observing, "callbacks", None)
        if observers:
            for observer in observers:
                observer(cls, tensors, attrs, result)
        return result


_observing = threading.local()  # per thread: a tracer sees only its own thread's ops


@contextlib.contextmanager
def observe_ops(callback: Callable[[type[Function], list, dict, Tensor], None]):
    """Inside the block, call ``callback(function, inputs, attrs, output)`` after every op
    this thread applies, with or without grad mode (the graph tracer records a forward pass
    this way; threads tracing at once do not see each other's ops)."""
    if not hasattr(_observing, "callbacks"):
        _observing.callbacks = []
    _observing.callbacks.append(callback)
    try:
        yield
    finally:
        _observing.callbacks.remove(callback)


class _HookHandle:
    def __init__(self, hooks: list, hook: Callable):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _default_dtype(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if array.dtype == np.float64 else array


def _tensor_data(data: Any, requires_grad: bool) -> np.ndarray:
    """``Tensor``'s array (checked) for anything but a plain numeric ndarray without grad: a
    Tensor's data, Python scalars and lists in float32 (or int/bool), NumPy scalars in their
    dtype."""
    if isinstance(data, Tensor):
        data = data.data
    if not isinstance(data, np.ndarray):
        keep_dtype = isinstance(data, np.generic)
        data = np.asarray(data)
        if not keep_dtype:
            data = _default_dtype(data)
    if data.dtype == object:
        raise TypeError("Tensor data must be numeric, got an object array")
    if requires_grad and not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"only floating tensors can require gradients, got dtype {data.dtype}")
    return data


class Tensor:
    """An n-dimensional array that records the operations applied to it.

    ``Tensor(data, requires_grad=False)``: an ndarray is wrapped as is (its dtype kept); Python
    scalars and lists become float32 (like ``torch.tensor``) unless they hold only integers or
    booleans. Only floating tensors can require gradients.
    """
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operators

    def __init__(self, data: Any, requires_grad: bool = False):
        if type(data) is not np.ndarray or requires_grad or data.dtype == object:
            data = _tensor_data(data, requires_grad)  # a plain numeric ndarray is kept as is
        self.data: np.ndarray = data
        self.grad: np.ndarray | None = None
        self.requires_grad: bool = bool(requires_grad)
        self._node: Node | None = None
        self._hooks: list[Callable] = []

    # ---- basic properties -------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._node is None)

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> Tensor:
        """A tensor sharing this one's data, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and not np.issubdtype(self.dtype, np.floating):
            raise TypeError(f"only floating tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}{grad})"

    def register_hook(self, hook: Callable[[np.ndarray], np.ndarray | None]) -> _HookHandle:
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned array
        replaces the gradient. Returns a handle with ``remove()``."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        self._hooks.append(hook)
        return _HookHandle(self._hooks, hook)

    # ---- reverse mode -----------------------------------------------------------------
    def backward(self, grad: np.ndarray | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · grad into every leaf's ``.grad``.

        ``grad`` defaults to 1 for a single-element tensor. Unless ``retain_graph`` is true the
        graph is freed, and a second backward through it raises ``RuntimeError``.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.size != 1:
                raise ValueError(f"grad must be given for a non-scalar tensor of shape {self.shape}")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"grad has shape {grad.shape}, expected {self.shape}")
        grads = {id(self): grad}
        for t in reversed(self._topological_order()):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            for hook in t._hooks:
                replaced = hook(g)
                if replaced is not None:
                    g = np.asarray(replaced, dtype=t.dtype)
                    if g.shape != t.shape:
                        raise RuntimeError(f"a hook returned a gradient of shape {g.shape} for a "
                                           f"tensor of shape {t.shape}")
            if t._node is None:
                t.grad = g.copy() if t.grad is None else t.grad + g
                continue
            self._propagate(t, g, grads)
            if not retain_graph:
                t._node.free()

    def _topological_order(self) -> list[Tensor]:
        """Tensors reachable from self, each after all of its inputs (iterative DFS)."""
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            t, expanded = stack.pop()
            if expanded:
                order.append(t)
                continue
            if id(t) in visited:
                continue
            visited.add(id(t))
            stack.append((t, True))
            node = t._node
            if node is None:
                continue
            if node.freed:
                raise RuntimeError("trying to backward through the graph a second time; "
                                   "pass retain_graph=True to the first backward()")
            for inp in reversed(node.inputs):
                if inp is not None and inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
        return order

    @staticmethod
    def _propagate(t: Tensor, g: np.ndarray, grads: dict) -> None:
        node = t._node
        input_grads = node.fn.backward(node.ctx, g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(node.inputs):
            raise RuntimeError(f"{node.fn.__name__}.backward returned {len(input_grads)} "
                               f"gradients for {len(node.inputs)} inputs")
        for inp, ig in zip(node.inputs, input_grads):
            if inp is None or ig is None or not inp.requires_grad:
                continue
            ig = np.asarray(ig, dtype=inp.dtype)
            try:
                ig = unbroadcast(ig, inp.shape)
            except RuntimeError:
                raise RuntimeError(f"{node.fn.__name__}.backward gave a gradient of shape "
                                   f"{ig.shape} for an input of shape {inp.shape}") from None
            key = id(inp)
            grads[key] = ig if key not in grads else grads[key] + ig

    # ---- operators (implemented in minnet.ops) ----------------------------------------
    def __add__(self, other): return _ops.add(self, other)
    def __radd__(self, other): return _ops.add(other, self)
    def __sub__(self, other): return _ops.sub(self, other)
    def __rsub__(self, other): return _ops.sub(other, self)
    def __mul__(self, other): return _ops.mul(self, other)
    def __rmul__(self, other): return _ops.mul(other, self)
    def __truediv__(self, other): return _ops.div(self, other)
    def __rtruediv__(self, other): return _ops.div(other, self)
    def __pow__(self, other): return _ops.pow(self, other)
    def __rpow__(self, other): return _ops.pow(other, self)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __neg__(self): return _ops.neg(self)
    def __getitem__(self, index): return _ops.getitem(self, index)

    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def abs(self): return _ops.abs(self)
    def erf(self): return _ops.erf(self)
    def relu(self): return _ops.relu(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def tanh(self): return _ops.tanh(self)
    def clip(self, min=None, max=None): return _ops.clip(self, min, max)
    def sum(self, axis=None, keepdims=False): return _ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _ops.max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return _ops.min(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, ddof=0): return _ops.var(self, axis, keepdims, ddof)
    def reshape(self, *shape): return _ops.reshape(self, *shape)
    def transpose(self, *axes): return _ops.transpose(self, *axes)
    def permute(self, *axes): return _ops.permute(self, *axes)
    def flatten(self, start_axis=0, end_axis=-1): return _ops.flatten(self, start_axis, end_axis)

    @property
    def T(self):
        return _ops.transpose(self)


def as_tensor(x: Any) -> Tensor:
    """``x`` if it is a Tensor, else a constant Tensor wrapping ``np.asarray(x)``."""
    return x if isinstance(x, Tensor) else Tensor(x)


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Create a Tensor, copying ``data`` (as ``torch.tensor``); NumPy arrays and scalars keep
    their dtype, Python floats become float32."""
    array = np.array(data.data if isinstance(data, Tensor) else data, dtype=dtype)
    if dtype is None and not isinstance(data, (np.ndarray, np.generic, Tensor)):
        array = _default_dtype(array)
    return Tensor(array, requires_grad=requires_grad)


from minnet import functional as _ops  # noqa: E402  (operators resolve at call time)
