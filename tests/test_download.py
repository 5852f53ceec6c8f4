"""The download path against a local HTTP server (the real hosts are unreachable here)."""
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import pytest

from labkit.data import download as dl


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    cut_after: int | None = None  # serve only this many bytes, then drop the connection
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        self.requests.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if self.cut_after is not None:
            self.wfile.write(chunk[: self.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)  # an interrupted transfer
            return
        self.wfile.write(chunk)


@pytest.fixture
def server():
    _Handler.files, _Handler.cut_after, _Handler.requests = {}, None, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield _Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _zip_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_checksum_match_extracts(server, tmp_path, monkeypatch):
    handler, base = server
    archive = _zip_bytes({"tiny-imagenet-200/wnids.txt": "n01\n", "tiny-imagenet-200/words.txt": "n01\tthing\n"})
    handler.files["/tiny.zip"] = archive
    monkeypatch.setitem(dl.SOURCES, "tiny-imagenet-200", dl.Source(
        base + "/tiny.zip", "md5:" + hashlib.md5(archive).hexdigest(), "tiny-imagenet-200"))
    root = dl.fetch_dataset("tiny-imagenet-200", tmp_path / "tiny")
    assert (root / "tiny-imagenet-200" / "wnids.txt").read_text() == "n01\n"
    # idempotent: a second call neither downloads nor extracts again
    n = len(handler.requests)
    dl.fetch_dataset("tiny-imagenet-200", tmp_path / "tiny")
    assert len(handler.requests) == n


def test_checksum_mismatch_deletes_and_raises(server, tmp_path):
    handler, base = server
    handler.files["/a.zip"] = b"not what was promised"
    with pytest.raises(dl.ChecksumError, match="expected 0000"):
        dl.download(base + "/a.zip", tmp_path / "a.zip", "sha256:" + "0" * 64)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "a.zip.part").exists()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    handler, base = server
    body = bytes(range(256)) * 400
    handler.files["/big.bin"] = body
    handler.cut_after = 30_000
    checksum = "sha256:" + hashlib.sha256(body).hexdigest()
    with pytest.raises(Exception):
        dl.download(base + "/big.bin", tmp_path / "big.bin", checksum)
    part = tmp_path / "big.bin.part"
    assert part.exists() and 0 < part.stat().st_size < len(body)
    have = part.stat().st_size
    handler.cut_after = None
    dl.download(base + "/big.bin", tmp_path / "big.bin", checksum)
    assert (tmp_path / "big.bin").read_bytes() == body
    assert handler.requests[-1] == f"bytes={have}-"  # resumed, not restarted


def test_unreachable_host_gives_a_clear_error(tmp_path):
    with pytest.raises(ConnectionError, match="put the file at"):
        dl.download("http://127.0.0.1:9/nothing.zip", tmp_path / "x.zip", None, timeout=2)


def test_path_traversal_is_refused(tmp_path):
    evil_zip = tmp_path / "evil.zip"
    evil_zip.write_bytes(_zip_bytes({"../escaped.txt": "x"}))
    with pytest.raises(dl.UnsafeArchiveError, match="outside"):
        dl.safe_extract(evil_zip, tmp_path / "out")
    evil_tar = tmp_path / "evil.tar.gz"
    with tarfile.open(evil_tar, "w:gz") as tf:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(dl.UnsafeArchiveError, match="outside"):
        dl.safe_extract(evil_tar, tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists()
