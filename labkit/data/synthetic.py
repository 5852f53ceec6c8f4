"""Deterministic synthetic datasets, written in the real on-disk formats.

Every image is drawn from a class "prototype": a shape, a hue and a stripe
texture, placed at a random position, scale and rotation on a random
low-saturation background, with colour jitter and pixel noise. Classes are
learnable but not trivially (the cue is the combination, and noise blurs it),
so training curves and comparisons mean something.

The same prototypes feed the stand-in backbone's source task
(``labkit.standin``): STL-10's synthetic classes are prototypes 0..9, Tiny
ImageNet's start at 10, so the stand-in relates to them as ImageNet-1k relates
to the real datasets.
"""
from __future__ import annotations

import colorsys
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from labkit.data.loaders import STL10_CLASSES, STL10_SIZE
from labkit.paths import synthetic_data_dir

SHAPES = ["circle", "square", "triangle", "ring", "cross", "diamond", "bars", "half-disc"]
STL10_PROTOTYPES = list(range(10))
TINY_IMAGENET_FIRST_PROTOTYPE = 10
GENERATOR_VERSION = 2


def prototype(proto: int) -> dict:
    """The fixed look of a class: shape, hue and stripe frequency/orientation."""
    return {
        "shape": proto % len(SHAPES),
        "hue": (proto * 0.381966 + 0.05) % 1.0,  # golden-angle steps keep neighbouring classes apart
        "freq": 1.5 + 1.5 * ((proto // len(SHAPES)) % 4),
        "angle": np.pi * ((proto * 0.61803) % 1.0),
    }


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.sqrt(u * u + v * v)
    au, av = np.abs(u), np.abs(v)
    if shape == 0:
        return r < 1.0
    if shape == 1:
        return np.maximum(au, av) < 0.85
    if shape == 2:
        return (v < 0.75) & (v > -0.95) & (au < (v + 0.95) * 0.58)
    if shape == 3:
        return (r < 1.0) & (r > 0.55)
    if shape == 4:
        return ((au < 0.3) & (av < 0.95)) | ((av < 0.3) & (au < 0.95))
    if shape == 5:
        return au + av < 1.05
    if shape == 6:
        return ((np.abs(v - 0.45) < 0.22) | (np.abs(v + 0.45) < 0.22)) & (au < 0.9)
    return (r < 1.0) & (v > -0.15)


def render(proto: int, rng: np.random.Generator, size: int, variant: int = 0,
           noise: float = 18.0, random_hue: bool = False, distractor: bool = False,
           rotation: float = 0.25) -> np.ndarray:
    """One H x W x 3 uint8 image of class prototype ``proto``.

    ``variant`` changes the texture orientation and background brightness (the
    stand-in's source task has several variants per prototype). ``random_hue``
    removes colour as a cue (Dogs vs Cats: shape and texture decide); ``rotation`` is the
    standard deviation (radians) of the shape's random rotation.
    """
    p = prototype(proto)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) * 2 - 1
    bg_rgb = np.array(colorsys.hsv_to_rgb(rng.random(), 0.25 * rng.random(), 0.25 + 0.3 * rng.random()))
    bg_rgb = bg_rgb + 0.15 * variant * (1 if variant % 2 else -0.5)
    img = np.broadcast_to(bg_rgb.astype(np.float32) * 255, (size, size, 3)).copy()
    # a soft background gradient so the backdrop is not a flat colour
    img += (xx * rng.normal(0, 20) + yy * rng.normal(0, 20))[..., None]

    def draw(shape, hue, freq, angle, scale, cx, cy, rot, strength=1.0):
        c, s = np.cos(rot), np.sin(rot)
        u = ((xx - cx) * c + (yy - cy) * s) / scale
        v = (-(xx - cx) * s + (yy - cy) * c) / scale
        mask = _shape_mask(shape, u, v)
        stripes = 0.7 + 0.3 * np.sin(np.pi * freq * (u * np.cos(angle) + v * np.sin(angle)))
        rgb = np.array(colorsys.hsv_to_rgb(hue % 1.0, 0.55 + 0.4 * rng.random(), 0.7 + 0.3 * rng.random()))
        fill = stripes[..., None] * rgb[None, None, :] * 255
        img[mask] = (1 - strength) * img[mask] + strength * fill[mask]

    if distractor:  # a faint shape of another kind, so position and size alone never decide
        draw(rng.integers(len(SHAPES)), rng.random(), 2.0, 0.0, 0.25, rng.uniform(-0.6, 0.6),
             rng.uniform(-0.6, 0.6), rng.uniform(0, np.pi), strength=0.5)
    hue = rng.random() if random_hue else p["hue"] + rng.normal(0, 0.03)
    angle = p["angle"] + (np.pi / 2) * variant + rng.normal(0, 0.15)
    scale = rng.uniform(0.4, 0.65)
    cx, cy = rng.uniform(-1 + scale, 1 - scale, size=2) * 0.8
    draw(p["shape"], hue, p["freq"], angle, scale, cx, cy, rng.normal(0, rotation))
    img += rng.normal(0, noise, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_many(protos, size: int, seed: int, variants=None, **kwargs) -> np.ndarray:
    """N x H x W x 3 uint8 images; image i is drawn from its own seeded generator, so it
    does not depend on how many others are drawn."""
    variants = [0] * len(protos) if variants is None else variants
    out = np.empty((len(protos), size, size, 3), dtype=np.uint8)
    for i, (proto, var) in enumerate(zip(protos, variants)):
        out[i] = render(int(proto), np.random.default_rng([seed, i, int(proto)]), size, int(var), **kwargs)
    return out


# --------------------------------------------------------------------------- writers

def _write_atomically(root: Path, settings: dict, write) -> Path:
    """Generate into a temporary sibling folder and rename it into place; a marker file
    records the settings, so an identical request later is a no-op."""
    root = Path(root)
    marker = root / "GENERATED.json"
    settings = {"generator_version": GENERATOR_VERSION, **settings}
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return root
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    (tmp / "GENERATED.json").write_text(json.dumps(settings, indent=1))
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def write_stl10(root, train_per_class: int = 50, test_per_class: int = 50, seed: int = 0) -> Path:
    """Write ``root/stl10_binary/{train,test}_{X,y}.bin`` exactly as the official files are laid out
    (3 x 96 x 96 uint8 per image, each channel column-major; labels 1..10 as uint8)."""

    def write(tmp: Path):
        folder = tmp / "stl10_binary"
        folder.mkdir()
        (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
        for split, per_class, split_seed in (("train", train_per_class, seed), ("test", test_per_class, seed + 1)):
            labels = np.repeat(np.arange(10), per_class)
            labels = labels[np.random.default_rng(split_seed).permutation(len(labels))]
            imgs = render_many([STL10_PROTOTYPES[y] for y in labels], STL10_SIZE, split_seed)
            write_stl10_binary(folder / f"{split}_X.bin", folder / f"{split}_y.bin", imgs, labels)

    return _write_atomically(root, {"dataset": "stl10", "train_per_class": train_per_class,
                                    "test_per_class": test_per_class, "seed": seed}, write)


def write_stl10_binary(x_path: Path, y_path: Path, images_hwc: np.ndarray, labels0: np.ndarray) -> None:
    """Images N x 96 x 96 x 3 and 0-based labels -> the official binary files."""
    planes = images_hwc.transpose(0, 3, 2, 1)  # N x C x W x H: column-major within each channel
    np.ascontiguousarray(planes).tofile(x_path)
    (np.asarray(labels0) + 1).astype(np.uint8).tofile(y_path)


def tiny_imagenet_wnids(num_classes: int) -> list[str]:
    return [f"n{90000000 + 1009 * i:08d}" for i in range(num_classes)]


def write_tiny_imagenet(root, num_classes: int = 10, train_per_class: int = 50, val_per_class: int = 10,
                        test_images: int = 5, image_size: int = 64, seed: int = 0) -> Path:
    """Write the official ``tiny-imagenet-200`` layout under ``root/tiny-imagenet-200``:
    ``wnids.txt`` (not sorted, like the real one), ``words.txt``, ``train/<wnid>/images`` with
    ``<wnid>_boxes.txt``, ``val/images`` with ``val_annotations.txt``, and unlabelled ``test/images``.
    Every 25th image is greyscale, as some real ones are."""
    wnids = tiny_imagenet_wnids(num_classes)

    def save(arr: np.ndarray, path: Path, index: int):
        img = Image.fromarray(arr)
        if index % 25 == 24:
            img = img.convert("L")
        img.save(path, "JPEG", quality=90)

    def write(tmp: Path):
        base = tmp / "tiny-imagenet-200"
        base.mkdir()
        order = np.random.default_rng(seed).permutation(num_classes)
        (base / "wnids.txt").write_text("".join(f"{wnids[i]}\n" for i in order))
        (base / "words.txt").write_text("".join(
            f"{w}\tsynthetic {SHAPES[prototype(TINY_IMAGENET_FIRST_PROTOTYPE + i)['shape']]} {i:03d}, class {i}\n"
            for i, w in enumerate(wnids)))
        box = f"\t0\t0\t{image_size - 1}\t{image_size - 1}\n"
        for c, w in enumerate(wnids):
            folder = base / "train" / w / "images"
            folder.mkdir(parents=True)
            protos = [TINY_IMAGENET_FIRST_PROTOTYPE + c] * train_per_class
            lines = []
            for i, arr in enumerate(render_many(protos, image_size, seed * 7919 + c)):
                save(arr, folder / f"{w}_{i}.JPEG", i)
                lines.append(f"{w}_{i}.JPEG{box}")
            (base / "train" / w / f"{w}_boxes.txt").write_text("".join(lines))
        (base / "val" / "images").mkdir(parents=True)
        labels = np.random.default_rng(seed + 1).permutation(np.repeat(np.arange(num_classes), val_per_class))
        imgs = render_many([TINY_IMAGENET_FIRST_PROTOTYPE + y for y in labels], image_size, seed + 1)
        lines = []
        for i, (arr, y) in enumerate(zip(imgs, labels)):
            save(arr, base / "val" / "images" / f"val_{i}.JPEG", i)
            lines.append(f"val_{i}.JPEG\t{wnids[y]}{box}")
        (base / "val" / "val_annotations.txt").write_text("".join(lines))
        (base / "test" / "images").mkdir(parents=True)
        rng = np.random.default_rng(seed + 2)
        protos = TINY_IMAGENET_FIRST_PROTOTYPE + rng.integers(0, num_classes, test_images)
        for i, arr in enumerate(render_many(protos, image_size, seed + 2)):
            save(arr, base / "test" / "images" / f"test_{i}.JPEG", i)

    return _write_atomically(root, {"dataset": "tiny-imagenet-200", "num_classes": num_classes,
                                    "train_per_class": train_per_class, "val_per_class": val_per_class,
                                    "test_images": test_images, "image_size": image_size, "seed": seed}, write)


# Cats and dogs share every colour; the shape family (pointed vs round) and the stripe texture decide.
DOGS_VS_CATS_PROTOTYPES = {0: 5, 1: 1}  # cat: diamond, dog: square (a 45-degree turn apart)


def write_dogs_vs_cats(root, per_class: int = 100, image_size: int = 64, layout: str = "kaggle",
                       broken: int = 0, seed: int = 0) -> Path:
    """Write cats and dogs as JPEGs in the Kaggle layout (``train/cat.<n>.jpg``) or the
    Microsoft PetImages layout (``PetImages/Cat/<n>.jpg``). ``broken`` adds that many each of
    an empty file, a truncated JPEG and a text file with an image name, to exercise screening."""
    if layout not in ("kaggle", "petimages"):
        raise ValueError(f"layout={layout!r} is not allowed; allowed: kaggle, petimages")

    def path_for(tmp: Path, label: int, n: int) -> Path:
        if layout == "kaggle":
            return tmp / "train" / f"{('cat', 'dog')[label]}.{n}.jpg"
        return tmp / "PetImages" / ("Cat", "Dog")[label] / f"{n}.jpg"

    def write(tmp: Path):
        for label in (0, 1):
            path_for(tmp, label, 0).parent.mkdir(parents=True, exist_ok=True)
            imgs = render_many([DOGS_VS_CATS_PROTOTYPES[label]] * per_class, image_size, seed * 31 + label,
                               random_hue=True, distractor=True, noise=28.0, rotation=0.4)
            for n, arr in enumerate(imgs):
                Image.fromarray(arr).save(path_for(tmp, label, n), "JPEG", quality=88)
        for k in range(broken):
            label = k % 2
            path_for(tmp, label, per_class + 3 * k).write_bytes(b"")
            good = path_for(tmp, label, 0).read_bytes()
            path_for(tmp, label, per_class + 3 * k + 1).write_bytes(good[: len(good) // 2])
            path_for(tmp, label, per_class + 3 * k + 2).write_text("this is not an image\n")

    return _write_atomically(root, {"dataset": "dogs-vs-cats", "per_class": per_class, "image_size": image_size,
                                    "layout": layout, "broken": broken, "seed": seed}, write)


def synthetic_dir(dataset: str, **settings) -> Path:
    """A generated dataset's folder: ``data/synthetic/<dataset>/<settings>``, so profiles of
    different sizes (and parallel sweeps) never overwrite each other's files."""
    name = "-".join(f"{k}{v}" for k, v in sorted(settings.items()))
    return synthetic_data_dir(dataset) / name


def ensure_synthetic(dataset: str, **settings) -> Path:
    """Generate (once) and return the root of a synthetic dataset, ready for its loader."""
    writers = {"stl10": write_stl10, "tiny-imagenet-200": write_tiny_imagenet, "dogs-vs-cats": write_dogs_vs_cats}
    if dataset not in writers:
        raise ValueError(f"dataset={dataset!r} is not allowed; allowed: {', '.join(writers)}")
    return writers[dataset](synthetic_dir(dataset, **settings), **settings)
