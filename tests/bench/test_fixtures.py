"""What the benchmarks share: interleaved medians, exactly; photo-size JPEGs in the Kaggle layout."""
from types import SimpleNamespace

from PIL import Image

from labkit.bench import fixtures


def test_interleaved_runs_round_after_round_and_takes_medians(monkeypatch):
    clock, calls = [0.0], []

    def timed(name, seconds):
        def fn():
            calls.append(name)
            clock[0] += seconds.pop(0)
        return fn

    monkeypatch.setattr(fixtures, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    out = fixtures.interleaved({"a": timed("a", [3.0, 1.0, 2.0]), "b": timed("b", [10.0, 30.0, 20.0])}, 3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert out == {"a": 2.0, "b": 20.0}


def test_photo_jpegs_are_photo_sized_and_named_as_kaggle_does(tmp_path):
    folder = fixtures.photo_jpegs(tmp_path / "photos", per_class=2)
    files = sorted(p.name for p in (folder / "train").iterdir())
    assert files == ["cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "dog.1.jpg"]
    for name in files:
        with Image.open(folder / "train" / name) as img:
            assert img.format == "JPEG" and 300 <= img.width < 500 and 240 <= img.height < 400
