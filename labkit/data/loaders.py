"""Loaders for the three datasets, reading their genuine on-disk layouts."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from labkit.data.core import (DOGS_VS_CATS_CLASSES, STL10_CLASSES, STL10_SIZE, DatasetNotFoundError, ImageSet,
                              cached, decode_many, stack_images, warn_skipped)



def _missing(what: str, expected: Path, dataset: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{what} not found at {expected}. Fetch the real dataset with `make data DATASETS={dataset}` "
        f"(it lands in data/{dataset}/), or pass data_source='synthetic' to use the generated stand-in."
    )


def _check_split(split: str, allowed: tuple[str, ...], note: str = "") -> None:
    if split not in allowed:
        raise ValueError(f"split={split!r} is not available; allowed: {', '.join(allowed)}.{note}")


# --------------------------------------------------------------------------- STL-10

def load_stl10(root, split: str = "train", image_size: int | None = None, use_cache: bool = True) -> ImageSet:
    """STL-10 from the official binary files under ``root/stl10_binary/``.

    Each image is 3 x 96 x 96 uint8 stored channel by channel, column-major within
    a channel (as MATLAB writes it), so each plane is transposed on read. Labels
    are 1..10 on disk and 0..9 here, in the official class order.
    """
    _check_split(split, ("train", "test"))
    root = Path(root)
    folder = root / "stl10_binary" if (root / "stl10_binary").is_dir() else root
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    if not x_path.is_file() or not y_path.is_file():
        raise _missing(f"STL-10 {split} files ({x_path.name}, {y_path.name})", root / "stl10_binary", "stl10")

    def build() -> ImageSet:
        raw = np.fromfile(x_path, dtype=np.uint8)
        plane = 3 * STL10_SIZE * STL10_SIZE
        if raw.size % plane:
            raise ValueError(f"{x_path} has {raw.size} bytes, not a multiple of 3x96x96: the file is damaged")
        images = torch.from_numpy(raw.reshape(-1, 3, STL10_SIZE, STL10_SIZE).transpose(0, 1, 3, 2).copy())
        labels = torch.from_numpy(np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1)
        if len(labels) != len(images):
            raise ValueError(f"{y_path} holds {len(labels)} labels for {len(images)} images in {x_path}")
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{y_path} has labels outside 1..10: not an STL-10 label file")
        if image_size is not None and image_size != STL10_SIZE:
            images = resize_uint8(images, image_size)
        return ImageSet(images, labels, list(STL10_CLASSES))

    return cached("stl10", {"split": split, "image_size": image_size}, [x_path, y_path], build, use_cache)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch with antialiasing, in chunks to bound memory."""
    out = []
    for chunk in images.split(1024):
        x = torch.nn.functional.interpolate(chunk.float(), size=(size, size), mode="bilinear",
                                            antialias=True, align_corners=False)
        out.append(x.round().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else images


# --------------------------------------------------------------------------- Tiny ImageNet

def _tiny_root(root: Path) -> Path:
    for candidate in (root, root / "tiny-imagenet-200"):
        if (candidate / "wnids.txt").is_file():
            return candidate
    raise _missing("Tiny ImageNet (wnids.txt)", root / "tiny-imagenet-200", "tiny-imagenet-200")


def load_tiny_imagenet(root, split: str = "train", num_classes: int = 50, class_order: str = "sorted",
                       image_size: int | None = None, use_cache: bool = True) -> ImageSet:
    """Tiny ImageNet from the extracted official ``tiny-imagenet-200`` folder (or its parent).

    The class subset is the first ``num_classes`` wnids, in sorted order or in
    ``wnids.txt`` order (``class_order="wnids"``). Train labels come from the class
    folders, val labels from ``val/val_annotations.txt``. The official test split has
    no labels; the notebooks use ``val`` as their test set.
    """
    _check_split(split, ("train", "val"),
                 " The official 'test' split is unlabelled; use 'val' as the test set." if split == "test" else "")
    if class_order not in ("sorted", "wnids"):
        raise ValueError(f"class_order={class_order!r} is not allowed; allowed: sorted, wnids")
    root = _tiny_root(Path(root))
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()]
    if class_order == "sorted":
        wnids = sorted(wnids)
    if not 1 <= num_classes <= len(wnids):
        raise ValueError(f"num_classes={num_classes} but {root} has {len(wnids)} classes; "
                         f"allowed: 1..{len(wnids)}")
    wnids = wnids[:num_classes]
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    if (root / "words.txt").is_file():
        for line in (root / "words.txt").read_text(encoding="utf-8").splitlines():
            wnid, _, names = line.partition("\t")
            words[wnid] = names.split(",")[0].strip()
    classes = [words.get(w, w) for w in wnids]

    if split == "train":
        files, labels = [], []
        for w in wnids:
            folder = root / "train" / w / "images"
            if not folder.is_dir():
                raise _missing(f"training images of class {w}", folder, "tiny-imagenet-200")
            for f in sorted(folder.iterdir()):
                files.append(f)
                labels.append(index[w])
    else:
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise _missing("val/val_annotations.txt", ann, "tiny-imagenet-200")
        files, labels = [], []
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in index:
                files.append(root / "val" / "images" / parts[0])
                labels.append(index[parts[1]])
        files_and_labels = sorted(zip(files, labels))
        files, labels = [f for f, _ in files_and_labels], [y for _, y in files_and_labels]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise _missing(f"{len(missing)} val image(s) named in val_annotations.txt, e.g. {missing[0].name}",
                           root / "val" / "images", "tiny-imagenet-200")

    def build() -> ImageSet:
        return _decode_labelled(files, labels, classes, image_size, root, f"decoding Tiny ImageNet {split}")

    # The labels as read are part of the key as well as val_annotations.txt's size and time: an edited
    # annotation file changes the key even within the file system's timestamp resolution.
    settings = {"split": split, "wnids": wnids, "image_size": image_size, "classes": classes, "labels": labels}
    fingerprint_files = files + ([root / "val" / "val_annotations.txt"] if split == "val" else [])
    return _warned(cached("tiny_imagenet", settings, fingerprint_files, build, use_cache), root)


def _decode_labelled(files, labels, classes, image_size, where, desc: str) -> ImageSet:
    arrays, skipped = decode_many(files, image_size, desc)
    keep = [i for i, a in enumerate(arrays) if a is not None]
    if image_size is None and keep:
        sizes = {arrays[i].shape for i in keep}
        if len(sizes) > 1:
            raise ValueError(f"images under {where} have different sizes {sorted(sizes)[:3]}...; "
                             f"pass image_size= to resize them at decode")
    images = stack_images([arrays[i] for i in keep])
    ids = [Path(files[i]).relative_to(where).as_posix() if Path(files[i]).is_relative_to(where) else
           Path(files[i]).name for i in keep]
    return ImageSet(images, torch.tensor([labels[i] for i in keep], dtype=torch.int64), list(classes), skipped,
                    ids=ids)


def _warned(data: ImageSet, where: Path) -> ImageSet:
    warn_skipped(data.skipped, where)
    return data


# --------------------------------------------------------------------------- Dogs vs Cats

_KAGGLE_NAME = re.compile(r"^(cat|dog)\.(\d+)\.(jpe?g|png)$", re.IGNORECASE)


def dogs_vs_cats_files(root) -> tuple[list[Path], list[int]]:
    """The labelled files of either layout: Kaggle ``train/cat.<n>.jpg`` or ``PetImages/Cat/<n>.jpg``."""
    root = Path(root)
    for kaggle in (root / "train", root):
        if kaggle.is_dir():
            found = []
            for f in kaggle.iterdir():
                m = _KAGGLE_NAME.match(f.name)
                if m:
                    found.append((DOGS_VS_CATS_CLASSES.index(m.group(1).lower()), int(m.group(2)), f))
            if found:
                found.sort()
                return [f for _, _, f in found], [y for y, _, _ in found]
    pet = root / "PetImages" if (root / "PetImages").is_dir() else root
    if (pet / "Cat").is_dir() and (pet / "Dog").is_dir():
        files, labels = [], []
        for label, folder in enumerate(("Cat", "Dog")):
            for f in sorted((pet / folder).iterdir(), key=lambda p: (len(p.name), p.name)):
                if f.is_file() and f.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    files.append(f)
                    labels.append(label)
        return files, labels
    raise _missing("Dogs vs Cats images (train/cat.<n>.jpg or PetImages/Cat/<n>.jpg)", root, "dogs-vs-cats")


def load_dogs_vs_cats(root, image_size: int = 64, use_cache: bool = True) -> ImageSet:
    """Dogs vs Cats, resized to ``image_size`` squares at decode; cat = 0, dog = 1.

    Empty, truncated and non-image files (PetImages has some) are skipped with one
    warning and listed in ``skipped``.
    """
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size={image_size!r} is not allowed; allowed: an integer >= 8")
    root = Path(root)
    files, labels = dogs_vs_cats_files(root)

    def build() -> ImageSet:
        return _decode_labelled(files, labels, DOGS_VS_CATS_CLASSES, image_size, root, "decoding Dogs vs Cats")

    return _warned(cached("dogs_vs_cats", {"image_size": image_size}, files, build, use_cache), root)
