"""GENERATED.json: how a generated dataset is told from real data, wherever ``data_dir`` points into it."""
import json

from labkit.data import generated_marker
from labkit.data.marker import MARKER, is_real_size
from labkit.data.synthetic import write_stl10


def test_a_marker_is_found_at_the_root_or_its_parent(tmp_path):
    (tmp_path / "stl10" / "stl10_binary").mkdir(parents=True)
    assert generated_marker(tmp_path / "stl10") is None  # real data: no marker
    (tmp_path / "stl10" / MARKER).write_text(json.dumps({"real_size": True, "dataset": "stl10"}))
    for root in (tmp_path / "stl10", tmp_path / "stl10" / "stl10_binary"):
        assert generated_marker(root) == {"real_size": True, "dataset": "stl10"} and is_real_size(generated_marker(root))
    assert generated_marker(tmp_path / "nowhere") is None


def test_an_unreadable_marker_is_no_marker(tmp_path):
    (tmp_path / MARKER).write_text("{half")
    assert generated_marker(tmp_path) is None
    (tmp_path / MARKER).write_text("[1, 2]")
    assert generated_marker(tmp_path) is None and not is_real_size(None)


def test_the_demo_sets_marker_is_not_a_real_size_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_ROOT", str(tmp_path))
    root = write_stl10(tmp_path / "small", train_per_class=1, test_per_class=1)
    assert generated_marker(root) is not None and not is_real_size(generated_marker(root))
