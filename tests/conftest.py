from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "samples"


@pytest.fixture
def samples() -> Path:
    """The real sample files beside the checkout; absent on a user's machine, so tests skip."""
    if not SAMPLES.is_dir():
        pytest.skip(f"real samples not found at {SAMPLES} (only present beside the CI checkout)")
    return SAMPLES


@pytest.fixture
def isolated_root(tmp_path, monkeypatch) -> Path:
    """A throwaway project root, so cache tests never touch the real data/cache."""
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def smoke_report(tmp_path_factory):
    """One end-to-end report with the smoke profile (every notebook, HTML, PDF, index), shared by
    the report and notebook tests so each notebook runs once per session."""
    from labkit.report import make_report
    root = tmp_path_factory.mktemp("report-smoke")
    code = make_report("smoke", out_root=root)
    return root, code


@pytest.fixture
def chromium():
    from labkit.report import find_chromium
    path = find_chromium()
    if not path:
        pytest.skip("no Chromium on this machine (make test installs Debian's chromium where it runs as root)")
    return path
