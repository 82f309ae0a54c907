"""Measurements and the report: the float view computes what the model computes, the engines
agree, the counts match optim.metrics, the ratios follow their definition."""
import csv
import io

import numpy as np
import pytest

import minnet
from minnet import nn
from minnet.models import lenet5
from minnet.train import evaluate
from optim import metrics, prune, quant
from optim.pipeline.engines import float_view, runner
from optim.pipeline.report import (COLUMNS, compression_rows, format_table, measure,
                                   plot_accuracy_vs_size, report_csv)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)


def _model(seed=0):
    minnet.manual_seed(seed)
    return lenet5().eval()


def _outputs(model, x):
    model.eval()
    with minnet.no_grad():
        return model(minnet.Tensor(x)).data


def test_float_view_of_pruned_and_shared_models_computes_the_same(data):
    x, _ = data
    pruned = _model()
    prune.prune_model(pruned, 0.7)
    view = float_view(pruned)
    assert not any(prune.is_pruned(m) for m in view.modules())
    np.testing.assert_array_equal(_outputs(view, x), _outputs(pruned, x))
    shared = quant.share_weights(_model(), n_clusters=4)
    view = float_view(shared)
    assert not any(nn.parametrize.is_parametrized(m) for m in view.modules())
    np.testing.assert_allclose(_outputs(view, x), _outputs(shared, x), rtol=1e-5, atol=1e-6)


def test_float_view_of_weight_only_quantized_model_computes_the_same(data):
    x, _ = data
    prepared = quant.prepare(_model(), weight_bits=4, weight_only=True)
    quant.calibrate(prepared, x)
    converted = quant.convert(prepared)
    view = float_view(converted)
    assert not any(isinstance(m, (quant.QuantStage, quant.FixedFakeQuantize))
                   for m in view.modules())
    np.testing.assert_allclose(_outputs(view, x), _outputs(converted, x), rtol=1e-5, atol=1e-5)
    # the view's weights lie on the 4-bit grid: at most 16 values per output channel
    first = view[0].weight.data.reshape(6, -1)
    assert all(np.unique(row).size <= 16 for row in first)


def test_graph_engine_agrees_with_minnet(data):
    x, _ = data
    model = _model()
    expected = runner(model, "minnet")(x)
    np.testing.assert_allclose(runner(model, "graph")(x), expected, rtol=1e-4, atol=1e-5)


def test_onnxruntime_engine_agrees_with_minnet(data):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    x, _ = data
    model = _model()
    np.testing.assert_allclose(runner(model, "onnxruntime")(x[:3]), runner(model, "minnet")(x[:3]),
                               rtol=1e-4, atol=1e-5)


def test_unknown_engine_is_rejected():
    with pytest.raises(ValueError, match="engine must be one of"):
        runner(_model(), "tpu")


def test_measure_matches_optim_metrics_and_evaluate(data):
    x, y = data
    model = _model()
    prune.prune_model(model, 0.5)
    result = measure(model, "minnet", (x, y), repeats=1)
    assert result["accuracy"] == pytest.approx(evaluate(model, (x, y))["accuracy"])
    assert result["params"] == metrics.count_params(lenet5())
    assert result["macs"] == metrics.macs(lenet5(), (1, 1, 28, 28))
    kept = sum(int(prune.get_mask(m, "weight").sum()) for _, m, _ in prune.prunable(model))
    biases = sum(m.bias.size for _, m, _ in prune.prunable(model))
    assert result["nonzero"] == kept + biases
    assert result["latency_b1"] > 0 and result["latency_b64"] > 0


def _rows():
    stages = [
        {"stage": "baseline", "engine": "minnet", "accuracy": 0.96, "packed_bytes": 1000,
         "file_bytes": 900, "latency_b1": 2e-4, "latency_b64": 3e-3},
        {"stage": "small", "engine": "graph", "accuracy": 0.955, "packed_bytes": 40,
         "file_bytes": 60, "latency_b1": 1e-4, "latency_b64": 1e-3},
    ]
    return compression_rows(stages)


def test_compression_rows_follow_the_definitions():
    rows = _rows()
    assert rows[0]["ratio"] == 1.0 and rows[0]["accuracy_drop_pp"] == 0.0
    assert rows[1]["ratio"] * rows[1]["packed_bytes"] == pytest.approx(rows[0]["packed_bytes"])
    assert rows[1]["file_ratio"] == pytest.approx(900 / 60)
    assert rows[1]["accuracy_drop_pp"] == pytest.approx(0.5)


def test_table_and_csv_have_one_line_per_stage():
    rows = _rows()
    lines = format_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[2].startswith("baseline") and "25.0x" in lines[3]
    assert "0.200" in lines[2]  # latency shown in milliseconds
    parsed = list(csv.DictReader(io.StringIO(report_csv(rows))))
    assert [r["stage"] for r in parsed] == ["baseline", "small"]
    assert list(parsed[0]) == [key for key, _, _ in COLUMNS]
    assert float(parsed[1]["ratio"]) == pytest.approx(25.0)
    assert parsed[1]["params"] == ""  # missing values stay empty


def test_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plot.png"
    assert plot_accuracy_vs_size(_rows(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
