"""Running the pipeline: artifacts, skipping finished stages, refusing another run's directory,
resuming after SIGKILL with the same report, and the command line."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optim.pipeline import PipelineError, load_data, run_pipeline
from optim.pipeline.config import OPTIONS, RUN_OPTIONS, default_config_text, parse_config
from optim.pipeline.report import TIMING_KEYS
from optim.pipeline.store import load_model

TINY = """
[run]
limit = 512
test_limit = 100
latency_repeats = 1

[[stage]]
type = "baseline"
epochs = 2

[[stage]]
type = "prune"
amounts = [0.5, 0.6, 0.7, 0.8]
fine_tune_epochs = 2

[[stage]]
type = "shrink"

[[stage]]
type = "distill"
epochs = 1

[[stage]]
type = "quantize"
weight_bits = {bits}

[[stage]]
type = "graph"

[[stage]]
type = "export"
"""
STAGES = ["00-baseline", "01-prune", "02-shrink", "03-distill", "04-quantize", "05-graph",
          "06-export"]


def _run(out, bits=5, force=False):
    text = TINY.format(bits=bits)
    lines = []
    report = run_pipeline(parse_config(text), out, config_text=text, force=force, progress=False,
                          log=lines.append)
    return report, lines


def _outcome(report):
    """The report without its timings (latencies, stage seconds) and environment."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in report["rows"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    report, lines = _run(out)
    return out, report, lines


def test_run_writes_every_artifact(reference):
    out, report, lines = reference
    assert all(line.endswith("running") for line in lines[:len(STAGES)])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == STAGES
    for name in STAGES:
        record = json.loads((out / name / "stage.json").read_text())
        assert not (out / name / "work").exists()
        model, meta = load_model(out / name / "model.npz")
        assert meta["stage"] == record["stage"] == name[3:]
        deployed = out / name / record.get("artefact", "model.npz")
        assert record["file_bytes"] == deployed.stat().st_size
    assert (out / "config.toml").read_text() == TINY.format(bits=5)
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert (out / "report.csv").read_text().count("\n") == 1 + len(STAGES)
    assert (out / "report.txt").read_text().splitlines()[2].startswith("baseline")
    assert (out / "05-graph" / "graph.txt").read_text()
    rows = report["rows"]
    assert [r["stage"] for r in rows] == [s[3:] for s in STAGES]
    assert rows[0]["ratio"] == 1.0
    assert rows[1]["nonzero"] < rows[0]["nonzero"]  # pruned
    assert rows[4]["packed_bytes"] < rows[3]["packed_bytes"]  # quantized
    assert rows[4]["engine"] == "integer" and rows[5]["engine"] == "graph"
    assert report["summary"]["final_stage"] == "export"
    assert set(report["summary"]["targets"]) >= {"ratio_at_least_10x", "faster_at_batch_1"}


def test_onnx_file_is_exported(reference):
    """The quantized model leaves as int8 ONNX (QLinearConv / QGemm, int8 weights, a symbolic
    batch); its row's size is the file's, and onnxruntime on that file gives the row's
    accuracy at batch 1 and 64."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out, report, _ = reference
    path = out / "06-export" / "model.onnx"
    row = report["rows"][-1]
    assert path.stat().st_size == row["details"]["onnx_bytes"] == row["file_bytes"]
    assert row["details"]["onnx_form"] == "int8" and row["engine"] == "onnxruntime"
    model = onnx.load(str(path))
    assert {"QLinearConv", "QGemm"} <= {n.op_type for n in model.graph.node}
    assert not [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
                and len(t.dims) >= 2]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    config = json.loads((out / "pipeline.json").read_text())["config"]
    x, y = load_data(config["run"])[1]
    for n in (1, 64):
        assert session.run(None, {session.get_inputs()[0].name: x[:n]})[0].shape == (n, 10)
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert (logits.argmax(axis=1) == y).mean() == pytest.approx(row["accuracy"])


def test_plot_is_written(reference):
    pytest.importorskip("matplotlib")
    out, report, _ = reference
    assert report["plot"] == "accuracy_vs_size.png"
    assert (out / "accuracy_vs_size.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_reuses_every_finished_stage(reference):
    out, report, _ = reference
    again, lines = _run(out)
    assert all(line.endswith("reused") for line in lines[:len(STAGES)])
    assert again["rows"] == report["rows"]


def test_another_config_is_refused_unless_forced(reference, tmp_path):
    out, report, _ = reference
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    with pytest.raises(PipelineError, match="another configuration.*--force"):
        _run(copy, bits=4)
    changed, lines = _run(copy, bits=4, force=True)
    # stages before quantize kept, quantize and later redone on the same inputs
    assert [line.endswith("reused") for line in lines[:len(STAGES)]] == [True] * 4 + [False] * 3
    assert _outcome(changed)[:4] == _outcome(report)[:4]
    assert changed["rows"][4]["packed_bytes"] < report["rows"][4]["packed_bytes"]


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PipelineError, match="not empty and holds no pipeline run"):
        _run(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "optim", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_sigkill_mid_stage_then_rerun_gives_the_same_report(reference, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.format(bits=5))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "optim", "-c", str(config), "-o", str(out), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = out / "01-prune" / "work" / "rounds.npz"  # the first pruning round is done
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), process.stderr.read().decode()[-2000:]
    assert not (out / "01-prune" / "stage.json").exists(), "the stage finished before the kill"
    assert (out / "00-baseline" / "stage.json").exists()
    result = _cli("-c", str(config), "-o", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "baseline (baseline): done earlier, reused" in result.stdout
    assert "prune (prune): running" in result.stdout
    resumed = json.loads((out / "report.json").read_text())
    ref_out, report, _ = reference
    assert _outcome(resumed) == _outcome(json.loads(json.dumps(report)))
    for name in STAGES:
        assert (out / name / "model.npz").read_bytes() == (ref_out / name / "model.npz").read_bytes()


def test_help_explains_every_option():
    result = _cli("--help", timeout=120)
    assert result.returncode == 0
    text = result.stdout
    for flag in ("--config", "--out", "--force", "--dataset", "--data-root", "--seed", "--limit",
                 "--test-limit", "--latency-repeats", "--check", "--print-config", "--no-progress"):
        assert flag in text
    for kind, options in OPTIONS.items():
        assert f'type = "{kind}"' in text
        for key in options:
            assert f"  {key}" in text, (kind, key)
    for key in RUN_OPTIONS:
        assert f"  {key}" in text


def test_bad_config_exits_with_status_2_before_any_work(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stage]]\ntype = "baseline"\n[[stage]]\ntype = "prune"\namounts = [0.9, 0.5]\n')
    result = _cli("-c", str(bad), "-o", str(tmp_path / "out"), timeout=120)
    assert result.returncode == 2
    assert "error: stage[1].amounts: amounts must increase" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["-c", "{tmp}/absent.toml"], "error: --config: cannot read"),
    (["--check", "--limit", "0"], "error: run.limit: must be >= 1"),
    (["--check", "--dataset", "mnist-full", "--seed", "-2"], "error: run.seed: must be >= 0"),
    (["-c", "{tmp}/ckpt.toml", "--check"], "error: stage[0].checkpoint: no such file"),
    (["-c", "{tmp}/syntax.toml"], "error: {tmp}/syntax.toml: not valid TOML"),
    (["-o", "{tmp}", "--limit", "64"], "error: --out: {tmp} is not empty"),
])
def test_cli_errors(tmp_path, capsys, argv, message):
    from optim.__main__ import main
    (tmp_path / "ckpt.toml").write_text('[[stage]]\ntype = "baseline"\ncheckpoint = "no/such.npz"\n')
    (tmp_path / "syntax.toml").write_text("[[stage]\n")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_check_and_print_config(capsys):
    from optim.__main__ import main
    assert main(["--check"]) == 0
    assert "baseline (baseline) -> prune (prune)" in capsys.readouterr().out
    assert main(["--print-config"]) == 0
    assert capsys.readouterr().out == default_config_text()
    assert main(["--check", "--limit", "100", "--dataset", "mnist-full"]) == 0


def test_changed_measurement_options_measure_again_without_recomputing(reference, tmp_path):
    out, report, _ = reference
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    text = TINY.format(bits=5).replace("test_limit = 100", "test_limit = 40")
    lines = []
    again = run_pipeline(parse_config(text), copy, config_text=text, force=True, progress=False,
                         log=lines.append)
    assert all(line.endswith("measured again") for line in lines[:len(STAGES)])
    for old, new in zip(report["rows"], again["rows"]):
        assert new["packed_bytes"] == old["packed_bytes"] and new["seconds"] == old["seconds"]
    # accuracy on 40 images is a multiple of 1/40
    assert all(abs(40 * r["accuracy"] - round(40 * r["accuracy"])) < 1e-9 for r in again["rows"])


@pytest.mark.parametrize("text", [
    # every optional stage: NAS picks the student, structured pruning, low rank, sharing
    """[run]
limit = 128
test_limit = 50
latency_repeats = 1
[[stage]]
type = "baseline"
epochs = 1
[[stage]]
type = "nas"
space = "mlp"
trials = 2
trial_epochs = 1
epochs = 1
[[stage]]
type = "prune"
method = "channels"
amounts = [0.25]
fine_tune_epochs = 1
[[stage]]
type = "shrink"
[[stage]]
type = "lowrank"
energy = 0.8
fine_tune_epochs = 1
[[stage]]
type = "distill"
epochs = 1
[[stage]]
type = "share"
n_clusters = 4
fine_tune_epochs = 1
[[stage]]
type = "graph"
""",
    # BatchNorm model, quantization-aware training, a disabled stage
    """[run]
model = "lenet5-bn"
limit = 128
test_limit = 50
latency_repeats = 1
[[stage]]
type = "baseline"
epochs = 1
[[stage]]
type = "prune"
amounts = [0.5]
fine_tune_epochs = 1
[[stage]]
type = "shrink"
enabled = false
[[stage]]
type = "quantize"
method = "qat"
weight_bits = 4
epochs = 1
""",
], ids=["optional-stages", "batchnorm-qat"])
def test_other_pipelines_run(tmp_path, text):
    report = run_pipeline(parse_config(text), tmp_path / "run", config_text=text, progress=False,
                          log=lambda line: None)
    kinds = [row["type"] for row in report["rows"]]
    assert kinds == [s["type"] for s in parse_config(text)["stages"]]
    assert report["rows"][-1]["packed_bytes"] < report["rows"][0]["packed_bytes"]
