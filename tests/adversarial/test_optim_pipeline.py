"""The pipeline and its command line against a user's files, kills and bad paths: ``--force``
removes only what the manifest records, temporaries of a SIGKILLed write are swept, a corrupt
model file re-runs its stage, and every bad path or config is one ``error:`` line."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from optim.__main__ import main
from optim.pipeline import MANIFEST, PipelineError, run_pipeline
from optim.pipeline.config import parse_config
from optim.pipeline.report import TIMING_KEYS

TINY = """
[run]
model = "lenet-300-100"
limit = 64
test_limit = 20
latency_repeats = 1

[[stage]]
type = "baseline"
epochs = {epochs}

[[stage]]
type = "graph"
"""


def _run(out, epochs=1, force=False, graph=True):
    text = TINY.format(epochs=epochs)
    if not graph:
        text = text[:text.index('[[stage]]\ntype = "graph"')]
    lines = []
    report = run_pipeline(parse_config(text), out, config_text=text, force=force,
                          progress=False, log=lines.append)
    return report, lines


def _outcome(report):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in report["rows"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    report, _ = _run(out)
    return out, report


def _copy(reference, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    return out


def _temporaries(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.tmp"))


# ---- --force and the manifest ---------------------------------------------------------------


def test_force_removes_only_what_the_pipeline_wrote(reference, tmp_path):
    out = _copy(reference, tmp_path)
    mine = {out / "00-baseline" / "notes.txt": "my notes",
            out / "01-graph" / "data" / "keep.bin": "my data",
            out / "mine.txt": "top level"}
    for path, text in mine.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    # another baseline: every stage is replaced (its keys changed), with --force
    with pytest.raises(PipelineError, match="another configuration"):
        _run(out, epochs=2)
    _, lines = _run(out, epochs=2, force=True)
    assert all(line.endswith("running") for line in lines[:2])
    # the graph stage dropped: what the pipeline wrote for it goes, the user's data stays
    _run(out, epochs=2, force=True, graph=False)
    assert sorted(p.name for p in (out / "01-graph").iterdir()) == ["data"]
    assert {p: p.read_text() for p in mine} == mine
    recorded = json.loads((out / MANIFEST).read_text())
    # the pipeline's directory 01-graph stays recorded (it is emptied of its files only)
    assert not any(p.startswith("01-graph/") for kind in ("files", "dirs", "trees")
                   for p in recorded[kind])
    assert not {"00-baseline/notes.txt", "01-graph/data", "mine.txt"} & \
        {p for kind in ("files", "dirs", "trees") for p in recorded[kind]}


@pytest.mark.parametrize("name", ["00-baseline/model.npz", "00-baseline/work", "report.txt"])
def test_a_users_file_where_the_pipeline_would_write_is_refused_and_kept(tmp_path, name):
    out = tmp_path / "run"
    target = out / name
    target.parent.mkdir(parents=True)
    if name.endswith("work"):
        target.mkdir()
        (target / "mine").write_text("mine")
    else:
        target.write_text("mine")
    with pytest.raises(PipelineError, match="not .* by the pipeline"):
        _run(out, force=True)
    assert (target / "mine" if name.endswith("work") else target).read_text() == "mine"


def test_a_run_directory_without_manifest_is_left_alone(reference, tmp_path):
    out = _copy(reference, tmp_path)
    (out / MANIFEST).unlink()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(PipelineError, match="no manifest.json lists"):
        _run(out, force=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ---- SIGKILL during an atomic write --------------------------------------------------------

KILLED_CHILD = textwrap.dedent("""
    import os, sys, time
    marker, argv = sys.argv[1], sys.argv[2:]
    fsync = os.fsync

    def stalling_fsync(fd):  # hold the write of the first model file open until killed
        if ".model.npz." in os.readlink(f"/proc/self/fd/{fd}"):
            open(marker, "w").close()
            time.sleep(600)
        fsync(fd)

    os.fsync = stalling_fsync
    from optim.__main__ import main
    sys.exit(main(argv))
""")


def test_temporaries_of_a_sigkilled_write_are_swept_by_the_next_run(reference, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.format(epochs=1))
    out, marker = tmp_path / "run", tmp_path / "writing"
    out.mkdir()
    decoy = out / ".notes.txt.0123456789abcdef.tmp"  # a user's file that looks like one
    decoy.write_text("mine")
    command = [sys.executable, "-c", KILLED_CHILD, str(marker), "-c", str(config), "-o",
               str(out), "--no-progress", "--force"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert marker.exists(), child.stderr.read().decode()[-2000:]
    left = _temporaries(out / "00-baseline")
    assert [p.name.split(".")[1:3] for p in left] == [["model", "npz"]]
    report, lines = _run(out, force=True)
    assert _temporaries(out) == [decoy]
    assert decoy.read_text() == "mine"
    assert _outcome(report) == _outcome(reference[1])


# ---- a finished stage whose files were damaged runs again ---------------------------------


@pytest.mark.parametrize("damage", ["model-flipped-byte", "model-truncated"])
def test_damaged_finished_stage_runs_again(reference, tmp_path, damage):
    out = _copy(reference, tmp_path)
    model = out / "00-baseline" / "model.npz"
    original = model.read_bytes()
    if damage == "model-flipped-byte":
        model.write_bytes(original[:len(original) // 2] + bytes([original[len(original) // 2] ^ 1])
                          + original[len(original) // 2 + 1:])
    else:
        model.write_bytes(original[:1000])
    report, lines = _run(out)
    assert lines[0].endswith("baseline (baseline): running")
    assert lines[1].endswith("graph (graph): done earlier, reused")  # same bytes again
    assert model.read_bytes() == original
    assert _outcome(report) == _outcome(reference[1])


# ---- the command line: one error line, no traceback ---------------------------------------


def _cli_cases(tmp: Path) -> dict[str, tuple[list[str], int, str]]:
    (tmp / "afile").write_text("x")
    (tmp / "latin1.toml").write_bytes('[run]\n# r\xe9sum\xe9\n'.encode("latin-1"))
    (tmp / "bad-ckpt.toml").write_text(f'[[stage]]\ntype = "baseline"\ncheckpoint = '
                                       f'"{tmp / "afile"}"\n')
    np.savez(tmp / "other.npz", a=np.zeros(3))
    (tmp / "other-ckpt.toml").write_text(f'[[stage]]\ntype = "baseline"\ncheckpoint = '
                                         f'"{tmp / "other.npz"}"\n')
    ok = str(tmp / "ok.toml")
    (tmp / "ok.toml").write_text(TINY.format(epochs=1))
    return {
        "out-is-a-file": (["-c", ok, "-o", str(tmp / "afile")], 2,
                          f"error: --out: {tmp / 'afile'} is a file, not a directory"),
        "out-under-a-file": (["-c", ok, "-o", str(tmp / "afile" / "sub" / "run")], 2,
                             f"error: --out: {tmp / 'afile' / 'sub' / 'run'} lies under "
                             f"{tmp / 'afile'}, which is a file"),
        "config-not-utf8": (["-c", str(tmp / "latin1.toml"), "--check"], 2,
                            "is not UTF-8 text (byte 0xe9 at offset 9)"),
        "config-is-a-directory": (["-c", str(tmp), "--check"], 2, "error: --config: cannot read"),
        "checkpoint-not-an-npz": (["-c", str(tmp / "bad-ckpt.toml"), "-o", str(tmp / "o")], 2,
                                  "error: stage[0].checkpoint: " + repr(str(tmp / "afile"))
                                  + " is not an npz"),
        "checkpoint-npz-not-a-model": (["-c", str(tmp / "other-ckpt.toml"), "-o",
                                        str(tmp / "o")], 2, "error: checkpoint: cannot load"),
    }


CLI_CASES = ["out-is-a-file", "out-under-a-file", "config-not-utf8", "config-is-a-directory",
             "checkpoint-not-an-npz", "checkpoint-npz-not-a-model"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_gives_one_error_line(tmp_path, capsys, case):
    argv, code, message = _cli_cases(tmp_path)[case]
    assert main(argv + ["--no-progress"] if "--check" not in argv else argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def _as_unprivileged(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in a forked child that dropped root (uid/gid 65534): root ignores file
    modes. Returns the exit code and stderr."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.close(read)
            os.dup2(write, 2)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            code = main(argv)
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        err = f.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), err


@pytest.mark.parametrize("where", ["parent-read-only", "out-read-only"])
def test_read_only_output_is_one_error_line(where):
    if os.name != "posix":
        pytest.skip("file modes and setuid are POSIX")
    base = Path(tempfile.mkdtemp(prefix="optim-ro-"))
    try:
        base.chmod(0o755)
        config = base / "tiny.toml"
        config.write_text(TINY.format(epochs=1))
        config.chmod(0o644)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        out = locked / "run" if where == "parent-read-only" else locked
        argv = ["-c", str(config), "-o", str(out), "--no-progress", "--force"]
        if os.geteuid() == 0:
            code, err = _as_unprivileged(argv)
        else:
            import io
            from contextlib import redirect_stderr
            buffer = io.StringIO()
            with redirect_stderr(buffer):
                code = main(argv)
            err = buffer.getvalue()
        lines = err.strip().splitlines()
        assert code == 2, err
        assert len(lines) == 1 and lines[0].startswith(f"error: --out: ") \
            and "Permission denied" in lines[0], err
        assert not any(locked.iterdir())
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base)


def test_onnx_extra_requires_a_version_with_external_data_checks():
    """onnx < 1.16 lacks the external-data path checks that ``from_onnx`` relies on."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    (onnx,) = [r for r in extras["onnx"] if r.replace(" ", "").startswith("onnx>=")]
    version = tuple(int(v) for v in onnx.replace(" ", "")[len("onnx>="):].split(".")[:2])
    assert version >= (1, 16)
