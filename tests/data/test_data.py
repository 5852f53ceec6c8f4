import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from labkit.data import (DOGS_VS_CATS_CLASSES, STL10_CLASSES, DatasetNotFoundError, load_dogs_vs_cats, load_stl10,
                         load_tiny_imagenet)
from labkit.data import core, synthetic
from labkit.data.synthetic import (tiny_imagenet_wnids, write_dogs_vs_cats, write_stl10, write_stl10_binary,
                                   write_tiny_imagenet)
from labkit.paths import code_fingerprint


# ----------------------------------------------------------------------------- STL-10

def test_stl10_synthetic_roundtrip(isolated_root):
    root = write_stl10(isolated_root / "stl", train_per_class=3, test_per_class=2)
    train, test = load_stl10(root, "train"), load_stl10(root, "test")
    assert train.images.shape == (30, 3, 96, 96) and train.images.dtype == torch.uint8
    assert test.images.shape == (20, 3, 96, 96)
    assert sorted(torch.bincount(train.labels).tolist()) == [3] * 10
    assert train.classes[0] == "airplane" and train.classes[-1] == "truck"


def test_stl10_orientation_against_real_images(samples, isolated_root):
    """Build a genuine STL-10 binary from the real sample PNGs (RGBA -> RGB): the loader must give
    back exactly the pixels of each PNG, upright (column-major planes transposed on read)."""
    pngs = sorted((samples / "stl10-png").glob("*/*.png"))
    assert len(pngs) == 10
    classes = [p.parent.name for p in pngs]
    labels = np.array([STL10_CLASSES.index(c) for c in classes])
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
    folder = isolated_root / "real" / "stl10_binary"
    folder.mkdir(parents=True)
    write_stl10_binary(folder / "test_X.bin", folder / "test_y.bin", arrays, labels)
    data = load_stl10(isolated_root / "real", "test")
    assert data.labels.tolist() == labels.tolist()
    for i in range(10):
        assert torch.equal(data.images[i].permute(1, 2, 0), torch.from_numpy(arrays[i]))
    # Images are not symmetric under transposition, so a loader that forgot it would fail above.
    assert not np.array_equal(arrays[0], arrays[0].transpose(1, 0, 2))


def test_stl10_ids_are_indices_in_the_binary_file(isolated_root):
    root = write_stl10(isolated_root / "stl", train_per_class=2, test_per_class=1)
    test = load_stl10(root, "test")
    assert test.ids is None and test.image_ids() == [str(i) for i in range(10)]
    assert test.subset([4, 2]).ids == ["4", "2"]


def test_stl10_bytes_written_by_hand(isolated_root):
    """The official layout, written here byte by byte from its description rather than by labkit's
    writer: per image, 3 planes (R, G, B) of 96 x 96 bytes, each plane column by column (column-major,
    as MATLAB writes it); labels one byte each, 1..10."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 96, 96, 3), dtype=np.uint8)  # H x W x C, upright
    disk_labels = [1, 10, 7]  # the first and last class included
    folder = isolated_root / "stl" / "stl10_binary"
    folder.mkdir(parents=True)
    x_bytes = bytearray()
    for img in images.tolist():
        x_bytes += bytes(img[row][col][channel] for channel in range(3) for col in range(96) for row in range(96))
    (folder / "test_X.bin").write_bytes(bytes(x_bytes))
    (folder / "test_y.bin").write_bytes(bytes(disk_labels))
    for attempt in ("decoded", "from the cache"):
        data = load_stl10(isolated_root / "stl", "test")
        assert data.images.shape == (3, 3, 96, 96) and data.images.dtype == torch.uint8, attempt
        assert torch.equal(data.images, torch.from_numpy(images).permute(0, 3, 1, 2)), attempt
        assert data.labels.tolist() == [0, 9, 6] and data.labels.dtype == torch.int64, attempt
    assert [data.classes[y] for y in data.labels] == ["airplane", "truck", "horse"]
    assert data.classes == STL10_CLASSES


def test_stl10_missing_and_bad_split(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"stl10_binary.*make data"):
        load_stl10(tmp_path, "train")
    with pytest.raises(ValueError, match="allowed: train, test"):
        load_stl10(tmp_path, "unlabeled")


# ----------------------------------------------------------------------------- Tiny ImageNet

def test_tiny_imagenet_synthetic_class_order_and_val_labels(isolated_root):
    root = write_tiny_imagenet(isolated_root / "tiny", num_classes=6, train_per_class=4, val_per_class=3,
                               image_size=32)
    wnids = tiny_imagenet_wnids(6)
    file_order = (root / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert file_order != sorted(file_order)  # like the real file, not sorted
    sorted_train = load_tiny_imagenet(root, "train", num_classes=3, class_order="sorted")
    wnids_train = load_tiny_imagenet(root, "train", num_classes=3, class_order="wnids")
    assert sorted_train.images.shape == (12, 3, 32, 32)
    words = dict(l.split("\t") for l in (root / "tiny-imagenet-200" / "words.txt").read_text().splitlines())
    assert sorted_train.classes == [words[w].split(",")[0] for w in sorted(wnids)[:3]]
    assert wnids_train.classes == [words[w].split(",")[0] for w in file_order[:3]]
    assert sorted_train.classes != wnids_train.classes
    # labels follow the chosen order: label 0 is the first class of that order
    assert torch.bincount(wnids_train.labels).tolist() == [4, 4, 4]
    val = load_tiny_imagenet(root / "tiny-imagenet-200", "val", num_classes=6)
    ann = [l.split("\t") for l in (root / "tiny-imagenet-200/val/val_annotations.txt").read_text().splitlines()]
    expected = sorted((f, sorted(wnids).index(w)) for f, w, *_ in ann)
    assert val.labels.tolist() == [y for _, y in expected]


def test_tiny_imagenet_key_covers_val_annotations(isolated_root):
    """Relabelling val images in val_annotations.txt must not serve the cached labels, even when the
    file keeps its size and modification time."""
    root = write_tiny_imagenet(isolated_root / "tiny", num_classes=3, train_per_class=1, val_per_class=2,
                               image_size=16) / "tiny-imagenet-200"
    ann = root / "val" / "val_annotations.txt"
    before = load_tiny_imagenet(root, "val", num_classes=3)
    lines = ann.read_text().splitlines(keepends=True)
    first = lines[0].split("\t")
    other = next(i for i, l in enumerate(lines) if l.split("\t")[1] != first[1])
    second = lines[other].split("\t")
    lines[0] = "\t".join([first[0], second[1], *first[2:]])
    lines[other] = "\t".join([second[0], first[1], *second[2:]])
    stat = ann.stat()
    ann.write_text("".join(lines))
    os.utime(ann, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert ann.stat().st_size == stat.st_size and ann.stat().st_mtime_ns == stat.st_mtime_ns
    after = load_tiny_imagenet(root, "val", num_classes=3)
    assert after.key != before.key
    changed = (after.labels != before.labels).nonzero().flatten().tolist()
    assert len(changed) == 2 and torch.equal(after.images, before.images)
    assert after.labels[changed[0]] == before.labels[changed[1]]


def test_tiny_imagenet_errors(isolated_root):
    root = write_tiny_imagenet(isolated_root / "tiny", num_classes=3, train_per_class=2, val_per_class=1,
                               image_size=32)
    with pytest.raises(ValueError, match="unlabelled; use 'val'"):
        load_tiny_imagenet(root, "test")
    with pytest.raises(ValueError, match=r"num_classes=4 .* has 3 classes"):
        load_tiny_imagenet(root, "train", num_classes=4)
    with pytest.raises(ValueError, match="allowed: sorted, wnids"):
        load_tiny_imagenet(root, "train", num_classes=2, class_order="random")
    with pytest.raises(DatasetNotFoundError, match="make data"):
        load_tiny_imagenet(isolated_root / "nowhere", "train")


def test_tiny_imagenet_real_sample(samples, isolated_root):
    root = samples / "tiny-imagenet-200"
    wnids = root.joinpath("wnids.txt").read_text().split()
    train = load_tiny_imagenet(root, "train", num_classes=5, class_order="wnids")
    assert train.images.shape == (60, 3, 64, 64) and train.skipped == []
    words = dict(l.split("\t") for l in root.joinpath("words.txt").read_text().splitlines())
    assert train.classes == [words[w].split(",")[0] for w in wnids[:5]]
    val = load_tiny_imagenet(samples, "val", num_classes=10, class_order="sorted")  # parent folder accepted
    assert len(val) == 200 and torch.bincount(val.labels).tolist() == [20] * 10
    ann = {l.split("\t")[0]: l.split("\t")[1] for l in root.joinpath("val/val_annotations.txt").read_text().splitlines()}
    first = sorted(ann)[0]
    assert val.labels[0].item() == sorted(wnids).index(ann[first])
    # greyscale JPEGs in the sample come back as 3-channel RGB
    grey = [f for f in root.glob("train/*/images/*.JPEG") if Image.open(f).mode == "L"]
    if grey:
        assert train.images.shape[1] == 3


# ----------------------------------------------------------------------------- Dogs vs Cats

@pytest.mark.parametrize("layout", ["kaggle", "petimages"])
def test_dogs_vs_cats_layouts_and_broken_files(isolated_root, layout):
    root = write_dogs_vs_cats(isolated_root / layout, per_class=5, image_size=40, layout=layout, broken=1)
    with pytest.warns(UserWarning, match="skipped 3 unreadable"):
        data = load_dogs_vs_cats(root, image_size=24)
    assert data.images.shape == (10, 3, 24, 24)
    assert torch.bincount(data.labels).tolist() == [5, 5]
    assert len(data.skipped) == 3
    # each image keeps its file's path under the dataset folder; a subset keeps its images' ids
    assert all(i.startswith("train/") or i.startswith("PetImages/") for i in data.ids)
    assert len(set(data.ids)) == 10 and data.subset([3, 1]).ids == [data.ids[3], data.ids[1]]
    with pytest.warns(UserWarning, match="skipped 3 unreadable"):
        assert load_dogs_vs_cats(root, image_size=24).ids == data.ids  # and so does the cached copy
    kinds = sorted(__import__("os").path.getsize(p) > 0 for p in data.skipped)
    assert kinds == [False, True, True]  # the empty file, the truncated JPEG and the text file


def test_dogs_vs_cats_real_sample(samples, isolated_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the genuine photos must all decode
        data = load_dogs_vs_cats(samples / "dogs-vs-cats", image_size=64)
    assert data.images.shape == (60, 3, 64, 64)
    assert torch.bincount(data.labels).tolist() == [30, 30]
    assert data.skipped == []


@pytest.mark.parametrize("layout", ["kaggle", "petimages"])
def test_cat_is_0_and_dog_is_1(isolated_root, layout):
    """Written by hand: black cats, white dogs, so every label can be checked against its pixels."""
    root = isolated_root / layout
    names = {"kaggle": {0: ["train/cat.0.jpg", "train/cat.10.jpg", "train/Cat.2.JPG"],
                        1: ["train/dog.1.jpg", "train/DOG.3.jpeg"]},
             "petimages": {0: ["PetImages/Cat/0.jpg", "PetImages/Cat/11.jpg"],
                           1: ["PetImages/Dog/1.jpg", "PetImages/Dog/2.jpg", "PetImages/Dog/10.jpg"]}}[layout]
    for label, files in names.items():
        for name in files:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), 255 * label, np.uint8)).save(root / name, "JPEG")
    data = load_dogs_vs_cats(root, image_size=16)
    assert DOGS_VS_CATS_CLASSES == data.classes == ["cat", "dog"]
    assert torch.bincount(data.labels).tolist() == [len(names[0]), len(names[1])]
    brightness = data.images.float().mean(dim=(1, 2, 3))
    assert ((brightness > 128).long() == data.labels).all()


def test_a_long_decode_shows_progress_a_short_one_does_not(isolated_root, monkeypatch, capsys):
    """From core.PROGRESS_MIN_FILES files on (a real dataset's first load) decoding shows progress: here
    stderr is no terminal, as in a log, so a closing text line; the demo's small sets stay quiet."""
    monkeypatch.delenv("LABKIT_PLAIN_PROGRESS", raising=False)
    root = write_dogs_vs_cats(isolated_root / "dc", per_class=6, image_size=24)
    load_dogs_vs_cats(root, image_size=16, use_cache=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(core, "PROGRESS_MIN_FILES", 12)
    load_dogs_vs_cats(root, image_size=16, use_cache=False)
    assert capsys.readouterr().err.startswith("[progress] decoding Dogs vs Cats: 12 of 12 files (100 %), 00:0")


def test_dogs_vs_cats_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="PetImages"):
        load_dogs_vs_cats(tmp_path, 32)


# ----------------------------------------------------------------------------- cache

def test_cache_hit_and_invalidation(isolated_root, monkeypatch):
    root = write_dogs_vs_cats(isolated_root / "dc", per_class=4, image_size=32)
    calls = []
    real = core.decode_many
    monkeypatch.setattr("labkit.data.loaders.decode_many", lambda *a: calls.append(1) or real(*a))
    first = load_dogs_vs_cats(root, 16)
    second = load_dogs_vs_cats(root, 16)
    assert len(calls) == 1 and torch.equal(first.images, second.images)
    load_dogs_vs_cats(root, 20)  # another size is another cache entry
    assert len(calls) == 2
    # changing a file invalidates the cache
    f = root / "train" / "cat.0.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(f)
    changed = load_dogs_vs_cats(root, 16)
    assert len(calls) == 3 and not torch.equal(changed.images, first.images)
    # removing a file too
    (root / "train" / "dog.3.jpg").unlink()
    assert len(load_dogs_vs_cats(root, 16)) == 7 and len(calls) == 4
    assert not any((root / "train").glob("*.pt")), "caches never go inside a dataset folder"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong content"])
def test_corrupted_cache_is_rebuilt(isolated_root, monkeypatch, damage):
    root = write_dogs_vs_cats(isolated_root / "dc", per_class=3, image_size=16)
    calls = []
    real = core.decode_many
    monkeypatch.setattr("labkit.data.loaders.decode_many", lambda *a: calls.append(1) or real(*a))
    first = load_dogs_vs_cats(root, 16)
    (cache,) = (isolated_root / "data" / "cache" / "datasets").glob("*.pt")
    good = cache.read_bytes()
    if damage == "garbage":
        cache.write_bytes(b"not a torch file")
    elif damage == "truncated":
        cache.write_bytes(good[: len(good) // 2])
    else:  # a readable file that is not a decoded dataset: one label too few
        torch.save({"images": first.images, "labels": first.labels[:-1], "classes": first.classes,
                    "skipped": []}, cache)
    with pytest.warns(UserWarning, match="ignoring unreadable cache .* rebuilt"):
        rebuilt = load_dogs_vs_cats(root, 16)
    assert len(calls) == 2 and rebuilt.key == first.key
    assert torch.equal(rebuilt.images, first.images) and torch.equal(rebuilt.labels, first.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_dogs_vs_cats(root, 16)  # the rebuilt file is whole again: served from the cache
    assert len(calls) == 2 and torch.equal(again.labels, first.labels)


def test_dataset_key_holds_the_code_fingerprint(isolated_root, monkeypatch):
    """Arrays decoded by other code are never served: another fingerprint is another key, decoded
    again, and the entry of the old code is dropped so the cache does not grow with every change."""
    root = write_dogs_vs_cats(isolated_root / "dc", per_class=2, image_size=16)
    calls = []
    real = core.decode_many
    monkeypatch.setattr("labkit.data.loaders.decode_many", lambda *a: calls.append(1) or real(*a))
    cache = isolated_root / "data" / "cache" / "datasets"
    data = load_dogs_vs_cats(root, 16)
    assert data.key.startswith("dogs_vs_cats-") and data.key.endswith("-" + code_fingerprint())
    assert [p.stem for p in cache.glob("*.pt")] == [data.key]
    assert load_dogs_vs_cats(root, 16).key == data.key and len(calls) == 1
    assert load_dogs_vs_cats(root, 16, use_cache=False).key == data.key and len(calls) == 2
    monkeypatch.setattr(core, "code_fingerprint", lambda: "0123456789ab")  # as after editing labkit
    changed = load_dogs_vs_cats(root, 16)
    assert changed.key != data.key and changed.key.endswith("-0123456789ab") and len(calls) == 3
    assert [p.stem for p in cache.glob("*.pt")] == [changed.key]
    # another dataset's entry stays
    assert load_dogs_vs_cats(root, 8).key != changed.key and len(list(cache.glob("*.pt"))) == 2


def test_subset_key_names_parent_and_indices(isolated_root):
    root = write_dogs_vs_cats(isolated_root / "dc", per_class=3, image_size=16)
    data = load_dogs_vs_cats(root, 16)
    a, b = data.subset([0, 2, 4]), data.subset(np.array([0, 2, 5]))
    assert a.key.startswith(data.key + "/subset-") and a.key != b.key
    assert data.subset(torch.tensor([0, 2, 4])).key == a.key  # the same indices, however given
    assert core.ImageSet(data.images, data.labels, data.classes).subset([0]).key is None


def test_synthetic_set_is_generated_again_when_the_generator_changes(isolated_root, monkeypatch):
    root = synthetic.ensure_synthetic("dogs-vs-cats", per_class=2, image_size=16)
    marker = root / "GENERATED.json"
    assert synthetic.generator_fingerprint() in marker.read_text()
    first = marker.stat().st_mtime_ns
    assert synthetic.ensure_synthetic("dogs-vs-cats", per_class=2, image_size=16) == root
    assert marker.stat().st_mtime_ns == first  # same code and settings: reused
    monkeypatch.setattr(synthetic, "generator_fingerprint", lambda: "changed-code")
    assert synthetic.ensure_synthetic("dogs-vs-cats", per_class=2, image_size=16) == root
    assert "changed-code" in marker.read_text() and len(list((root / "train").glob("*.jpg"))) == 4
