r"""Post-training quantization of any graph (a traced minnet model or an imported ONNX model) to
an integer graph in ONNX QOperator semantics, and its QDQ form.

``prepare_graph`` optimizes the float graph (BatchNorm folded into the convolution before it,
ReLU fused into the op that feeds it: ``optim.graph.optimize``) and puts an observer on every
activation an integer kernel needs: the graph input and the output of every op that computes
new values. Ops that only move codes (max pooling, reshapes) reuse their input's quantization.
``calibrate_graph`` runs the float graph over data and feeds the observers. ``convert_graph``
writes the integer graph (Jacob et al. 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference"):

- ``QuantizeLinear`` of the input to uint8 codes :math:`q = \mathrm{sat}(\mathrm{round}(x/s)
  + z)` (asymmetric, per tensor, the range extended to contain 0);
- Conv2d → ``QLinearConv``, Linear → com.microsoft ``QGemm``: int8 weights per output channel,
  symmetric, :math:`s_w[c] = \max|W_c| / 127`, zero point 0; an int32 bias at scale
  :math:`s_x s_w[c]` (§2.4: the bias is added to the int32 accumulator); the output
  requantized by :math:`M = s_x s_w / s_y` (eq. 5). A fused ReLU is the output's saturation:
  its observed range starts at 0, so :math:`z_y = 0` and negative results clamp to code 0;
- residual Add → com.microsoft ``QLinearAdd``, both operands rescaled to the output's scale
  (§2.4, the addition of differently scaled codes); Concat → ``QLinearConcat`` (each input
  requantized to the shared output scale); global / windowed average pooling →
  ``QLinearGlobalAveragePool`` / ``QLinearAveragePool``;
- ``DequantizeLinear`` of the output.

``QATGraphModule`` trains the graph's weights with that arithmetic simulated (fake-quantized
weights and activations, straight-through gradients); ``convert_graph(prepared,
module.to_graph())`` then writes the integer graph of the trained weights.
``to_integer_graph`` writes a converted ``QuantSequential`` (the Sequential API's result) with
its own codes and scales.

``to_qdq`` rewrites an integer graph into QDQ form: every integer op becomes
DequantizeLinear → the float op → QuantizeLinear with the same scales (weights stored int8 and
dequantized per channel, the bias int32), the form onnxruntime's optimizer fuses back into
integer kernels. Run by ``optim.graph.execute`` it is the fake-quantized simulation of the
integer graph. Tests: ``tests/optim/quant/test_graph_quant.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from minnet import nn
from minnet.tensor import Tensor
from optim.graph import Graph, GraphModule, Node, execute, optimize, trace
from optim.quant.affine import quantize
from optim.quant.fake_quant import FixedFakeQuantize, QuantSequential, QuantStage
from optim.quant.observers import Observer
from optim.quant.qconfig import OBSERVERS
from optim.quant.ste import fake_quantize_ste

__all__ = ["PreparedGraph", "prepare_graph", "calibrate_graph", "convert_graph", "to_qdq",
           "weight_qparams", "quantize_graph", "to_integer_graph", "QATGraphModule",
           "QUANTIZED_OPS"]

# ops that move or select codes without changing their scale
PASS_THROUGH = ("MaxPool2d", "Reshape", "Identity", "Dropout")
COMPUTE = ("Conv2d", "Conv2dReLU", "Linear", "LinearReLU", "Add", "AddReLU",
           "AdaptiveAvgPool2d", "AvgPool2d", "Concatenate")
QUANTIZED_OPS = PASS_THROUGH + COMPUTE
CODE = np.uint8  # activation codes, onnxruntime's default for QOperator models


@dataclass
class PreparedGraph:
    """A float graph ready for calibration: ``graph`` (BatchNorm folded, activations fused) and
    one activation ``observers[value]`` per value that needs its own quantization."""
    graph: Graph
    observers: dict[str, Observer]


def prepare_graph(model: nn.Module | Graph, example_input: Any = None, *,
                  observer: str = "minmax", dynamic_batch: bool = True) -> PreparedGraph:
    """Trace ``model`` on ``example_input`` (batch axis symbolic when ``dynamic_batch``) unless it
    is a ``Graph`` already, optimize it, and attach an 8-bit unsigned per-tensor ``observer``
    (a name of ``optim.quant.qconfig.OBSERVERS``) to the graph input and every computing op's
    output. Raises ValueError naming any op that has no integer form here."""
    if observer not in OBSERVERS:
        raise ValueError(f"observer must be one of {sorted(OBSERVERS)}, got {observer!r}")
    if isinstance(model, nn.Module):
        if example_input is None:
            raise ValueError("example_input is needed to trace a Module")
        model.eval()
        graph = trace(model, example_input, dynamic_axes={0: "N"} if dynamic_batch else None)
    elif isinstance(model, Graph):
        graph = model
    else:
        raise TypeError(f"model must be a minnet Module or a Graph, got {type(model).__name__}")
    graph = optimize(graph)
    unsupported = sorted({n.op for n in graph.nodes} - set(QUANTIZED_OPS))
    if unsupported:
        raise ValueError(f"no integer form for ops {unsupported} (supported: "
                         f"{', '.join(QUANTIZED_OPS)})")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"graph must have one input and one output, got {graph.inputs} -> "
                         f"{graph.outputs}")
    observed = list(graph.inputs) + [n.output for n in graph.nodes if n.op in COMPUTE]
    make = OBSERVERS[observer]
    return PreparedGraph(graph, {v: make(8, signed=False) for v in observed})


def calibrate_graph(prepared: PreparedGraph, x: np.ndarray, batch_size: int = 256
                    ) -> PreparedGraph:
    """Run the float graph over ``x`` in batches and feed every observer its value."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    names = list(prepared.observers)
    recorder = prepared.graph.replace(outputs=names)
    for start in range(0, len(x), batch_size):
        values = execute(recorder, np.asarray(x[start:start + batch_size], np.float32))
        values = values if isinstance(values, tuple) else (values,)
        for name, value in zip(names, values):
            prepared.observers[name](value)
    return prepared


def weight_qparams(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-output-channel symmetric int8 weights: :math:`s[c] = \max|W_c| / 127` (1 for an
    all-zero channel) and codes :math:`\mathrm{clamp}(\mathrm{round}(W_c / s[c]), -127, 127)`.
    Returns ``(codes int8, scales float32)``."""
    peak = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return quantize(w, scale, np.zeros(w.shape[0], np.int64), -127, 127, axis=0).astype(np.int8), \
        scale


class _Writer:
    """The integer graph under construction: nodes, constants and each float value's codes
    with their (scale, zero point) names. ``given_weights[weight name]`` = (int8 codes, scales,
    zero points) replaces ``weight_qparams`` (a converted model's own codes)."""

    def __init__(self, graph: Graph, qp: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 given_weights: Mapping[str, tuple[np.ndarray, ...]] | None = None):
        self.graph, self.qp = graph, dict(qp)
        self.given_weights = dict(given_weights or {})
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.codes: dict[str, str] = {}

    def constant(self, name: str, value: np.ndarray) -> str:
        self.constants[name] = value
        return name

    def scale_zero(self, value: str) -> tuple[str, str]:
        scale, zero = self.qp[value]
        return (self.constant(f"{value}.scale", np.asarray(scale, np.float32).reshape(())),
                self.constant(f"{value}.zero_point", np.asarray(zero).astype(CODE).reshape(())))

    def quantized(self, value: str) -> tuple[str, str, str]:
        return (self.codes[value],) + self.scale_zero(value)

    def emit(self, op: str, inputs, output: str, **attrs) -> str:
        name = f"{output}.q"
        self.nodes.append(Node(op, tuple(inputs), name, attrs))
        self.codes[output] = name
        return name

    def weights(self, node: Node) -> tuple[str, str, str, str]:
        """Codes, scales and zero points of the node's weight, and its int32 bias."""
        w = np.asarray(self.graph.constants[node.inputs[1]])
        b = self.graph.constants.get(node.inputs[2]) if len(node.inputs) > 2 else None
        codes, w_scale = weight_qparams(w)
        w_zero = np.zeros(w.shape[0], np.int8)
        if node.inputs[1] in self.given_weights:
            codes, w_scale, w_zero = self.given_weights[node.inputs[1]]
        x_scale = np.float32(np.asarray(self.qp[node.inputs[0]][0]).reshape(()))
        bias = np.zeros(w.shape[0]) if b is None else np.asarray(b, np.float64)
        bias_q = np.rint(bias / (np.float64(x_scale) * w_scale.astype(np.float64)))
        info = np.iinfo(np.int32)
        base = node.inputs[1]
        return (self.constant(f"{base}.int8", codes),
                self.constant(f"{base}.scale", w_scale),
                self.constant(f"{base}.zero_point", w_zero),
                self.constant(f"{base}.bias_int32",
                              np.clip(bias_q, info.min, info.max).astype(np.int32)))


def _convert_node(out: _Writer, node: Node) -> None:
    op, value = node.op, node.output
    if op in PASS_THROUGH:
        out.qp[value] = out.qp[node.inputs[0]]
        out.emit(op, [out.codes[node.inputs[0]]] + list(node.inputs[1:]), value, **node.attrs)
        return
    y = out.scale_zero(value)
    if op in ("Conv2d", "Conv2dReLU"):
        w, w_s, w_z, bias = out.weights(node)
        ph, pw = node.attrs["padding"]
        out.emit("QLinearConv", [*out.quantized(node.inputs[0]), w, w_s, w_z, *y, bias], value,
                 stride=node.attrs["stride"], pads=(ph, pw, ph, pw),
                 dilation=node.attrs["dilation"], groups=node.attrs["groups"])
    elif op in ("Linear", "LinearReLU"):
        w, w_s, w_z, bias = out.weights(node)
        out.emit("QGemm", [*out.quantized(node.inputs[0]), w, w_s, w_z, bias, *y], value,
                 trans_b=True)
    elif op in ("Add", "AddReLU"):
        out.emit("QLinearAdd", [*out.quantized(node.inputs[0]), *out.quantized(node.inputs[1]),
                                *y], value)
    elif op == "AdaptiveAvgPool2d":
        if tuple(node.attrs["output_size"]) != (1, 1):
            raise ValueError(f"node {value!r}: only global average pooling (output_size 1) has "
                             f"an integer form, got {node.attrs['output_size']}")
        out.emit("QLinearGlobalAveragePool", [*out.quantized(node.inputs[0]), *y], value)
    elif op == "AvgPool2d":
        out.emit("QLinearAveragePool", [*out.quantized(node.inputs[0]), *y], value, **node.attrs)
    else:  # Concatenate
        parts = [name for v in node.inputs for name in out.quantized(v)]
        out.emit("QLinearConcat", [*y, *parts], value, axis=node.attrs["axis"])


def _activation_qparams(prepared: PreparedGraph) -> dict:
    empty = [v for v, o in prepared.observers.items() if o.channels is None]
    if empty:
        raise ValueError(f"observers of {empty[:3]} saw no data: run calibrate_graph first")
    return {v: o.calculate_qparams() for v, o in prepared.observers.items()}


def convert_graph(prepared: PreparedGraph, graph: Graph | None = None) -> Graph:
    """The integer graph of a calibrated ``PreparedGraph`` (see the module docstring): uint8
    activation codes from the observers' ranges, int8 per-channel weights, int32 biases, the
    float output dequantized under the float graph's output name. ``graph``: the same graph
    with other weights (a ``QATGraphModule``'s ``to_graph()`` after training)."""
    return _write(prepared.graph if graph is None else graph, _activation_qparams(prepared))


def _fake_quantized_weight(w: Tensor) -> Tensor:
    """``weight_qparams``' per-channel symmetric int8 grid applied to ``w`` with the clipped
    straight-through gradient (every weight lies inside its channel's range: identity)."""
    peak = np.abs(w.data.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(w.data.dtype)
    return fake_quantize_ste(w, scale, np.zeros(w.shape[0], np.int64), -127, 127, axis=0)


class QATGraphModule(GraphModule):
    """Quantization-aware training of a graph (Jacob et al. 2018, section 3): the graph's
    weights train in float while the forward pass sees what ``convert_graph`` will compute —
    each Conv2d / Linear weight fake-quantized on its per-channel int8 grid (recomputed from
    the current weights every step, as ``weight_qparams``), the input and every observed
    activation fake-quantized with the calibrated uint8 qparams (frozen, as after
    torch.ao's observer freezing) — with straight-through gradients (``fake_quantize_ste``).
    After training, ``convert_graph(prepared, module.to_graph())``."""

    def __init__(self, prepared: PreparedGraph):
        super().__init__(prepared.graph)
        object.__setattr__(self, "activation_qparams", _activation_qparams(prepared))

    def _fake_quantized(self, name: str, x: Tensor) -> Tensor:
        scale, zero = self.activation_qparams[name]
        return fake_quantize_ste(x, scale, zero, 0, 255)

    def forward(self, *inputs: Any) -> Tensor:
        (name,) = self.graph.inputs
        (x,) = inputs
        return super().forward(self._fake_quantized(name, x if isinstance(x, Tensor)
                                                    else Tensor(np.asarray(x))))

    def _run(self, node: Node, ins: list, bindings: dict) -> Tensor:
        if node.op in ("Conv2d", "Conv2dReLU", "Linear", "LinearReLU"):
            ins = [ins[0], _fake_quantized_weight(ins[1])] + ins[2:]
        out = super()._run(node, ins, bindings)
        return self._fake_quantized(node.output, out) if node.output in self.activation_qparams \
            else out


def _write(graph: Graph, qp: Mapping, given_weights: Mapping | None = None) -> Graph:
    out = _Writer(graph, qp, given_weights)
    (x,) = graph.inputs
    out.emit("QuantizeLinear", [x, *out.scale_zero(x)], x, axis=None, dtype=CODE)
    for node in graph.nodes:
        _convert_node(out, node)
    (y,) = graph.outputs
    out.nodes.append(Node("DequantizeLinear", out.quantized(y), y, {"axis": None}))
    return Graph.build(graph.input_types, out.nodes, [y], out.constants)


def to_integer_graph(model: QuantSequential, example_input: Any) -> Graph:
    """The integer graph (QOperator semantics, symbolic batch) of a converted ``QuantSequential``
    with its own numbers: the input quantizer's and every stage's output (scale, zero point),
    each stage's weight codes and per-channel scales from its quantizer (``codes_and_scale``,
    any width up to 8 bits stored in int8), int32 biases at :math:`s_{in} s_w` — what
    ``IntegerModel`` computes, in ops that onnxruntime runs. ``example_input``: one input batch
    (its shape). Raises ValueError for activations that are not 8-bit unsigned codes and for a
    fused ReLU whose output zero point is not 0 (the saturation would not be the ReLU)."""
    if not isinstance(model, QuantSequential) or not model.frozen:
        raise TypeError("model must be a frozen QuantSequential (the output of convert)")
    modules = list(model)
    head, stages = modules[0], [m for m in modules if isinstance(m, QuantStage)]
    if not isinstance(head, FixedFakeQuantize):
        raise ValueError("the model must start with its input quantizer (activations quantized)")
    for quantizer in [head] + [s.output_quant for s in stages]:
        if quantizer is None or (quantizer.qmin, quantizer.qmax) != (0, 255):
            raise ValueError("int8 ONNX needs 8-bit unsigned activation codes (qmin 0, qmax 255)")
    for stage in stages:
        if stage.relu and int(stage.output_quant.zero_point) != 0:
            raise ValueError(f"a fused ReLU needs output zero point 0, got "
                             f"{int(stage.output_quant.zero_point)}")
    plain = nn.Sequential(*[m for module in modules[1:] for m in (
        [module.float_layer()] + ([nn.ReLU()] if module.relu else [])
        if isinstance(module, QuantStage)
        else [module])])
    graph = optimize(trace(plain.eval(), example_input, dynamic_axes={0: "N"}))
    computing = [n for n in graph.nodes if n.op in COMPUTE]
    if [n.op.removesuffix("ReLU") for n in computing] != \
            ["Conv2d" if isinstance(s.layer, nn.Conv2d) else "Linear" for s in stages]:
        raise ValueError(f"the traced ops {[n.op for n in computing]} do not match the stages")
    qp = {graph.inputs[0]: (head.scale, head.zero_point)}
    given = {}
    for node, stage in zip(computing, stages):
        qp[node.output] = (stage.output_quant.scale, stage.output_quant.zero_point)
        codes, scale = stage.weight_quant.codes_and_scale(stage.float_weight())
        channels = codes.shape[0]
        zero = np.broadcast_to(np.asarray(getattr(stage.weight_quant, "zero_point", 0)),
                               (channels,))
        if codes.min() < -128 or codes.max() > 127:
            raise ValueError(f"weight codes must fit int8, got [{codes.min()}, {codes.max()}]")
        given[node.inputs[1]] = (codes.astype(np.int8),
                                 np.broadcast_to(np.asarray(scale, np.float32), (channels,)).copy(),
                                 zero.astype(np.int8))
    return _write(graph, qp, given)


def quantize_graph(model: nn.Module | Graph, calibration: np.ndarray, *,
                   example_input: Any = None, observer: str = "minmax",
                   batch_size: int = 256) -> Graph:
    """``prepare_graph`` → ``calibrate_graph`` on ``calibration`` → ``convert_graph``; the
    example input defaults to the first calibration image."""
    example = calibration[:1] if example_input is None else example_input
    prepared = prepare_graph(model, example, observer=observer)
    return convert_graph(calibrate_graph(prepared, calibration, batch_size))


# ---- QDQ form ---------------------------------------------------------------------------

def _dq(nodes: list[Node], codes: str, scale: str, zero: str, axis: int | None = None) -> str:
    """DequantizeLinear of ``codes`` (one node per value, shared by its consumers); ``zero``
    may be "" (zero point 0, ONNX's default)."""
    name = f"{codes}.dq"
    if not any(n.output == name for n in nodes):
        nodes.append(Node("DequantizeLinear", (codes, scale, zero), name, {"axis": axis}))
    return name


def _weight_dq(nodes: list[Node], graph: Graph, codes: str, scale: str, zero: str) -> str:
    """The per-channel weight DequantizeLinear, its all-zero zero points left out."""
    return _dq(nodes, codes, scale, zero if np.any(graph.constants[zero]) else "", axis=0)


def _bias_dq(nodes: list[Node], constants: dict, graph: Graph, bias: str, x_scale: str,
             w_scale: str) -> str:
    scale = (np.float32(graph.constants[x_scale]) * graph.constants[w_scale]).astype(np.float32)
    constants[f"{bias}.scale"] = scale
    return _dq(nodes, bias, f"{bias}.scale", "", axis=0)


def to_qdq(graph: Graph) -> Graph:
    """The QDQ form of an integer graph from ``convert_graph``: each QLinearConv / QGemm /
    QLinearAdd / QLinearGlobalAveragePool / QLinearAveragePool / QLinearConcat becomes
    DequantizeLinear of its inputs (weights per output channel, axis 0; the int32 bias at scale
    s_x s_w) → the float op → QuantizeLinear to the same output scale and zero point; ops on
    codes and the input / output conversions stay."""
    nodes: list[Node] = []
    constants = dict(graph.constants)
    for node in graph.nodes:
        i, a = node.inputs, node.attrs
        if node.op == "QLinearConv":
            top, left, bottom, right = a["pads"]
            if (top, left) != (bottom, right):
                raise NotImplementedError(f"node {node.output!r}: asymmetric pads {a['pads']}")
            args = [_dq(nodes, *i[0:3]), _weight_dq(nodes, graph, *i[3:6]),
                    _bias_dq(nodes, constants, graph, i[8], i[1], i[4])]
            float_node = Node("Conv2d", tuple(args), f"{node.output}.float",
                              {"stride": a["stride"], "padding": (top, left),
                               "dilation": a["dilation"], "groups": a["groups"]})
            y = i[6:8]
        elif node.op == "QGemm":
            args = [_dq(nodes, *i[0:3]), _weight_dq(nodes, graph, *i[3:6]),
                    _bias_dq(nodes, constants, graph, i[6], i[1], i[4])]
            float_node = Node("Linear", tuple(args), f"{node.output}.float", {})
            y = i[7:9]
        elif node.op == "QLinearAdd":
            args = [_dq(nodes, *i[0:3]), _dq(nodes, *i[3:6])]
            float_node = Node("Add", tuple(args), f"{node.output}.float", {})
            y = i[6:8]
        elif node.op in ("QLinearGlobalAveragePool", "QLinearAveragePool"):
            args = [_dq(nodes, *i[0:3])]
            float_node = Node("AdaptiveAvgPool2d", tuple(args), f"{node.output}.float",
                              {"output_size": (1, 1)}) if node.op == "QLinearGlobalAveragePool" \
                else Node("AvgPool2d", tuple(args), f"{node.output}.float", dict(a))
            y = i[3:5]
        elif node.op == "QLinearConcat":
            parts = [_dq(nodes, *i[k:k + 3]) for k in range(2, len(i), 3)]
            float_node = Node("Concatenate", tuple(parts), f"{node.output}.float",
                              {"axis": a["axis"]})
            y = i[0:2]
        else:
            nodes.append(node)
            continue
        nodes.append(float_node)
        nodes.append(Node("QuantizeLinear", (float_node.output, *y), node.output,
                          {"axis": None, "dtype": CODE}))
    used = {name for node in nodes for name in node.inputs}
    return Graph.build(graph.input_types, nodes, graph.outputs,
                       {k: v for k, v in constants.items() if k in used})
