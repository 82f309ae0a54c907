"""Shared helpers of the optim.graph tests: reference models and eager outputs."""
from __future__ import annotations

import numpy as np

import minnet
from minnet.models import lenet5, lenet_300_100
from optim.graph.zoo import random_model, randomize_batchnorm, residual_cnn

N_RANDOM = 24


def eager(model, x: np.ndarray) -> np.ndarray:
    """The model's eval-mode output under no_grad (mode restored)."""
    was = model.training
    model.eval()
    try:
        with minnet.no_grad():
            return model(minnet.Tensor(x)).data
    finally:
        model.train(was)


def named_models() -> list[tuple[str, object, tuple[int, ...]]]:
    """(name, model, input shape): the three fixed models, then N_RANDOM random ones."""
    minnet.manual_seed(0)
    models = [("lenet_300_100", lenet_300_100(), (4, 1, 28, 28)),
              ("lenet5", lenet5(), (4, 1, 28, 28)),
              ("lenet5_bn", randomize_batchnorm(lenet5(batch_norm=True), np.random.default_rng(1)),
               (4, 1, 28, 28)),
              ("residual_cnn", residual_cnn(), (2, 1, 28, 28))]
    for seed in range(N_RANDOM):
        model, shape = random_model(seed)
        models.append((f"random{seed}", model, shape))
    return models


def sample(shape, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---- random IR graphs for the pass, memory-plan and search properties ----------------------

from hypothesis import strategies as st  # noqa: E402

from optim.graph.ir import Graph, Node, as_type  # noqa: E402
from optim.graph.ops import infer_node  # noqa: E402


class _Builder:
    """Grows a graph from one NCHW input by random steps, each a pattern some pass rewrites."""

    def __init__(self, rng: np.random.Generator, shape):
        self.rng, self.nodes, self.constants = rng, [], {}
        self.types = {"x": as_type(shape, np.float32)}
        self.values = ["x"]

    def const(self, array) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = np.asarray(array, dtype=np.float32)
        self.types[name] = as_type(self.constants[name].shape, np.float32)
        return name

    def node(self, op, inputs, **attrs) -> str:
        name = f"v{len(self.nodes)}"
        node = Node(op, tuple(inputs), name, attrs)
        self.types[name] = infer_node(node, [self.types[i] if i else None for i in inputs])
        self.nodes.append(node)
        self.values.append(name)
        return name

    def pick(self, ndim=None) -> str:
        options = [v for v in self.values if len(self.types[v].shape) == ndim
                   or ndim is None and len(self.types[v].shape) in (2, 4)]
        return options[-1] if self.rng.random() < 0.6 else options[self.rng.integers(len(options))]

    def normal(self, *shape, scale=0.5):
        return self.rng.normal(0, scale, shape)


def _conv(b: _Builder, x: str) -> str:
    c = b.types[x].shape[1]
    out = int(b.rng.choice([c, 2, 3]))
    bias = b.const(b.normal(out)) if b.rng.random() < 0.6 else ""
    return b.node("Conv2d", (x, b.const(b.normal(out, c, 3, 3, scale=0.3)), bias),
                  stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)


def _linear(b: _Builder, x: str) -> str:
    n_in = b.types[x].shape[-1]
    out = int(b.rng.choice([3, 5]))
    bias = b.const(b.normal(out)) if b.rng.random() < 0.6 else ""
    return b.node("Linear", (x, b.const(b.normal(out, n_in, scale=0.4)), bias))


def _bn(b: _Builder, x: str) -> str:
    c = b.types[x].shape[1]
    params = [b.rng.uniform(0.5, 1.5, c), b.normal(c, scale=0.2), b.normal(c, scale=0.2),
              b.rng.uniform(0.5, 2, c)]
    return b.node("BatchNorm", (x, *map(b.const, params)), eps=1e-5, training=False)


def _step(b: _Builder, kind: str) -> None:
    four = [v for v in b.values if len(b.types[v].shape) == 4]
    x = b.pick(4 if four and kind in _FOUR_D else None)
    t = b.types[x]
    if kind == "conv":
        _conv(b, x)
    elif kind == "conv_bn_relu":
        b.node("ReLU", (_bn(b, _conv(b, x)),))
    elif kind == "bn":
        _bn(b, x)
    elif kind == "linear_bn_relu":
        y = _linear(b, x if len(t.shape) == 2 else b.node("Reshape", (x,), shape=(t.shape[0], -1)))
        b.node("ReLU", (_bn(b, y) if b.rng.random() < 0.5 else y,))
    elif kind == "channel_bias":
        y = _conv(b, x) if len(t.shape) == 4 else _linear(b, x)
        c = b.types[y].shape[1]
        b.node("Add", (y, b.const(b.normal(*(c,) if len(t.shape) == 2 else (c, 1, 1)))))
    elif kind == "activation":
        b.node(str(b.rng.choice(["ReLU", "Tanh", "Sigmoid"])), (x,))
    elif kind == "neutral":
        op, fill = [("Mul", 1.0), ("Add", 0.0), ("Sub", 0.0), ("Div", 1.0)][b.rng.integers(4)]
        c = b.const(np.full((1,) * len(t.shape), fill))
        b.node(op, (c, x) if op in ("Mul", "Add") and b.rng.random() < 0.5 else (x, c))
    elif kind == "identity":
        b.node(str(b.rng.choice(["Identity", "Dropout"])), (x,))
    elif kind == "reshape_twice":
        flat = b.node("Reshape", (x,), shape=(t.size,))
        b.node("Reshape", (flat,), shape=t.shape)
    elif kind == "transpose_twice":
        p = tuple(b.rng.permutation(len(t.shape)).tolist())
        y = b.node("Transpose", (x,), axes=p)
        b.node("Transpose", (y,), axes=tuple(np.argsort(p).tolist()) if b.rng.random() < 0.5 else p)
    elif kind == "neg_twice":
        b.node("Neg", (b.node("Neg", (x,)),))
    elif kind == "duplicate":
        y1, y2 = b.node("Tanh", (x,)), b.node("Tanh", (x,))
        b.node("Add", (y1, y2))
    elif kind == "duplicate_constant":
        v = b.normal(*t.shape[1:])
        b.node("Add", (b.node("Mul", (x, b.const(v))), b.const(v.copy())))
    elif kind == "constant_expression":
        c = b.node("Mul", (b.const(b.normal(*t.shape[1:])), b.const(b.normal(*t.shape[1:]))))
        b.node("Add", (x, c))
    elif kind == "residual_relu":
        same = [v for v in b.values if b.types[v] == t and v != x]
        b.node("ReLU", (b.node("Add", (x, same[-1] if same else x)),))
    elif kind == "dead":
        b.node("Exp", (x,))
        b.values.pop()
    elif kind == "pool" and len(t.shape) == 4 and min(t.shape[2:]) >= 2:
        b.node("MaxPool2d", (x,), kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))


_FOUR_D = ("conv", "conv_bn_relu", "pool")
STEP_KINDS = ("conv", "conv_bn_relu", "bn", "linear_bn_relu", "channel_bias", "activation",
              "neutral", "identity", "reshape_twice", "transpose_twice", "neg_twice", "duplicate",
              "duplicate_constant", "constant_expression", "residual_relu", "dead", "pool")


@st.composite
def random_graphs(draw, max_steps: int = 10) -> Graph:
    """A random float32 graph of up to ``max_steps`` rewrite-prone patterns on a NCHW input."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 5)),
             draw(st.integers(2, 5)))
    b = _Builder(rng, shape)
    for kind in draw(st.lists(st.sampled_from(STEP_KINDS), min_size=1, max_size=max_steps)):
        _step(b, kind)
    outputs = [b.values[-1]]
    if len(b.values) > 2 and draw(st.booleans()):
        outputs.append(b.values[draw(st.integers(1, len(b.values) - 2))])
    return Graph.build({"x": b.types["x"]}, b.nodes, outputs, b.constants)
