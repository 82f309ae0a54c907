"""Adversarial catalogue for minnet's files: ``minnet.load``, ``read_idx`` and ``atomic_write``.

Issue 15, classes 2 (temporary files of killed writers), 4 (small files declaring huge sizes)
and 9 (one documented error). Each parametrised case is a bad input and the exact exception
(and reason) it must give; the fuzzers edit valid files at random in a child process whose
address space is capped (``fuzz_helpers``), so a crash or an allocation past the cap fails
the test instead of the test run.
"""
import bz2
import gzip
import io
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_helpers
from fuzz_helpers import check_isolated, describe, run_isolated
from minnet import io as mio
from minnet.data.idx import MAX_IDX_BYTES, read_idx

HERE = Path(__file__)
STATE = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1.5, -2.0]),
         "n": np.array(7, dtype=np.int64), "flags": np.array([True, False])}


# ---- building archives by hand ---------------------------------------------------------
def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=True)
    return buffer.getvalue()


def npy_with_header(shape, descr: str, data: bytes) -> bytes:
    """An .npy member whose header says ``shape``/``descr`` whatever ``data`` holds."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"shape": shape, "fortran_order": False, "descr": descr})
    return buffer.getvalue() + data


def zip_archive(members) -> bytes:
    """A ZIP file written field by field (PKWARE APPNOTE 4.3.7, 4.3.12, 4.3.16), so that the
    sizes, method and flags can lie. ``members``: dicts with ``name``, ``payload`` (the bytes
    stored), and optional ``method`` (0), ``size`` (uncompressed size, default the payload's
    length), ``crc`` (default the payload's CRC-32), ``flags`` (0)."""
    local, central = b"", b""
    for m in members:
        name = m["name"].encode()
        payload = m["payload"]
        fields = (20, m.get("flags", 0), m.get("method", 0), 0, 0x21,
                  m.get("crc", zlib.crc32(payload)), len(payload), m.get("size", len(payload)),
                  len(name))
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0,
                               len(local)) + name
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + name + payload
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central),
                      len(local), 0)
    return local + central + end


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def valid_archive(tmp_path, compress=False) -> bytes:
    path = tmp_path / "valid.npz"
    mio.save(STATE, path, compress=compress)
    return path.read_bytes()


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]


def pickled_npz(tmp_path) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, ok=np.ones(2), payload=np.array([None, "x"], dtype=object))
    return buffer.getvalue()


def oversized_member() -> bytes:
    """An archive whose one stored member declares 10**6 bytes (compressed and not) in both
    headers while the file is a few hundred bytes long."""
    payload = npy_bytes([1.0])
    archive = zip_archive([{"name": "w.npy", "payload": payload}])
    sizes = struct.pack("<II", len(payload), len(payload))
    assert archive.count(sizes) == 2
    return archive.replace(sizes, struct.pack("<II", 10 ** 6, 10 ** 6))


W_DATA = STATE["w"].tobytes()

# case -> (bytes of the file, given a tmp_path; a fragment of the reason)
LOAD_CASES = {
    "empty file": (lambda t: b"", "the file is empty"),
    "text file": (lambda t: b"weights = [1, 2, 3]\n", "not a readable npz archive: BadZipFile"),
    "single .npy": (lambda t: npy_bytes(np.ones(3)), "single .npy array"),
    "random bytes": (lambda t: np.random.default_rng(0).bytes(3000), "not a readable npz"),
    "truncated archive": (lambda t: valid_archive(t)[:300], "not a readable npz archive"),
    "one flipped data byte (stored)": (
        lambda t: flip(valid_archive(t), valid_archive(t).index(W_DATA) + 5), "Bad CRC-32"),
    "one flipped byte (deflated)": (
        lambda t: flip(valid_archive(t, compress=True), 60), "not a readable npz archive"),
    "member that is not .npy": (
        lambda t: zip_archive([{"name": "notes.txt", "payload": b"hello"}]), "not an .npy array"),
    "bzip2 member (unbounded inflation)": (
        lambda t: zip_archive([{"name": "w.npy", "method": 12, "size": len(npy_bytes([1.0])),
                                "payload": bz2.compress(npy_bytes([1.0]))}]),
        "compression method 12"),
    "encrypted member": (
        lambda t: zip_archive([{"name": "w.npy", "flags": 1, "payload": npy_bytes([1.0])}]),
        "encrypted"),
    "duplicate members": (
        lambda t: zip_archive([{"name": "w.npy", "payload": npy_bytes([1.0])}] * 2),
        "duplicate members ['w.npy']"),
    "object array (pickle)": (pickled_npz, "'payload' is an object array"),
    "npy header promises more than the member holds": (
        lambda t: zip_archive([{"name": "w.npy",
                                "payload": npy_with_header((10 ** 6,), "<f8", b"\0" * 8)}]),
        "header promises 8000128 bytes"),
    "npy shape whose product overflows int64": (
        lambda t: zip_archive([{"name": "w.npy",
                                "payload": npy_with_header((2 ** 40, 2 ** 40), "<f8", b"")}]),
        f"promises {2 ** 83 + 128} bytes"),
    "negative dimension": (
        lambda t: zip_archive([{"name": "w.npy", "payload": npy_with_header((-1,), "<f4", b"")}]),
        "negative dimension"),
    "zero-size dtype": (
        lambda t: zip_archive([{"name": "w.npy",
                                "payload": npy_with_header((10 ** 9,), "|V0", b"")}]),
        "zero-size dtype"),
    "unsupported npy version": (
        lambda t: zip_archive([{"name": "w.npy", "payload": b"\x93NUMPY\x07\x00" + b"\0" * 8}]),
        "unsupported .npy format version"),
    "stored member declaring more than it stores": (
        lambda t: zip_archive([{"name": "w.npy", "payload": npy_bytes([1.0]), "size": 2 ** 31}]),
        "more than its"),
    "deflated member declaring more than deflate can expand to": (
        lambda t: zip_archive([{"name": "w.npy", "method": 8, "size": 2 ** 32 - 1,
                                "payload": deflated(npy_bytes(np.zeros(1000)))}]),
        "more than its"),
    "member running past the end of the file": (lambda t: oversized_member(), "past the end"),
}


@pytest.mark.parametrize("case", sorted(LOAD_CASES))
def test_bad_archive_raises_unreadable_file_error_naming_path_and_reason(tmp_path, case):
    build, reason = LOAD_CASES[case]
    path = tmp_path / "bad.npz"
    path.write_bytes(build(tmp_path))
    with pytest.raises(mio.UnreadableFileError) as info:
        mio.load(path)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.path == path and str(path) in str(error)
    assert reason in error.reason, error.reason
    assert "pickled data" not in str(error)


def test_a_directory_or_a_fifo_is_not_an_archive(tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")  # opening it for reading would block forever
    (tmp_path / "dir.npz").mkdir()
    for name in ("fifo.npz", "dir.npz"):
        with pytest.raises(mio.UnreadableFileError, match="not a regular file"):
            mio.load(tmp_path / name)


def test_valid_archives_load_exactly(tmp_path):
    for compress in (False, True):
        path = tmp_path / f"ok{compress}.npz"
        path.write_bytes(valid_archive(tmp_path, compress))
        got = mio.load(path)
        assert set(got) == set(STATE)
        for key, value in STATE.items():
            assert got[key].dtype == value.dtype and got[key].flags.writeable
            np.testing.assert_array_equal(got[key], value)


def test_cap_is_the_sum_of_the_declared_member_sizes(tmp_path):
    path = tmp_path / "ok.npz"
    mio.save(STATE, path, compress=True)
    with zipfile.ZipFile(path) as archive:  # the sizes as the ZIP directory states them
        total = sum(info.file_size for info in archive.infolist())
    assert set(mio.load(path, max_bytes=total)) == set(STATE)
    with pytest.raises(mio.UnreadableFileError, match=rf"{total} bytes.*cap of {total - 1}"):
        mio.load(path, max_bytes=total - 1)
    with pytest.raises(ValueError, match="max_bytes"):
        mio.load(path, max_bytes=-1)


# ---- small files declaring huge sizes, read in a child with a capped address space --------
BOMB_DIR_ENV = "MINNET_TEST_BOMB_DIR"
GIB = 1 << 30


def write_npz_bomb(path: Path) -> int:
    """An npz of one uint8 array of 3 GiB of zeros, about 3 MB on disk. Its CRC-32 is left 0
    (computing the real one costs seconds): a reader must refuse the member before it
    inflates it, long before a CRC could be checked."""
    header = npy_with_header((3 * GIB,), "|u1", b"")
    chunk = bytes(1 << 24)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    # after a full flush deflate starts afresh, so one compressed chunk can be repeated
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    payload = head + block * (3 * GIB // len(chunk)) + compressor.flush()
    path.write_bytes(zip_archive([{"name": "w.npy", "method": 8, "payload": payload,
                                   "size": len(header) + 3 * GIB, "crc": 0}]))
    return path.stat().st_size


def write_idx_bomb(path: Path) -> int:
    """A gzip IDX file of 1 GiB of zero bytes (shape (2**30,)), about 1 MB on disk (CRC-32
    left 0, as in ``write_npz_bomb``)."""
    header = struct.pack(">HBBI", 0, 0x08, 1, GIB)
    chunk = bytes(1 << 24)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = head + block * (GIB // len(chunk)) + compressor.flush()
    gz_header = b"\x1f\x8b\x08\x00" + b"\0" * 4 + b"\x02\xff"
    path.write_bytes(gz_header + body + struct.pack("<II", 0, (len(header) + GIB) % 2 ** 32))
    return path.stat().st_size


def read_bombs_within_64_mib():
    """Child side: both bombs are refused, and nothing allocates more than the headroom."""
    directory = Path(os.environ[BOMB_DIR_ENV])
    try:
        mio.load(directory / "bomb.npz")
    except mio.UnreadableFileError as err:
        assert "cap of" in err.reason, err
    else:
        raise AssertionError("the npz bomb was loaded")
    try:
        read_idx(directory / "bomb-idx1-ubyte.gz")
    except ValueError as err:
        assert "more than the cap" in str(err), err
    else:
        raise AssertionError("the IDX bomb was read")


def test_bombs_are_refused_before_inflating_and_fuzzers_find_nothing(tmp_path, monkeypatch):
    assert write_npz_bomb(tmp_path / "bomb.npz") < 4 << 20
    assert write_idx_bomb(tmp_path / "bomb-idx1-ubyte.gz") < 2 << 20
    # the bombs are genuine: the streams inflate at over 1000:1 (checked on their first
    # 16 MiB) to the sizes their headers declare
    with zipfile.ZipFile(tmp_path / "bomb.npz") as archive:
        info = archive.infolist()[0]
        assert info.file_size > 3 * GIB
        with archive.open(info) as member:
            assert len(member.read(16 << 20)) == 16 << 20
    with gzip.open(tmp_path / "bomb-idx1-ubyte.gz") as stream:
        start = stream.read(16 << 20)
        assert len(start) == 16 << 20 and struct.unpack(">I", start[4:8])[0] == GIB
    monkeypatch.setenv(BOMB_DIR_ENV, str(tmp_path))
    # one child reads the bombs and runs both fuzzers: starting an interpreter that imports
    # minnet and hypothesis is most of the cost
    check_isolated(HERE, "read_bombs_then_fuzz_both_readers", headroom=64 << 20)


# ---- the IDX reader ----------------------------------------------------------------------
def idx(code: int, shape, data: bytes) -> bytes:
    return struct.pack(">HBB", 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + data


IDX_CASES = {
    "sizes whose product overflows int64": (
        lambda: idx(0x0E, (2 ** 32 - 1,) * 4, b"\0" * 64), f"{8 * (2 ** 32 - 1) ** 4} bytes"),
    "declared size above the cap": (lambda: idx(0x08, (MAX_IDX_BYTES + 1,), b""),
                                    "more than the cap"),
    "gzip too small for its header's size": (
        lambda: gzip.compress(idx(0x08, (2 ** 27,), b"\0" * 1000)), "can hold"),
    "truncated plain file": (lambda: idx(0x08, (10,), b"\0" * 9), "truncated"),
    "trailing bytes, plain": (lambda: idx(0x08, (10,), b"\0" * 11), "trailing bytes"),
    "trailing bytes, gzip": (lambda: gzip.compress(idx(0x08, (10,), b"\0" * 11)),
                             "trailing bytes"),
    "truncated gzip body": (lambda: gzip.compress(idx(0x08, (10,), b"\0" * 9)), "truncated"),
    "cut gzip stream": (lambda: gzip.compress(idx(0x08, (100,), bytes(range(100))))[:-12],
                        "corrupt or truncated gzip"),
    "flipped deflate byte": (
        lambda: flip(gzip.compress(idx(0x08, (100,), bytes(range(100)))), 14),
        "corrupt or truncated gzip"),
    "unknown element type": (lambda: idx(0x0A, (1,), b"\0"), "not an IDX file"),
    "zero dimensions": (lambda: idx(0x08, (), b""), "not an IDX file"),
    "nonzero leading bytes": (lambda: b"\x01" + idx(0x08, (1,), b"\0")[1:], "not an IDX file"),
    "header cut inside the sizes": (lambda: idx(0x08, (3, 3), b"")[:9], "truncated"),
    "empty file": (lambda: b"", "truncated"),
    "empty gzip stream": (lambda: gzip.compress(b""), "truncated"),
}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
def test_bad_idx_file_raises_value_error_naming_file_and_reason(tmp_path, case):
    build, reason = IDX_CASES[case]
    path = tmp_path / "bad-idx"
    path.write_bytes(build())
    with pytest.raises(ValueError) as info:
        read_idx(path)
    assert "bad-idx" in str(info.value) and reason in str(info.value), str(info.value)


def test_idx_reader_refuses_a_fifo_and_a_directory(tmp_path):
    os.mkfifo(tmp_path / "fifo-idx")
    (tmp_path / "dir-idx").mkdir()
    for name in ("fifo-idx", "dir-idx"):
        with pytest.raises(ValueError, match=f"{name}: not a regular file"):
            read_idx(tmp_path / name)


def test_idx_labels_magic_refuses_an_images_file(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(idx(0x08, (1, 28, 28), bytes(784)))
    with pytest.raises(ValueError, match="0x00000803, expected 0x00000801"):
        read_idx(path, magic=0x00000801)


# ---- class 2: temporary files of killed writers -------------------------------------------
_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from minnet.io import atomic_write
    with atomic_write(sys.argv[1]) as f:
        f.write(b"half a checkpoint")
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
""")
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")


def test_sigkill_mid_write_leaves_a_temp_file_that_the_next_write_sweeps(tmp_path):
    target = tmp_path / "model.npz"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p for p in tmp_path.iterdir() if TEMP_NAME.fullmatch(p.name)]
    assert len(leftovers) == 1 and not target.exists()
    [leftover] = leftovers
    assert leftover.read_bytes() == b"half a checkpoint"

    mio.save(STATE, tmp_path / "other.npz")  # a young temp file may be a live writer's
    assert leftover.exists()
    stale = time.time() - mio.STALE_TEMP_SECONDS - 60
    os.utime(leftover, (stale, stale))
    mio.save(STATE, tmp_path / "third.npz")
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.npz", "third.npz"]


# name -> created as ("file" | "dir" | "symlink", stale?) and whether the sweep removes it
SWEEP_CASES = {
    ".model.npz.0123456789abcdef.tmp": ("file", True, True),
    ".a b.c.fedcba9876543210.tmp": ("file", True, True),
    ".model.npz.0123456789abcdef.tmp.young": ("file", True, False),
    ".young.npz.0123456789abcdef.tmp": ("file", False, False),
    ".model.npz.0123456789ABCDEF.tmp": ("file", True, False),
    ".model.npz.0123456789abcde.tmp": ("file", True, False),
    "model.npz.0123456789abcdef.tmp": ("file", True, False),
    "notes.tmp": ("file", True, False),
    "..0123456789abcdef.tmp": ("file", True, False),
    ".dir.0123456789abcdef.tmp": ("dir", True, False),
    ".link.0123456789abcdef.tmp": ("symlink", True, False),
}


@pytest.mark.parametrize("name", sorted(SWEEP_CASES))
def test_sweep_removes_only_stale_temp_files_of_its_own_pattern(tmp_path, name):
    kind, stale, removed = SWEEP_CASES[name]
    path = tmp_path / name
    outside = tmp_path / "outside"
    outside.write_bytes(b"user data")
    if kind == "file":
        path.write_bytes(b"x")
    elif kind == "dir":
        path.mkdir()
    else:
        path.symlink_to(outside)
    when = time.time() - (mio.STALE_TEMP_SECONDS + 60 if stale else 0)
    os.utime(path, (when, when), follow_symlinks=False)
    swept = mio.sweep_stale_temp_files(tmp_path)
    assert (not os.path.lexists(path)) == removed
    assert swept == ([path] if removed else [])
    assert outside.read_bytes() == b"user data"


# ---- the isolated runner itself ----------------------------------------------------------
def test_isolated_runner_reports_a_segfault():
    result = run_isolated(fuzz_helpers.__file__, "crash_with_a_segfault")
    assert result.returncode == -signal.SIGSEGV
    assert "SIGSEGV" in describe(result)


def test_isolated_runner_caps_the_address_space():
    result = run_isolated(fuzz_helpers.__file__, "allocate_a_gibibyte", headroom=256 << 20)
    assert result.returncode == 1 and "MemoryError" in result.stderr


# ---- fuzzers (run in the child) ----------------------------------------------------------
FUZZ_CAP = 1 << 20
FUZZ_SETTINGS = settings(max_examples=100, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))
edits = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("set32"), st.integers(0, 1 << 16),
              st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(0, 2 ** 32 - 1)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=16)),
), min_size=1, max_size=4)


def mutate(data: bytes, changes) -> bytes:
    """``data`` with each edit applied at its position modulo the current length."""
    for change in changes:
        where = change[1] % (len(data) + 1)
        if change[0] == "flip" and where < len(data):
            data = data[:where] + bytes([data[where] ^ change[2]]) + data[where + 1:]
        elif change[0] == "set32":
            data = data[:where] + struct.pack("<I", change[2]) + data[where + 4:]
        elif change[0] == "truncate":
            data = data[:where]
        elif change[0] == "insert":
            data = data[:where] + change[2] + data[where:]
    return data


def fuzz_minnet_load():
    """Random edits of valid archives (stored and deflated): ``load`` either returns exactly
    the saved arrays or raises ``UnreadableFileError`` (never another exception, never a
    crash, never an allocation beyond the child's cap)."""
    directory = Path(tempfile.mkdtemp())
    originals = [valid_archive(directory, compress) for compress in (False, True)]

    @FUZZ_SETTINGS
    @given(which=st.sampled_from([0, 1]), changes=edits)
    def check(which, changes):
        path = directory / "fuzzed.npz"
        path.write_bytes(mutate(originals[which], changes))
        try:
            got = mio.load(path, max_bytes=FUZZ_CAP)
        except mio.UnreadableFileError:
            return
        assert set(got) == set(STATE)
        for key, value in STATE.items():
            assert got[key].dtype == value.dtype and got[key].shape == value.shape
            assert np.array_equal(got[key], value)

    check()


def reference_idx(data: bytes, cap: int):
    """The array the IDX spec gives for ``data`` (plain or gzip), or None if it gives none."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.GzipFile(fileobj=io.BytesIO(data)).read()
        except (OSError, EOFError, zlib.error):
            return None
    if len(data) < 4 or data[:2] != b"\0\0":
        return None
    codes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = data[2], data[3]
    if code not in codes or ndim == 0 or len(data) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(codes[code])
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > cap or len(data) != 4 + 4 * ndim + nbytes:
        return None
    return np.frombuffer(data, dtype, offset=4 + 4 * ndim).reshape(shape)


def fuzz_read_idx():
    """Random edits of valid IDX files (plain and gzip): ``read_idx`` agrees with the spec
    (``reference_idx``): the same array when the spec gives one, else ``ValueError``."""
    directory = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    plain = [idx(0x08, (3, 4, 5), rng.integers(0, 256, 60, dtype=np.uint8).tobytes()),
             idx(0x0B, (7,), rng.integers(-999, 999, 7).astype(">i2").tobytes())]
    originals = plain + [gzip.compress(p) for p in plain]

    @FUZZ_SETTINGS
    @given(which=st.sampled_from(range(len(originals))), changes=edits)
    def check(which, changes):
        data = mutate(originals[which], changes)
        path = directory / "fuzzed-idx"
        path.write_bytes(data)
        expected = reference_idx(data, FUZZ_CAP)
        try:
            got = read_idx(path, max_bytes=FUZZ_CAP)
        except ValueError:
            assert expected is None, "read_idx refused a file the spec reads"
            return
        assert expected is not None, "read_idx read a file the spec refuses"
        assert got.dtype.isnative and got.dtype == expected.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, expected)

    check()


def read_bombs_then_fuzz_both_readers():
    """Child side of ``test_bombs_are_refused_before_inflating_and_fuzzers_find_nothing``."""
    read_bombs_within_64_mib()
    fuzz_minnet_load()
    fuzz_read_idx()
