"""Project paths from the project root (never the cwd), atomic writes, the code fingerprint."""
import importlib.util
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from labkit import paths

from conftest import ROOT


def test_project_root_honours_labkit_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path / "sub" / ".." / "root"))
    assert paths.project_root() == tmp_path.resolve() / "root"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LABKIT_ROOT", "~/elsewhere")
    assert paths.project_root() == tmp_path.resolve() / "elsewhere"


def test_project_root_defaults_to_the_checkout_whatever_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.project_root() == ROOT
    monkeypatch.setenv("LABKIT_ROOT", "")  # empty counts as unset
    assert paths.project_root() == ROOT


def test_folders_under_the_root(isolated_root):
    root = isolated_root.resolve()
    assert paths.data_root() == root / "data"
    assert paths.real_data_dir("stl10") == root / "data" / "stl10"
    assert paths.synthetic_data_dir("stl10") == root / "data" / "synthetic" / "stl10"
    assert paths.reports_dir("smoke") == root / "reports" / "smoke"
    assert paths.default_output_dir("demo", "q3") == root / "reports" / "demo" / "q3"
    assert not (root / "reports").exists() and not (root / "data" / "stl10").exists()  # nothing created


def test_cache_dir_creates_under_data_cache(isolated_root):
    path = paths.cache_dir("features", "q1")
    assert path == isolated_root.resolve() / "data" / "cache" / "features" / "q1" and path.is_dir()
    assert paths.cache_dir("features", "q1") == path  # a second call is fine
    assert paths.cache_dir() == isolated_root.resolve() / "data" / "cache"


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "new" / "metrics.json"
    paths.atomic_write_text(target, "first")  # creates the folder
    assert target.read_text() == "first"

    seen = []
    real_replace = os.replace

    def replace(src, dst):  # at the rename, the reader still sees the old file; the new one is complete
        seen.append((Path(src).parent == target.parent, Path(src).read_bytes(), Path(dst).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    paths.atomic_write_bytes(target, "zweite Fassung ü".encode())
    assert seen == [(True, "zweite Fassung ü".encode(), "first")]
    assert target.read_text(encoding="utf-8") == "zweite Fassung ü"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        paths.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_ensure_free_space(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    asked = []

    def disk_usage(folder):
        asked.append(Path(folder))
        return usage(10**12, 0, 2 * 10**9)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    paths.ensure_free_space(tmp_path / "not" / "yet", 10**9, "a download")  # fits
    assert asked == [tmp_path.resolve()]  # the nearest existing folder
    with pytest.raises(paths.DiskSpaceError, match=r"^a checkpoint needs 3\.00 GB but .* has 2\.00 GB free"):
        paths.ensure_free_space(tmp_path, 3 * 10**9, "a checkpoint")


# ----------------------------------------------------------------------------- code fingerprint

def _package_copy(tmp_path: Path):
    """labkit's files copied into a folder of their own, and that copy's ``paths`` module loaded from it:
    its ``code_fingerprint`` hashes the copy, which the test may change."""
    package = tmp_path / "labkit"
    shutil.copytree(Path(paths.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    spec = importlib.util.spec_from_file_location("labkit_copy_paths", package / "paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return package, module


def test_code_fingerprint_hashes_the_package_contents_not_its_location(tmp_path):
    _, copy = _package_copy(tmp_path)
    assert copy.code_fingerprint() == paths.code_fingerprint()
    assert len(paths.code_fingerprint()) == 12 and int(paths.code_fingerprint(), 16) >= 0


def test_code_fingerprint_covers_the_path_from_files_to_predictions_only(tmp_path):
    """Both directions: code on the path from files to predictions changes it; the report, the CLI, templates,
    benchmarks, prose (findings), comments and docstrings do not."""
    package, _ = _package_copy(tmp_path)

    def fingerprint() -> str:
        paths.fingerprint_of.cache_clear()  # a new process
        return paths.fingerprint_of(package)

    def append(rel: str, text: str) -> None:
        path = package / rel
        path.write_text(path.read_text() + text)

    start = fingerprint()
    assert start == paths.code_fingerprint() and len(start) == 12
    for rel, text in [("report/pipeline.py", "\nEXTRA = 1\n"), ("cli.py", "\nEXTRA = 1\n"),
                      ("bench/cpu.py", "\nEXTRA = 1\n"), ("questions/reference.py", "\nEXTRA = 1\n"),
                      ("training/loop.py", "\n# a comment\n"), ("questions/q3_optimizers.py",
                                                                 "\n\ndef findings(summary, parts, P):\n    return 'x'\n")]:
        append(rel, text)
        assert fingerprint() == start, rel
    template = next(p for p in (package / "report" / "templates").rglob("*") if p.is_file())
    template.write_bytes(template.read_bytes() + b" ")
    loop = package / "training" / "loop.py"
    loop.write_text(loop.read_text().replace('"""', '"""Edited. ', 1))  # the module docstring
    assert fingerprint() == start
    for rel in ("training/loop.py", "data/loaders.py", "questions/q3_optimizers.py", "models.py", "training/convs.py"):
        append(rel, "\nEXTRA_CODE = 2\n")
        changed = fingerprint()
        assert changed != start, rel
        start = changed
    (package / "training" / "losses.py").unlink()
    assert fingerprint() != start  # a file gone counts too


def test_code_fingerprint_is_computed_once_per_process(tmp_path, monkeypatch):
    package, _ = _package_copy(tmp_path)
    paths.fingerprint_of.cache_clear()
    first = paths.fingerprint_of(package)
    (package / "training" / "loop.py").write_text("CHANGED = 1\n")
    assert paths.fingerprint_of(package) == first  # cached: a running process keeps its keys
    paths.fingerprint_of.cache_clear()
    assert paths.fingerprint_of(package) != first
    paths.fingerprint_of.cache_clear()
