import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from labkit.data import (Batches, DatasetNotFoundError, load_dogs_vs_cats, load_stl10, load_tiny_imagenet,
                         stratified_split)
from labkit.data import core
from labkit.data.synthetic import (tiny_imagenet_wnids, write_dogs_vs_cats, write_stl10, write_stl10_binary,
                                   write_tiny_imagenet)


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
    from labkit.data import STL10_CLASSES
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
    kinds = sorted(__import__("os").path.getsize(p) > 0 for p in data.skipped)
    assert kinds == [False, True, True]  # the empty file, the truncated JPEG and the text file


def test_dogs_vs_cats_real_sample(samples, isolated_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the genuine photos must all decode
        data = load_dogs_vs_cats(samples / "dogs-vs-cats", image_size=64)
    assert data.images.shape == (60, 3, 64, 64)
    assert torch.bincount(data.labels).tolist() == [30, 30]
    assert data.skipped == []


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


# ----------------------------------------------------------------------------- splits and batches

def test_stratified_split_is_deterministic_and_stratified():
    labels = np.array([0] * 70 + [1] * 30)
    a_train, a_test = stratified_split(labels, 0.3, seed=1)
    b_train, b_test = stratified_split(labels, 0.3, seed=1)
    assert np.array_equal(a_test, b_test) and len(a_test) == 30
    assert np.bincount(labels[a_test]).tolist() == [21, 9]
    assert not set(a_train) & set(a_test)
    assert not np.array_equal(stratified_split(labels, 0.3, seed=2)[1], a_test)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        stratified_split(labels, 1.5)


def test_batches_orders_and_augmentation():
    images = torch.arange(10 * 3 * 8 * 8, dtype=torch.int64).remainder(256).to(torch.uint8).view(10, 3, 8, 8)
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    seq = Batches(images, labels, 4, order="sequential", mean=(0, 0, 0), std=(1 / 255,) * 3)
    batches = list(seq)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.allclose(batches[0][0], images[:4].float())  # mean 0, std 1/255: raw values back
    sorted_labels = torch.cat([y for _, y in Batches(images, labels, 3, order="class_sorted")])
    assert sorted_labels.tolist() == [0] * 5 + [1] * 5
    shuffled = Batches(images, labels, 10, order="shuffle", seed=3)
    first = next(iter(shuffled))[1]
    again = next(iter(Batches(images, labels, 10, order="shuffle", seed=3)))[1]
    assert torch.equal(first, again)
    shuffled.epoch = 1
    assert not torch.equal(next(iter(shuffled))[0], next(iter(Batches(images, labels, 10, seed=3)))[0])
    sampler_order = [9, 8, 7, 0]
    got = torch.cat([y for _, y in Batches(images, labels, 2, order=sampler_order)])
    assert got.tolist() == labels[sampler_order].tolist()
    aug = next(iter(Batches(images, labels, 10, order="sequential", augment=True, image_size=6)))[0]
    assert aug.shape == (10, 3, 6, 6) and aug.dtype == torch.float32
    with pytest.raises(ValueError, match="allowed: shuffle, sequential, class_sorted"):
        Batches(images, labels, 2, order="random")


def test_random_crop_flip_moves_content_but_keeps_values():
    from labkit.data import random_crop_flip
    x = torch.randint(0, 255, (16, 3, 16, 16), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert not torch.equal(out, x)
    # every output row of pixels comes from the (padded, maybe flipped) input image
    assert set(out[0].unique().tolist()) <= set(x[0].unique().tolist())
