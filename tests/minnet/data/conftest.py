"""Fixtures for the data tests: IDX files written from the format spec, and a local mirror.

No test here may reach the internet: the default mirror list and the mirror environment
variable are emptied for every test, and downloads go to an HTTP server on 127.0.0.1.
"""
import functools
import gzip
import http.server
import struct
import threading

import numpy as np
import pytest

from minnet.data import download

# IDX element-type codes, from the format description (big-endian data).
IDX_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
                  np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D,
                  np.dtype(np.float64): 0x0E}


def idx_bytes(array):
    """The IDX encoding of ``array``: 0x0000, type code, ndim, big-endian sizes, big-endian data."""
    array = np.asarray(array)
    header = struct.pack(">HBB", 0, IDX_TYPE_CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture(scope="session")
def encode_idx():
    """``encode_idx(array)``: the IDX bytes of ``array``."""
    return idx_bytes


@pytest.fixture(scope="session")
def write_idx():
    """``write_idx(path, array, gz=False)`` writes ``array`` as IDX and returns the bytes."""
    def write(path, array, gz=False):
        data = idx_bytes(array)
        if gz:
            data = gzip.compress(data)
        path.write_bytes(data)
        return data
    return write


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setattr(download, "MNIST_MIRRORS", ())
    monkeypatch.delenv(download.MIRRORS_ENV, raising=False)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


class Mirror:
    """A directory served over HTTP on 127.0.0.1; ``requests`` lists the paths asked for.
    Any path under ``/cut/`` answers with a body shorter than its Content-Length; a path
    under ``/nolength/`` serves the file at the rest of the path without a Content-Length."""

    def __init__(self, directory, url, requests):
        self.directory = directory
        self.url = url
        self.requests = requests


@pytest.fixture
def mirror(tmp_path):
    directory = tmp_path / "served"
    directory.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            if self.path.startswith("/cut/"):  # promise more bytes than are sent, then hang up
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"\x1f\x8b only part")
                self.close_connection = True
                return
            if self.path.startswith("/nolength/"):
                body = (directory / self.path[len("/nolength/"):]).read_bytes()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield Mirror(directory, f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
