"""Checksum-verified downloads, against a local HTTP server on 127.0.0.1."""

import gzip
import hashlib
import http.server
import pathlib
import threading

import numpy as np
import pytest

from vaecpp import datasets
from vaecpp._download import DownloadError, fetch

SHARED_DATA = pathlib.Path("/work/shared/data")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``: path -> bytes; paths under /drop/ stop half-way."""

    def do_GET(self):  # noqa: N802 (the http.server API)
        self.server.requests.append(self.path)
        name = self.path.split("?")[0]
        drop = name.startswith("/drop/")
        body = self.server.files.get(name.replace("/drop/", "/", 1) if drop else name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if drop else body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local HTTP server; set ``server.files[path] = bytes``; ``server.url`` is its base."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    thread.join()
    httpd.server_close()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_fetch_downloads_verifies_and_caches(server, tmp_path):
    body = b"some data " * 10000
    server.files["/a/file.bin"] = body
    path = fetch(server.url + "/a/file.bin", sha(body), tmp_path / "cache", quiet=True)
    assert path == tmp_path / "cache" / "file.bin" and path.read_bytes() == body
    assert fetch(server.url + "/a/file.bin", sha(body), tmp_path / "cache", quiet=True) == path
    assert server.requests == ["/a/file.bin"]  # the second call used the cache
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["file.bin"]


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    server.files["/f.gz"] = b"tampered"
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        fetch(server.url + "/f.gz", sha(b"original"), tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_connection_dropped_mid_file_leaves_no_file(server, tmp_path):
    body = bytes(range(256)) * 400
    server.files["/f.bin"] = body
    with pytest.raises(DownloadError, match="connection closed after 51200 of 102400 bytes"):
        fetch(server.url + "/drop/f.bin", sha(body), tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_next_url_is_tried_after_a_failure(server, tmp_path, capsys):
    body = b"payload"
    server.files["/good/x.bin"] = body
    urls = [server.url + "/missing/x.bin", server.url + "/drop/x.bin", server.url + "/good/x.bin"]
    path = fetch(urls, sha(body), tmp_path)
    assert path.read_bytes() == body
    assert capsys.readouterr().err.count("downloading") == 3


def test_all_urls_failing_lists_each_reason(server, tmp_path):
    with pytest.raises(DownloadError) as info:
        fetch([server.url + "/nope.bin", "unknown-scheme://x/nope.bin"], sha(b""), tmp_path,
              quiet=True)
    message = str(info.value)
    assert "HTTP Error 404" in message and "unknown-scheme" in message
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cached_file_is_replaced(server, tmp_path):
    body = b"right"
    server.files["/x.bin"] = body
    (tmp_path / "x.bin").write_bytes(b"wrong")
    assert fetch(server.url + "/x.bin", sha(body), tmp_path, quiet=True).read_bytes() == body


def _serve_split(server, prefix, split, n, monkeypatch, spec):
    """Serves a small synthetic split under ``prefix`` with checksums patched into ``spec``."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    stem = "train" if split == "train" else "t10k"
    for kind, array, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        body = gzip.compress(header + array.tobytes())
        name = f"{stem}-{kind}-ubyte.gz"
        server.files[f"{prefix}/{name}"] = body
        monkeypatch.setitem(spec["sha256"], name, sha(body))
    return images, labels


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    monkeypatch.delenv("VAECPP_DATA", raising=False)
    monkeypatch.delenv("VAECPP_MIRROR", raising=False)
    monkeypatch.setenv("VAECPP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(datasets._FASHION_MNIST, "system_dirs", ())
    return tmp_path


def test_loader_downloads_from_mirror_argument(server, no_local_data, monkeypatch, capsys):
    images, labels = _serve_split(server, "/m", "train", 4, monkeypatch, datasets._MNIST)
    x, y = datasets.mnist(mirror=server.url + "/m/")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert (no_local_data / "cache" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    server.requests.clear()
    datasets.mnist(download=False)  # now found in the cache
    assert server.requests == []


def test_loader_uses_vaecpp_mirror_layout(server, no_local_data, monkeypatch, capsys):
    images, _ = _serve_split(server, "/root/fashion-mnist", "test", 3, monkeypatch,
                             datasets._FASHION_MNIST)
    monkeypatch.setenv("VAECPP_MIRROR", server.url + "/root")
    x, _ = datasets.fashion_mnist(split="test", cache_dir=no_local_data / "c2")
    np.testing.assert_array_equal(x, images)
    assert (no_local_data / "c2" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_loader_download_with_wrong_checksum_fails_cleanly(server, no_local_data, monkeypatch):
    _serve_split(server, "/m", "test", 2, monkeypatch, datasets._MNIST)
    monkeypatch.setitem(datasets._MNIST["sha256"], "t10k-labels-idx1-ubyte.gz", sha(b"other"))
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        datasets.mnist(split="test", mirror=server.url + "/m", cache_dir=no_local_data / "c",
                       fallback=False)
    leftovers = [p.name for p in (no_local_data / "c").rglob("*") if p.is_file()]
    assert leftovers == ["t10k-images-idx3-ubyte.gz"]  # the good file only; no partial file


def test_mnist_fallback_after_failed_download(server, no_local_data, monkeypatch, capsys):
    images, _ = _serve_split(server, "/m", "test", 2, monkeypatch, datasets._MNIST)
    with pytest.warns(datasets.DatasetFallbackWarning, match="HTTP Error 404.*MNIST test set"):
        x, _ = datasets.mnist(mirror=server.url + "/m", fallback=True)
    np.testing.assert_array_equal(x, images)


def test_real_mnist_test_files_verify_against_the_table(server, no_local_data, capsys):
    folder = SHARED_DATA / "mnist"
    if not (folder / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"MNIST test set not found at {folder}")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        server.files["/mnist/" + name] = (folder / name).read_bytes()
    x, y = datasets.mnist(split="test", mirror=server.url + "/mnist")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)


def test_real_frey_faces_verify_against_the_table(server, no_local_data, monkeypatch, capsys):
    path = SHARED_DATA / "frey_rawface.mat"
    if not path.is_file():
        pytest.skip(f"Frey faces not found at {path}")
    server.files["/d/frey/frey_rawface.mat"] = path.read_bytes()
    monkeypatch.setenv("VAECPP_MIRROR", server.url + "/d")
    faces = datasets.frey_faces()
    assert faces.shape == (1965, 28, 20)
    assert (no_local_data / "cache" / "frey" / "frey_rawface.mat").is_file()
