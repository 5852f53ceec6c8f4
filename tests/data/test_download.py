"""The download path against a local HTTP server (the real hosts are unreachable here), and archives."""
import hashlib
import http.server
import io
import tarfile
import threading

import pytest

from conftest import zip_bytes
from labkit import progress as pg
from labkit.data import download as dl
from labkit.paths import DiskSpaceError


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    cut_after: int | None = None  # serve only this many bytes, then drop the connection
    ignore_range = False  # answer 200 with the whole file, as some servers and proxies do
    range_from_zero = False  # answer 206 for the whole file, whatever range was asked
    claim_length: int | None = None  # announce this Content-Length and send nothing
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self.files.get(self.path)
        rng = self.headers.get("Range")
        self.requests.append(rng)
        if body is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng and not self.ignore_range else 0
        if self.range_from_zero and rng:
            start = 0
        if start >= len(body) and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if rng and not self.ignore_range else 200)
        if rng and not self.ignore_range:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        chunk = body[start:]
        self.send_header("Content-Length", str(self.claim_length or len(chunk)))
        self.end_headers()
        if self.claim_length:
            return
        if self.cut_after is not None:
            self.wfile.write(chunk[: self.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)  # an interrupted transfer
            return
        self.wfile.write(chunk)


@pytest.fixture
def server():
    _Handler.files, _Handler.cut_after, _Handler.requests = {}, None, []
    _Handler.ignore_range, _Handler.range_from_zero, _Handler.claim_length = False, False, None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield _Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


BODY = bytes(range(256)) * 400
SHA = "sha256:" + hashlib.sha256(BODY).hexdigest()



# ----------------------------------------------------------------------------- downloads

def test_checksum_match_extracts(server, tmp_path, monkeypatch):
    handler, base = server
    archive = zip_bytes({"tiny-imagenet-200/wnids.txt": "n01\n", "tiny-imagenet-200/words.txt": "n01\tthing\n"})
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


def test_pinned_sha256_mismatch(server, tmp_path, monkeypatch):
    """Dogs vs Cats has no published checksum: the first download pins its SHA-256. A damaged copy is
    fetched again, and an archive that no longer matches the pin is refused and removed."""
    handler, base = server
    first = zip_bytes({"PetImages/Cat/0.jpg": "c", "PetImages/Dog/0.jpg": "d"})
    handler.files["/pets.zip"] = first
    monkeypatch.setitem(dl.SOURCES, "dogs-vs-cats", dl.Source(base + "/pets.zip", None, "PetImages"))
    root = dl.fetch_dataset("dogs-vs-cats", tmp_path / "dc")
    pinned = root / "pets.zip.sha256"
    assert pinned.read_text().strip() == hashlib.sha256(first).hexdigest()
    # the archive is damaged and the extraction lost; upstream now serves other bytes
    (root / ".PetImages.extracted").unlink()
    (root / "pets.zip").write_bytes(b"damaged")
    handler.files["/pets.zip"] = zip_bytes({"PetImages/Cat/0.jpg": "changed"})
    with pytest.raises(dl.ChecksumError, match=r"pets\.zip\.sha256.*delete that file"):
        dl.fetch_dataset("dogs-vs-cats", tmp_path / "dc")
    assert not (root / "pets.zip").exists() and not (root / "pets.zip.part").exists()
    assert not (root / ".PetImages.extracted").exists()
    assert handler.requests == [None, None]  # the damaged copy was fetched again, from the start


def test_interrupted_download_resumes_with_range(server, tmp_path):
    handler, base = server
    handler.files["/big.bin"] = BODY
    handler.cut_after = 30_000
    with pytest.raises(ConnectionError, match="interrupted"):
        dl.download(base + "/big.bin", tmp_path / "big.bin", SHA)
    part = tmp_path / "big.bin.part"
    assert part.exists() and 0 < part.stat().st_size < len(BODY)
    have = part.stat().st_size
    handler.cut_after = None
    dl.download(base + "/big.bin", tmp_path / "big.bin", SHA)
    assert (tmp_path / "big.bin").read_bytes() == BODY
    assert handler.requests[-1] == f"bytes={have}-"  # resumed, not restarted


@pytest.mark.parametrize("mode", ["ignore_range", "range_from_zero"])
def test_server_not_honouring_range_restarts_cleanly(server, tmp_path, mode):
    """Asked for the rest, the server sends the whole file (200, or 206 from byte 0): the part file
    must be rewritten, not appended to. No checksum, so nothing but the download logic protects it."""
    handler, base = server
    handler.files["/big.bin"] = BODY
    setattr(handler, mode, True)
    (tmp_path / "big.bin.part").write_bytes(b"x" * 5000)
    dl.download(base + "/big.bin", tmp_path / "big.bin")
    assert handler.requests[0] == "bytes=5000-"
    assert (tmp_path / "big.bin").read_bytes() == BODY
    assert not (tmp_path / "big.bin.part").exists()


@pytest.mark.parametrize("checksum", [None, SHA], ids=["no checksum", "checksum"])
def test_416_on_a_finished_part_file(server, tmp_path, checksum):
    handler, base = server
    handler.files["/big.bin"] = BODY
    (tmp_path / "big.bin.part").write_bytes(BODY)
    dl.download(base + "/big.bin", tmp_path / "big.bin", checksum)
    assert handler.requests == [f"bytes={len(BODY)}-"]
    assert (tmp_path / "big.bin").read_bytes() == BODY and not (tmp_path / "big.bin.part").exists()


def test_416_on_a_part_file_longer_than_the_file_starts_over(server, tmp_path):
    handler, base = server
    handler.files["/big.bin"] = BODY
    (tmp_path / "big.bin.part").write_bytes(BODY + b"stale tail")
    dl.download(base + "/big.bin", tmp_path / "big.bin")
    assert handler.requests == [f"bytes={len(BODY) + 10}-", None]
    assert (tmp_path / "big.bin").read_bytes() == BODY


def test_existing_file_failing_its_checksum_is_downloaded_again(server, tmp_path):
    handler, base = server
    handler.files["/big.bin"] = BODY
    dest = tmp_path / "big.bin"
    dest.write_bytes(BODY[:-1] + b"\0")  # same size, one byte off
    dl.download(base + "/big.bin", dest, SHA)
    assert dest.read_bytes() == BODY and handler.requests == [None]
    dl.download(base + "/big.bin", dest, SHA)  # now it verifies: no request
    assert handler.requests == [None]


def test_404_names_the_url_and_where_to_put_the_file(server, tmp_path):
    _, base = server
    dest = tmp_path / "gone.zip"
    with pytest.raises(ConnectionError) as info:
        dl.download(base + "/gone.zip", dest, SHA)
    message = str(info.value)
    assert f"{base}/gone.zip" in message and "404" in message and f"put it at {dest}" in message
    assert not dest.exists() and not (tmp_path / "gone.zip.part").exists()


def test_disk_too_small_is_refused_before_writing(server, tmp_path):
    handler, base = server
    handler.files["/huge.bin"] = b"x"
    handler.claim_length = 10 ** 16  # 10 PB: no disk here holds that
    with pytest.raises(DiskSpaceError, match=r"needs 10000000\.00 GB but .* GB free"):
        dl.download(base + "/huge.bin", tmp_path / "huge.bin")
    assert not (tmp_path / "huge.bin.part").exists()


def test_unreachable_host_gives_a_clear_error(tmp_path):
    with pytest.raises(ConnectionError, match="put the file at"):
        dl.download("http://127.0.0.1:9/nothing.zip", tmp_path / "x.zip", None, timeout=2)


# ----------------------------------------------------------------------------- progress

@pytest.fixture(params=["terminal bar", "sparse text"])
def bars(request, monkeypatch):
    """Every progress bar the download module makes, kept for inspection: tqdm's (as on a terminal) or
    labkit's sparse text lines (as in a log), each writing into its own buffer."""
    made = {}

    def recording(total, desc, **kwargs):
        kwargs.update(file=io.StringIO(), plain=request.param == "sparse text")
        made[desc] = pg.progress(total, desc, **kwargs)
        return made[desc]

    monkeypatch.setattr(dl, "progress", recording)
    return made


def test_download_and_checksum_show_byte_progress(server, tmp_path, bars):
    handler, base = server
    handler.files["/big.bin"] = BODY
    dl.download(base + "/big.bin", tmp_path / "big.bin", SHA, chunk_size=4096)
    bar = bars["big.bin"]
    assert (bar.initial, bar.n, bar.total) == (0, len(BODY), len(BODY))
    check = bars["sha256 big.bin"]  # verified (as big.bin.part) before it is renamed into place
    assert (check.n, check.total) == (len(BODY), len(BODY))
    text = bar.fp.getvalue()
    assert "100" in text and "B/s" in text  # 100 % or 100%, and a rate in bytes per second


def test_a_resumed_download_starts_its_bar_where_it_resumes(server, tmp_path, bars):
    handler, base = server
    handler.files["/big.bin"] = BODY
    handler.cut_after = 30_000
    with pytest.raises(ConnectionError, match="interrupted"):
        dl.download(base + "/big.bin", tmp_path / "big.bin", SHA, chunk_size=4096)
    have = (tmp_path / "big.bin.part").stat().st_size
    assert (bars["big.bin"].n, bars["big.bin"].total) == (have, len(BODY))  # stopped where the bytes stopped
    handler.cut_after = None
    dl.download(base + "/big.bin", tmp_path / "big.bin", SHA, chunk_size=4096)
    bar = bars["big.bin"]
    assert (bar.initial, bar.n, bar.total) == (have, len(BODY), len(BODY))


def test_extraction_shows_progress(server, tmp_path, monkeypatch, bars):
    handler, base = server
    payload = {"tiny-imagenet-200/a.txt": "a" * 5000, "tiny-imagenet-200/b.txt": "b" * 3000}
    handler.files["/tiny.zip"] = zip_bytes(payload)
    monkeypatch.setitem(dl.SOURCES, "tiny-imagenet-200", dl.Source(base + "/tiny.zip", None, "tiny-imagenet-200"))
    dl.fetch_dataset("tiny-imagenet-200", tmp_path / "tiny")
    assert (bars["extracting tiny.zip"].n, bars["extracting tiny.zip"].total) == (8000, 8000)
    assert bars["sha256 tiny.zip"].n == len(handler.files["/tiny.zip"])  # the first download's pin
    archive = _tar(tmp_path / "s.tar.gz", [("stl10_binary/x.bin", "file", "x" * 7000), ("stl10_binary/d", "dir", None)])
    dl.safe_extract(archive, tmp_path / "out")
    checking = bars["checking s.tar.gz"]  # listing a tar.gz decompresses all of it
    assert checking.n == checking.total == archive.stat().st_size
    assert bars["extracting s.tar.gz"].n == bars["extracting s.tar.gz"].total == 7000


def test_make_data_in_a_log_prints_sparse_progress_lines(server, tmp_path, capsys, monkeypatch):
    """stderr is no terminal here (as in CI): one closing line per bar, with the size, not a bar per chunk."""
    monkeypatch.delenv("LABKIT_PLAIN_PROGRESS", raising=False)
    handler, base = server
    handler.files["/big.bin"] = BODY
    dl.download(base + "/big.bin", tmp_path / "big.bin", SHA, chunk_size=1024)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"{pg.PLAIN_PREFIX}big.bin: 100kB of 100kB (100 %)")
    assert lines[1].startswith(f"{pg.PLAIN_PREFIX}sha256 big.bin: 100kB of 100kB (100 %)")
    assert len(lines) == 2


# ----------------------------------------------------------------------------- archives

def _tar(path, members):
    """members: (name, kind, target) with kind "file", "dir", "sym", "hard" or "chr" (a device)."""
    with tarfile.open(path, "w:gz") as tf:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = target.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE}[kind]
            info.linkname = target or ""
            tf.addfile(info)
    return path


# Extraction goes to <tmp>/deep/out; "ABS" stands for <tmp>, so a member that escaped would land there.
UNSAFE_TARS = {
    "absolute member": [("ABS/escaped.txt", "file", "x")],
    "dot-dot member": [("data/../../escaped.txt", "file", "x")],
    "absolute symlink": [("link", "sym", "ABS/secret.txt")],
    # relative to the link's own folder: data/sub/../.. is the root, one more .. leaves it
    "escaping relative symlink": [("data/sub", "dir", None), ("data/sub/link", "sym", "../../../escaped.txt")],
    # a hard link's target is relative to the archive root, not to the link's folder
    "hard link out of the root": [("data/a.txt", "file", "a"), ("data/sub/hard", "hard", "../escaped.txt")],
    "absolute hard link": [("hard", "hard", "ABS/secret.txt")],
    "device file": [("dev", "chr", None)],
}


@pytest.mark.parametrize("case", list(UNSAFE_TARS))
def test_unsafe_tar_members_are_refused(tmp_path, case):
    (tmp_path / "secret.txt").write_text("not yours")
    members = [(n.replace("ABS", str(tmp_path)), kind, t and t.replace("ABS", str(tmp_path)))
               for n, kind, t in UNSAFE_TARS[case]]
    archive = _tar(tmp_path / "evil.tar.gz", members)
    with pytest.raises(dl.UnsafeArchiveError, match="refused"):
        dl.safe_extract(archive, tmp_path / "deep" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "evil.tar.gz", "secret.txt"]
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]


@pytest.mark.parametrize("name", ["../escaped.txt", "ABS/escaped.txt", "data/../../escaped.txt"])
def test_unsafe_zip_members_are_refused(tmp_path, name):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes({"data/ok.txt": "ok", name.replace("ABS", str(tmp_path)): "x"}))
    with pytest.raises(dl.UnsafeArchiveError, match="outside"):
        dl.safe_extract(archive, tmp_path / "deep" / "out")
    assert not any((tmp_path / "deep" / "out").iterdir())  # refused before anything is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "evil.zip"]
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]


def test_links_inside_the_archive_are_extracted(tmp_path):
    """The checks refuse what escapes, not every link: the real archives may hold harmless ones."""
    archive = _tar(tmp_path / "ok.tar.gz", [
        ("data/a.txt", "file", "payload"), ("data/sub", "dir", None),
        ("data/sub/sym", "sym", "../a.txt"), ("data/sub/hard", "hard", "data/a.txt")])
    dl.safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/data/sub/sym").is_symlink()
    assert (tmp_path / "out/data/sub/sym").read_text() == "payload"
    assert (tmp_path / "out/data/sub/hard").read_text() == "payload"


def test_fetch_removes_a_refused_extraction(server, tmp_path, monkeypatch):
    handler, base = server
    archive = _tar(tmp_path / "evil.tar.gz", [("stl10_binary/a.bin", "file", "a"), ("stl10_binary/dev", "chr", None)])
    handler.files["/stl.tar.gz"] = archive.read_bytes()
    monkeypatch.setitem(dl.SOURCES, "stl10", dl.Source(
        base + "/stl.tar.gz", "md5:" + hashlib.md5(archive.read_bytes()).hexdigest(), "stl10_binary"))
    with pytest.raises(dl.UnsafeArchiveError):
        dl.fetch_dataset("stl10", tmp_path / "stl")
    assert sorted(p.name for p in (tmp_path / "stl").iterdir()) == ["stl.tar.gz"]


def test_a_generated_set_is_never_mixed_with_the_real_download(tmp_path):
    """A folder holding ``labkit data --generate-real-size``'s set is refused before anything is fetched: the
    real files would sit under the generated set's marker (and its Kaggle train/ would shadow PetImages/)."""
    (tmp_path / "dc" / "train").mkdir(parents=True)
    (tmp_path / "dc" / "GENERATED.json").write_text("{}")
    with pytest.raises(dl.GeneratedDataPresentError, match=r"dc holds a generated dataset .*Remove that folder"):
        dl.fetch_dataset("dogs-vs-cats", tmp_path / "dc")
    assert sorted(p.name for p in (tmp_path / "dc").iterdir()) == ["GENERATED.json", "train"]
