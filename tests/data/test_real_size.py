"""Generated datasets at the real sizes (``labkit data --generate-real-size``), here at tiny counts: the real
loaders read them, their marker is written last and recognised, real data are refused and left as they were."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from labkit.data import load_dogs_vs_cats, load_stl10, load_tiny_imagenet, real_size, synthetic
from labkit.data.marker import generated_marker, is_real_size
from labkit.data.real_size import RealDataPresentError, generate_real_size
from labkit.errors import LabkitError, ParameterError
from labkit.paths import real_data_dir


def test_stl10_reads_back_with_its_labels_and_real_layout(isolated_root):
    root, written = generate_real_size("stl10", workers=1, train_per_class=3, test_per_class=2)
    assert root == real_data_dir("stl10") == isolated_root / "data" / "stl10"  # where data_source: real looks
    train, test = load_stl10(root, "train", use_cache=False), load_stl10(root, "test", use_cache=False)
    assert train.images.shape == (30, 3, 96, 96) and test.images.shape == (20, 3, 96, 96)
    assert torch.bincount(train.labels).tolist() == [3] * 10 and torch.bincount(test.labels).tolist() == [2] * 10
    # each image is its label's prototype, upright: the file holds column-major planes as the real one does
    for i in (0, 17):
        y = int(train.labels[i])
        expected = synthetic.render(y, np.random.default_rng([0, i, y]), 96)
        assert np.array_equal(train.images[i].permute(1, 2, 0).numpy(), expected)
    files = sorted(p.name for p in (root / "stl10_binary").iterdir())
    assert files == ["class_names.txt", "test_X.bin", "test_y.bin", "train_X.bin", "train_y.bin"]
    marker = generated_marker(root)
    assert marker["images"] == {"train": 30, "test": 20} and "unlabeled_X.bin" in marker["left_out"]
    assert written == sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) - len(
        (root / "GENERATED.json").read_bytes())


def test_tiny_imagenet_reads_back_in_the_official_layout(isolated_root):
    root, _ = generate_real_size("tiny-imagenet-200", workers=2, num_classes=4, train_per_class=5, val_per_class=3)
    base = root / "tiny-imagenet-200"  # one level down, as the official zip extracts
    wnid = synthetic.tiny_imagenet_wnids(4)[0]
    assert (base / "train" / wnid / f"{wnid}_boxes.txt").read_text().count("\n") == 5
    assert (base / "val" / "images" / "val_11.JPEG").is_file()
    train = load_tiny_imagenet(root, "train", num_classes=4, use_cache=False)
    val = load_tiny_imagenet(root, "val", num_classes=4, use_cache=False)
    assert train.images.shape == (20, 3, 64, 64) and torch.bincount(train.labels).tolist() == [5] * 4
    assert val.images.shape == (12, 3, 64, 64) and torch.bincount(val.labels).tolist() == [3] * 4
    with Image.open(base / "val" / "images" / "val_0.JPEG") as img:
        assert img.format == "JPEG" and img.size == (64, 64)
    assert generated_marker(base)["dataset"] == "tiny-imagenet-200"  # a data_dir naming the folder inside


def test_dogs_vs_cats_are_kaggle_jpegs_of_photo_sizes(isolated_root):
    root, _ = generate_real_size("dogs-vs-cats", workers=1, per_class=6)
    assert sorted(p.name for p in (root / "train").iterdir())[:2] == ["cat.0.jpg", "cat.1.jpg"]
    data = load_dogs_vs_cats(root, image_size=32, use_cache=False)
    assert data.images.shape == (12, 3, 32, 32) and data.labels.tolist() == [0] * 6 + [1] * 6 and not data.skipped
    sizes = []
    for path in (root / "train").iterdir():
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            sizes.append(img.size)
    assert all(180 <= min(s) and max(s) <= 500 for s in sizes) and len(set(sizes)) > 1


def test_photo_sizes_look_like_the_real_ones():
    sizes = real_size.photo_sizes(5000, seed=0)
    assert sizes.min() >= 180 and sizes.max() == 500 and (sizes.max(axis=1) == 500).mean() > 0.7
    assert np.median(sizes[:, 0]) == 500 and 330 <= np.median(sizes[:, 1]) <= 400  # about 500 x 375
    assert np.array_equal(sizes, real_size.photo_sizes(5000, seed=0))


def test_marker_is_written_last_and_says_what_the_set_is(isolated_root):
    root, _ = generate_real_size("dogs-vs-cats", workers=1, per_class=2)
    marker = json.loads((root / "GENERATED.json").read_text())
    assert marker["generated_by"] == "labkit data --generate-real-size" and marker["real_size"] is True
    assert marker["counts"] == {"per_class": 2} and marker["generator"] == real_size.generator_fingerprint()
    assert "accuracies are not results" in marker["note"] and marker["date"][:2] == "20"
    assert set(marker["image_size"]) == {"width", "height"}
    newest = max(p.stat().st_mtime_ns for p in root.rglob("*.jpg"))
    assert (root / "GENERATED.json").stat().st_mtime_ns >= newest
    assert is_real_size(generated_marker(root)) and is_real_size(generated_marker(root / "train"))


def test_an_interrupted_run_leaves_nothing_that_looks_complete(isolated_root, monkeypatch):
    def interrupted(tmp, pool, seed, per_class):
        (tmp / "train").mkdir()
        (tmp / "train" / "cat.0.jpg").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setitem(real_size.WRITERS, "dogs-vs-cats", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_real_size("dogs-vs-cats", workers=1, per_class=2)
    assert not list((isolated_root / "data").glob("*dogs*"))  # neither the set nor its temporary folder


def test_real_data_are_refused_and_left_untouched(isolated_root):
    real = isolated_root / "data" / "stl10" / "stl10_binary"
    real.mkdir(parents=True)
    (real / "train_X.bin").write_bytes(b"real pixels")
    with pytest.raises(RealDataPresentError, match=r"data/stl10 already holds files and no GENERATED\.json.*"
                                                   r"Move that folder away, or pass another --data-root") as err:
        generate_real_size("stl10", workers=1, train_per_class=1, test_per_class=1)
    assert isinstance(err.value, LabkitError)
    assert [p.name for p in real.parent.rglob("*")] == ["stl10_binary", "train_X.bin"]
    assert (real / "train_X.bin").read_bytes() == b"real pixels"
    assert not list((isolated_root / "data").glob(".stl10*"))


def test_a_complete_set_is_kept_and_an_older_one_generated_again(isolated_root):
    root, written = generate_real_size("dogs-vs-cats", workers=1, per_class=2)
    stamp = (root / "GENERATED.json").stat().st_mtime_ns
    assert written > 0 and generate_real_size("dogs-vs-cats", workers=1, per_class=2) == (root, None)
    assert (root / "GENERATED.json").stat().st_mtime_ns == stamp
    marker = json.loads((root / "GENERATED.json").read_text())
    (root / "GENERATED.json").write_text(json.dumps({**marker, "generator": "older"}))
    (root / "train" / "stray.txt").write_text("from the older set")
    _, again = generate_real_size("dogs-vs-cats", workers=1, per_class=2)
    assert again > 0 and generated_marker(root)["generator"] == real_size.generator_fingerprint()
    assert not (root / "train" / "stray.txt").exists()  # replaced as a whole, never mixed
    _, more = generate_real_size("dogs-vs-cats", workers=1, per_class=3)  # other counts: generated again
    assert more > written and len(list((root / "train").iterdir())) == 6


def test_unknown_names_are_refused():
    with pytest.raises(ParameterError, match="dataset='imagenet' is not allowed; allowed: stl10, "):
        generate_real_size("imagenet")
    with pytest.raises(ParameterError, match="stl10: unknown count.s. per_class; allowed: train_per_class"):
        generate_real_size("stl10", per_class=3)
