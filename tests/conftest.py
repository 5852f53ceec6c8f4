import os
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
