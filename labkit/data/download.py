"""Fetching the real datasets: resumable downloads, checksum verification, safe extraction.

``make data`` calls :func:`fetch_dataset` for each dataset. Everything is
idempotent: a verified archive is not downloaded again, an extracted dataset is
not extracted again, and an interrupted download resumes from its ``.part`` file.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from labkit.data.marker import MARKER
from labkit.errors import LabkitError, NetworkError
from labkit.paths import ensure_free_space, real_data_dir
from labkit.progress import progress


class ChecksumError(LabkitError, RuntimeError):
    """A downloaded file's checksum does not match the published one."""


class UnsafeArchiveError(LabkitError, RuntimeError):
    """An archive member would land outside the extraction folder."""


class GeneratedDataPresentError(LabkitError, FileExistsError):
    """The real dataset's folder holds a generated set (``labkit data --generate-real-size``)."""


@dataclass(frozen=True)
class Source:
    url: str
    checksum: str | None  # "md5:<hex>" or "sha256:<hex>"; None: no published checksum (see note)
    extracted: str  # the folder the archive creates, relative to data/<dataset>/
    note: str = ""


SOURCES = {
    "stl10": Source("https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                    "md5:91f7769df0f17e558f3565bffb0c7dfb", "stl10_binary"),
    "tiny-imagenet-200": Source("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                                "md5:90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200"),
    "dogs-vs-cats": Source(
        "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
        "kagglecatsanddogs_5340.zip", None, "PetImages",
        note="Microsoft publishes no checksum for this archive: its SHA-256 is recorded on the first "
             "complete download (data/dogs-vs-cats/kagglecatsanddogs_5340.zip.sha256) and checked from then on."),
}


def file_digest(path: Path, algorithm: str) -> str:
    """The file's hex digest, with a progress bar: hashing 2.6 GB takes several seconds."""
    h = hashlib.new(algorithm)
    name = path.name.removesuffix(".part")  # a download is verified before it gets its name
    with open(path, "rb") as f, progress(os.fstat(f.fileno()).st_size, f"{algorithm} {name}", unit="B") as bar:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def verify(path: Path, checksum: str) -> None:
    algorithm, _, expected = checksum.partition(":")
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise ChecksumError(f"{path.name}: {algorithm} is {actual}, expected {expected}. The download is "
                            f"damaged or the file changed upstream; it was deleted, run the command again.")


def _http_error(url: str, dest: Path, err: urllib.error.HTTPError) -> NetworkError:
    return NetworkError(f"cannot download {url}: the server answered HTTP {err.code} {err.reason}. "
                        f"Fetch the file by hand, put it at {dest} and run the command again.")


def _range_start(content_range: str | None) -> int | None:
    """``bytes 100-199/200`` -> 100; anything else -> None."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _total_size(content_range: str | None) -> int | None:
    """``bytes */200`` or ``bytes 100-199/200`` -> 200; an unknown total -> None."""
    try:
        return int(content_range.rsplit("/", 1)[1])
    except (AttributeError, IndexError, ValueError):
        return None


def _copy(source, target, chunk_size: int, bar) -> None:
    """``shutil.copyfileobj`` that advances ``bar`` by each chunk's size. ``read1`` returns what has
    arrived (up to ``chunk_size``) instead of waiting for a whole chunk, so a slow link still moves the bar."""
    read = getattr(source, "read1", source.read)
    for chunk in iter(lambda: read(chunk_size), b""):
        target.write(chunk)
        bar.update(len(chunk))


def download(url: str, dest: Path, checksum: str | None = None, timeout: float = 60.0,
             chunk_size: int = 1 << 20) -> Path:
    """Download ``url`` to ``dest``, resuming a previous ``dest.part`` with an HTTP Range request.

    An existing ``dest`` that fails ``checksum`` is downloaded again. The finished file is verified
    before it is renamed into place; on a mismatch it is deleted and :class:`ChecksumError` raised.
    A server that ignores Range (200) restarts the file; one that answers a range other than the one
    asked for, or 416 for a part file that is not the whole file, starts it over.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if not checksum:
            return dest
        try:
            verify(dest, checksum)
            return dest
        except ChecksumError:
            dest.unlink()  # damaged or outdated: fetch it again
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not have:
            raise _http_error(url, dest, err) from err
        total = _total_size(err.headers.get("Content-Range"))
        if total is not None and total != have:  # the part file is longer than the file: not a prefix of it
            part.unlink()
            return download(url, dest, checksum, timeout, chunk_size)
        response = None  # the part file is already complete
    except (urllib.error.URLError, OSError) as err:
        raise NetworkError(f"cannot download {url}: {err}. Check the network, or put the file at {dest} "
                              f"by hand and run the command again.") from err
    if response is not None:
        with response:
            resumed = bool(have) and response.status == 206  # 200: the server ignored Range, start over
            if resumed and _range_start(response.headers.get("Content-Range")) != have:
                part.unlink()  # not the bytes that follow ours: appending them would corrupt the file
                return download(url, dest, checksum, timeout, chunk_size)
            expected = response.headers.get("Content-Length")
            if expected is not None:
                ensure_free_space(dest.parent, int(expected), f"downloading {url}")
            start = have if resumed else 0  # a resumed download's bar starts where the part file ends
            total = start + int(expected) if expected is not None else None
            with open(part, "ab" if resumed else "wb") as f, \
                    progress(total, dest.name, unit="B", initial=start) as bar:
                try:
                    _copy(response, f, chunk_size, bar)
                except (OSError, http.client.HTTPException) as err:
                    raise ConnectionError(f"download of {url} interrupted ({err}); run the command again "
                                          f"to resume from {part.stat().st_size} bytes") from err
            got = part.stat().st_size - (have if resumed else 0)
            if expected is not None and got < int(expected):
                raise ConnectionError(f"download of {url} interrupted after {part.stat().st_size} bytes; "
                                      f"run the command again to resume")
    if checksum:
        try:
            verify(part, checksum)
        except ChecksumError:
            part.unlink()
            raise
    os.replace(part, dest)
    return dest


class _PositionReader:
    """A binary file for tarfile to read that moves ``bar`` (when set) to the file's position as it is read."""

    def __init__(self, raw, bar=None):
        self.raw, self.bar = raw, bar

    def read(self, *args):
        data = self.raw.read(*args)
        if self.bar is not None:
            self.bar.update(self.raw.tell() - self.bar.n)
        return data

    def __getattr__(self, name):  # seek, tell, name, mode, ...: the file's own
        return getattr(self.raw, name)


def _counted(members, bar, size_attribute: str):
    """Yield ``members`` to ``extractall``, advancing ``bar`` by each one's size once it is written."""
    for m in members:
        yield m
        bar.update(getattr(m, size_attribute))


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a .zip or .tar(.gz) into ``dest``, refusing members that would escape it (absolute
    paths, ``..``, symbolic or hard links pointing outside, device files) with UnsafeArchiveError."""
    archive, dest = Path(archive), Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)

    def inside(name: str) -> bool:
        target = (dest / name).resolve()
        return target == dest or dest in target.parents

    def refuse(name: str, why: str = "") -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{archive.name}: member {name!r} {why or f'would be written outside {dest}'}; "
                                  f"extraction refused (path-traversal protection)")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            bad = [n for n in zf.namelist() if not inside(n)]
            if bad:
                raise refuse(bad[0])
            size = sum(i.file_size for i in zf.infolist())
            ensure_free_space(dest, size, f"extracting {archive.name}")
            with progress(size, f"extracting {archive.name}", unit="B") as bar:
                zf.extractall(dest, members=_counted(zf.infolist(), bar, "file_size"))
        return
    with open(archive, "rb") as raw, tarfile.open(fileobj=(reader := _PositionReader(raw))) as tf:
        # Listing a compressed tar reads (and decompresses) all of it: a bar over the archive's bytes.
        with progress(os.fstat(raw.fileno()).st_size, f"checking {archive.name}", unit="B") as reader.bar:
            members = tf.getmembers()
        reader.bar = None
        for m in members:
            # A symbolic link's target is relative to its own folder, a hard link's to the archive root.
            target = m.linkname if m.islnk() else os.path.join(os.path.dirname(m.name), m.linkname)
            if not inside(m.name) or ((m.issym() or m.islnk()) and not inside(target)):
                raise refuse(m.name)
        size = sum(m.size for m in members)
        ensure_free_space(dest, size, f"extracting {archive.name}")
        try:
            # The "data" filter also refuses what the check above lets through (device files,
            # absolute links into dest, chains of links): the same error for the same problem.
            with progress(size, f"extracting {archive.name}", unit="B") as bar:
                tf.extractall(dest, members=_counted(members, bar, "size"), filter="data")
        except tarfile.FilterError as err:
            raise refuse(err.tarinfo.name, f"is unsafe ({err})") from err


def fetch_dataset(name: str, root: Path | None = None) -> Path:
    """Download, verify and extract one real dataset into ``data/<name>/`` (or ``root``); idempotent."""
    if name not in SOURCES:
        raise ValueError(f"dataset {name!r} is not known; allowed: {', '.join(SOURCES)}")
    src = SOURCES[name]
    root = Path(root) if root else real_data_dir(name)
    if (root / MARKER).is_file():  # real files must never mix with generated ones under the generated marker
        raise GeneratedDataPresentError(
            f"{root} holds a generated dataset ({MARKER}, from `labkit data --generate-real-size`), not the "
            f"real one. Remove that folder (or pass another --data-root) and run the command again.")
    marker = root / f".{src.extracted}.extracted"
    if marker.exists():
        return root
    archive = root / src.url.rsplit("/", 1)[-1]
    checksum = src.checksum
    pinned = archive.with_name(archive.name + ".sha256")
    if checksum is None and pinned.exists():
        checksum = "sha256:" + pinned.read_text().strip()
    try:
        download(src.url, archive, checksum)
    except ChecksumError as err:
        if src.checksum is None:  # the pin is ours, not the publisher's: say how to accept a new archive
            raise ChecksumError(f"{err} Its SHA-256 was recorded in {pinned} at the first download; if the "
                                f"archive changed upstream, delete that file to accept the new one.") from err
        raise
    if checksum is None:
        pinned.write_text(file_digest(archive, "sha256") + "\n")
    tmp = root / f".extracting-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        safe_extract(archive, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave half an extraction behind
        raise
    for item in tmp.iterdir():
        target = root / item.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(item, target)
    tmp.rmdir()
    marker.write_text(src.url + "\n")
    return root
