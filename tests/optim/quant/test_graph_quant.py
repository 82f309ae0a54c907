"""Post-training quantization of graphs (``optim.quant.graph_quant``): the integer graph's
structure (per-channel int8 weights of the BN-folded convolutions, int32 biases, QLinearAdd for
residual adds), its QDQ form computing the same codes, onnxruntime (optional oracle) running
both exported forms at several batch sizes with the project's integer engine's outputs, an
imported ONNX model quantized the same way, and bad input refused."""
from pathlib import Path

import numpy as np
import pytest

import minnet
from minnet import nn
from optim.graph import execute, from_onnx, to_onnx
from optim.graph.zoo import residual_cnn
from optim.quant.graph_quant import (calibrate_graph, convert_graph, prepare_graph,
                                     quantize_graph, to_qdq, weight_qparams)

FIXTURES = Path(__file__).resolve().parents[1] / "graph" / "fixtures"


@pytest.fixture(scope="module")
def residual():
    minnet.manual_seed(0)
    model = residual_cnn().eval()
    x = np.random.default_rng(0).standard_normal((48, 1, 28, 28)).astype(np.float32)
    prepared = calibrate_graph(prepare_graph(model, x[:2]), x[:32])
    return prepared, convert_graph(prepared), x[32:]


def _output_step(graph):
    return float(graph.constants[graph.nodes[-1].inputs[1]])


def test_weights_are_per_channel_int8_of_the_folded_convolutions(residual):
    """Each QLinearConv / QGemm weight is int8 with one scale per output channel equal to that
    channel's max |w| / 127 of the BatchNorm-folded float weight, its codes reach ±127, its bias
    is int32 at scale s_x · s_w; both residual adds became QLinearAdd."""
    prepared, graph, _ = residual
    ops = [n.op for n in graph.nodes]
    assert ops.count("QLinearAdd") == 2 and ops.count("QLinearConv") == 5
    assert ops[0] == "QuantizeLinear" and ops[-1] == "DequantizeLinear"
    float_weights = {n.inputs[1]: prepared.graph.constants[n.inputs[1]]
                     for n in prepared.graph.nodes if n.op.startswith(("Conv2d", "Linear"))}
    for node in graph.nodes:
        if node.op not in ("QLinearConv", "QGemm"):
            continue
        codes, scales = graph.constants[node.inputs[3]], graph.constants[node.inputs[4]]
        w = float_weights[node.inputs[3].removesuffix(".int8")]
        peaks = np.abs(w.reshape(len(w), -1)).max(axis=1)
        assert codes.dtype == np.int8 and scales.shape == (len(w),)
        np.testing.assert_allclose(scales, peaks / 127, rtol=1e-6)
        assert np.all(np.abs(codes.reshape(len(w), -1)).max(axis=1) == 127)
        np.testing.assert_allclose(codes * scales.reshape((-1,) + (1,) * (w.ndim - 1)), w,
                                   atol=float(scales.max()) / 2 + 1e-7)
        bias = graph.constants[node.inputs[8 if node.op == "QLinearConv" else 6]]
        assert bias.dtype == np.int32


def test_weight_qparams_by_hand():
    """Rows [1, -2, 0.5] and [0, 0, 0]: scales 2/127 and 1 (empty channel), codes
    round([63.5, -127, 31.75]) = [64, -127, 32] (half to even: 63.5 → 64) and zeros."""
    codes, scales = weight_qparams(np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(scales, [2 / 127, 1.0], rtol=1e-7)
    assert codes.tolist() == [[64, -127, 32], [0, 0, 0]]


def test_qdq_form_computes_the_same_codes(residual):
    """The QDQ rewrite (dequantize → float op → quantize, float32 arithmetic) and the integer
    graph (exact integer accumulators, float32 requantization) agree within one output step
    everywhere and exactly on nearly every element, and the QDQ graph keeps no float weight."""
    _, graph, x = residual
    qdq = to_qdq(graph)
    step = _output_step(graph)
    diff = np.abs(execute(graph, x) - execute(qdq, x))
    assert diff.max() <= step * 1.0001 and (diff < 1e-6).mean() >= 0.95
    float_params = [k for k, v in qdq.constants.items() if v.dtype == np.float32 and v.ndim >= 2]
    assert not float_params


@pytest.mark.parametrize("form", ["qoperator", "qdq", "compact"])
def test_onnxruntime_runs_the_export_like_the_integer_engine(residual, form):
    """Exported with a symbolic batch, onnxruntime runs the file at batch 1 and 7 and its
    outputs equal the integer engine's within one output step (codes within 1); with short
    value names (``compact``) the file is smaller and runs the same."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    _, graph, x = residual
    exported = to_qdq(graph) if form == "qdq" else graph
    data = to_onnx(exported, compact=form == "compact").SerializeToString()
    if form == "compact":
        assert len(data) < len(to_onnx(graph).SerializeToString())
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    assert session.get_inputs()[0].shape[0] == "N"
    step = _output_step(graph)
    for n in (1, 7):
        theirs = session.run(None, {name: x[:n]})[0]
        ours = execute(graph, x[:n])
        assert theirs.shape == ours.shape
        assert np.abs(theirs - ours).max() <= step * 1.0001


def test_an_imported_onnx_model_quantizes():
    """A torch-exported LeNet-5 (ONNX fixture) goes through the same path; onnxruntime runs
    the QOperator export like the integer engine, and the integer outputs stay within 3 % of
    the float model's output range."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    float_graph = from_onnx(FIXTURES / "lenet5_torchscript.onnx")
    x = np.random.default_rng(1).random((40, 1, 28, 28)).astype(np.float32)
    graph = quantize_graph(float_graph, x[:32])
    ours, reference = execute(graph, x[32:]), execute(float_graph, x[32:])
    assert np.abs(ours - reference).max() <= 0.03 * np.ptp(reference)
    session = ort.InferenceSession(to_onnx(graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: x[32:]})[0]
    assert np.abs(theirs - ours).max() <= _output_step(graph) * 1.0001


def test_bad_input_is_refused(residual):
    prepared, _, _ = residual
    with pytest.raises(ValueError, match="Sigmoid"):
        prepare_graph(nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()), np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="calibrate_graph"):
        convert_graph(prepare_graph(prepared.graph))
    with pytest.raises(ValueError, match="observer"):
        prepare_graph(prepared.graph, observer="nope")
    with pytest.raises(TypeError, match="model"):
        prepare_graph("model.onnx")


def test_a_converted_sequential_exports_with_its_own_codes():
    """``to_integer_graph`` of a PTQ-converted LeNet-5 (5-bit weights, 8-bit activations) keeps
    the model's weight codes and scales; onnxruntime runs its file at batch 1 and 9, and the
    output codes equal ``IntegerModel``'s within one code (float32 multiplier there, fixed-point
    there), the predicted classes on almost every image."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from minnet import models
    from optim.quant import IntegerModel, QConfig, calibrate, convert, prepare
    from optim.quant.graph_quant import to_integer_graph
    minnet.manual_seed(0)
    x = np.random.default_rng(2).random((64, 1, 28, 28)).astype(np.float32)
    prepared = prepare(models.lenet5(), QConfig(weight_bits=5))
    quantized = convert(calibrate(prepared, x[:48]))
    graph = to_integer_graph(quantized, x[:1])
    stage = next(m for m in quantized.modules() if type(m).__name__ == "QuantStage")
    codes, scales = stage.weight_quant.codes_and_scale(stage.float_weight())
    qconv = next(n for n in graph.nodes if n.op == "QLinearConv")
    np.testing.assert_array_equal(graph.constants[qconv.inputs[3]], codes)
    np.testing.assert_allclose(graph.constants[qconv.inputs[4]], scales, rtol=1e-7)
    engine = IntegerModel(quantized)
    session = ort.InferenceSession(to_onnx(graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    step = engine.output_qparams[0]
    for n in (1, 9):
        theirs = session.run(None, {session.get_inputs()[0].name: x[48:48 + n]})[0]
        assert np.abs(theirs - engine(x[48:48 + n])).max() <= step * 1.0001
    theirs = session.run(None, {session.get_inputs()[0].name: x[48:]})[0]
    assert (theirs.argmax(axis=1) == engine.predict(x[48:])).mean() >= 0.9
    with pytest.raises(TypeError, match="QuantSequential"):
        to_integer_graph(prepared, x[:1])


def test_qat_trains_a_graph_and_converts_to_what_it_simulated():
    """``QATGraphModule`` on a calibrated residual CNN: gradients reach every weight through
    the fake quantizers, two epochs on MNIST lower the loss, and the integer graph converted
    from the trained weights computes what the QAT forward simulated (within one output step,
    nearly every output exactly, the same class on every image; the float weights converted
    instead differ by up to 255 steps)."""
    from minnet import functional as F
    from minnet import optimizers
    from minnet.data import load_mnist
    from minnet.train import fit
    from optim.quant.graph_quant import QATGraphModule
    x, y = load_mnist("train")
    x, y = x[:256], y[:256]
    minnet.manual_seed(0)
    prepared = calibrate_graph(prepare_graph(residual_cnn().eval(), x[:2]), x[:128])
    qat = QATGraphModule(prepared)
    loss = F.cross_entropy(qat(x[:64]), y[:64])
    loss.backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in qat.parameters())
    before = float(loss.data)
    fit(qat, optimizers.Adam(qat.parameters(), lr=3e-3), (x, y), 2, batch_size=32, seed=0,
        progress=False)
    qat.eval()
    assert float(F.cross_entropy(qat(x[:64]), y[:64]).data) < before
    integer = convert_graph(prepared, qat.to_graph())
    simulated, ours = qat(x[128:]).data, execute(integer, x[128:])
    steps = np.abs(simulated - ours) / _output_step(integer)
    assert steps.max() <= 1.0001 and (steps < 1e-3).mean() >= 0.95
    np.testing.assert_array_equal(simulated.argmax(axis=1), ours.argmax(axis=1))
    untrained = execute(convert_graph(prepared), x[128:])
    assert np.abs(untrained - ours).max() > 10 * _output_step(integer)


class _Branches(nn.Module):
    """Two convolutions concatenated along the channels, average pooling, a classifier."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(1, 2, 1)
        self.pool, self.fc = nn.AvgPool2d(2), nn.Linear(5 * 14 * 14, 10)

    def forward(self, x):
        from minnet import functional as F
        y = self.pool(F.concatenate([F.relu(self.a(x)), self.b(x)], axis=1))
        return self.fc(y.reshape(y.shape[0], -1))


def test_concat_and_average_pooling_quantize_and_run_in_onnxruntime():
    """Concat becomes QLinearConcat (each branch requantized to the shared scale), AvgPool2d
    QLinearAveragePool; onnxruntime runs both forms like the integer engine."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    minnet.manual_seed(0)
    x = np.random.default_rng(3).random((40, 1, 28, 28)).astype(np.float32)
    graph = quantize_graph(_Branches().eval(), x[:32])
    assert {"QLinearConcat", "QLinearAveragePool"} <= {n.op for n in graph.nodes}
    for form in (graph, to_qdq(graph)):
        session = ort.InferenceSession(to_onnx(form).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        theirs = session.run(None, {session.get_inputs()[0].name: x[32:]})[0]
        assert np.abs(theirs - execute(graph, x[32:])).max() <= _output_step(graph) * 1.0001
