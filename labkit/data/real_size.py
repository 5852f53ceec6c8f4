"""Generated datasets with the real datasets' counts, pixel sizes and file formats, in the real data's folders.

The ``cpu`` profile's wall time depends on the real datasets' sizes (how many files, how many pixels, how costly
they are to decode), but the real datasets cannot always be downloaded. ``python -m labkit data
--generate-real-size`` writes stand-ins for them into ``data/<dataset>/``, where ``data_source: real`` looks, drawn
from the synthetic prototypes (:mod:`labkit.data.synthetic`) so they are learnable. A ``GENERATED.json`` marker at
each dataset's root says what they are: every page of a report made from them says so, since their accuracies
are not results.

Each set is written into a temporary sibling folder, the marker last, and renamed into place: an interrupted run
leaves no half dataset that looks complete. A folder that holds anything without a marker (real data, a download)
is never touched.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import shutil
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from labkit.data import synthetic
from labkit.data.core import STL10_CLASSES, STL10_SIZE
from labkit.data.marker import MARKER, generated_marker
from labkit.errors import LabkitError, ParameterError
from labkit.paths import ensure_free_space, real_data_dir

GENERATED_BY = "labkit data --generate-real-size"
NOTE = "generated images with the real dataset's counts and pixel sizes, for timing; accuracies are not results"
TINY_IMAGENET_SIZE = 64
# Dogs vs Cats photos are rendered this large and scaled up: rendering at 500 x 375 is four times slower, and
# the added grain gives the JPEGs a photo's weight (tens of kB) and decoding cost.
DOGS_VS_CATS_RENDER_SIZE = 128
DOGS_VS_CATS_NOISE = 14.0  # half the demo set's: scaled up, the render's noise is blotches
DOGS_VS_CATS_GRAIN = 3
DOGS_VS_CATS_QUALITY = 88

# The real counts, the defaults of the writers and the command line's.
REAL_COUNTS = {
    "stl10": {"train_per_class": 500, "test_per_class": 800},
    "tiny-imagenet-200": {"num_classes": 200, "train_per_class": 500, "val_per_class": 50},
    "dogs-vs-cats": {"per_class": 12500},
}
# What each image costs on disk, roughly (a small JPEG still takes a 4 kB block): the free-space check's estimate.
BYTES_PER_IMAGE = {"stl10": 3 * STL10_SIZE * STL10_SIZE, "tiny-imagenet-200": 4096, "dogs-vs-cats": 48_000}


class RealDataPresentError(LabkitError, FileExistsError):
    """The folder a generated set would go into holds files without a generated set's marker: real data, or a
    download. They are never overwritten nor mixed with generated files."""


@functools.cache
def generator_fingerprint() -> str:
    """A hash of the generators' code (this module and the prototypes'): a set made by other code is generated
    again, an identical one is kept."""
    digest = hashlib.sha256()
    for module in (__file__, synthetic.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:12]


def generate_real_size(dataset: str, root=None, workers: int | None = None, seed: int = 0,
                       **counts) -> tuple[Path, int | None]:
    """Write the generated ``dataset`` with the real counts (or ``counts``, e.g. ``per_class=10`` for tests) into
    ``root`` (default ``data/<dataset>/``) with ``workers`` processes (default: one per core). Returns the folder
    and the bytes written, or None when an identical complete set was already there.

    Raises :class:`RealDataPresentError` when ``root`` holds anything but a generated set."""
    if dataset not in REAL_COUNTS:
        raise ParameterError(f"dataset={dataset!r} is not allowed; allowed: {', '.join(REAL_COUNTS)}")
    unknown = sorted(set(counts) - set(REAL_COUNTS[dataset]))
    if unknown:
        raise ParameterError(f"{dataset}: unknown count(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(REAL_COUNTS[dataset])}")
    counts = {**REAL_COUNTS[dataset], **counts}
    root = Path(root) if root else real_data_dir(dataset)
    settings = {"generated_by": GENERATED_BY, "real_size": True, "dataset": dataset,
                "generator": generator_fingerprint(), "seed": seed, "counts": counts}
    marker = generated_marker(root) if (root / MARKER).is_file() else None  # only root's own marker counts here
    if marker is None and root.exists() and any(root.iterdir()):
        raise RealDataPresentError(
            f"{root} already holds files and no {MARKER}: real data (or a download) that a generated set must "
            f"never overwrite or mix with. Move that folder away, or pass another --data-root, and run the "
            f"command again.")
    if marker is not None and all(marker.get(k) == v for k, v in settings.items()):
        return root, None
    images = _image_count(dataset, counts)
    ensure_free_space(root.parent, images * BYTES_PER_IMAGE[dataset], f"generating {dataset} ({images:,} images)")
    tmp = root.with_name(f".{root.name}.generating-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with Pool(workers or os.cpu_count() or 1) as pool:
            details = WRITERS[dataset](tmp, pool, seed, **counts)
        written = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        marker = {**settings, **details, "bytes": written, "date": dt.datetime.now().astimezone().isoformat(
            timespec="seconds"), "note": NOTE}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")  # last: the set is complete
        if root.exists():  # an older generated set (its marker says so), or an empty folder
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:  # an interrupt or a full disk: no half set left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root, written


def _image_count(dataset: str, counts: dict) -> int:
    if dataset == "stl10":
        return 10 * (counts["train_per_class"] + counts["test_per_class"])
    if dataset == "tiny-imagenet-200":
        return counts["num_classes"] * (counts["train_per_class"] + counts["val_per_class"])
    return 2 * counts["per_class"]


def _run(pool, worker, jobs: list, total: int, desc: str) -> None:
    """Run ``worker`` over ``jobs`` (chunks of images) on the pool, with a progress bar over images."""
    from labkit.progress import progress
    with progress(total, desc, unit="img") as bar:
        for done in pool.imap_unordered(worker, jobs):
            bar.update(done)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# --------------------------------------------------------------------------- STL-10

def _stl10_chunk(job: tuple) -> int:
    """Render images ``start..`` of an STL-10 split into their place in the pre-sized ``_X.bin`` file."""
    x_path, start, labels, seed = job
    planes = np.memmap(x_path, dtype=np.uint8, mode="r+", offset=start * 3 * STL10_SIZE * STL10_SIZE,
                       shape=(len(labels), 3, STL10_SIZE, STL10_SIZE))
    for k, y in enumerate(labels):
        i = start + k
        img = synthetic.render(synthetic.STL10_PROTOTYPES[y], np.random.default_rng([seed, i, y]), STL10_SIZE)
        planes[k] = img.transpose(2, 1, 0)  # C x W x H: column-major within each channel, as the real files
    planes.flush()
    return len(labels)


def write_stl10(tmp: Path, pool, seed: int = 0, train_per_class: int = 500, test_per_class: int = 800) -> dict:
    """``stl10_binary/{train,test}_{X,y}.bin`` and ``class_names.txt`` in the official layout (see
    :func:`labkit.data.synthetic.write_stl10_binary`); the unlabelled split is left out."""
    folder = tmp / "stl10_binary"
    folder.mkdir()
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    images = {}
    for split, per_class, split_seed in (("train", train_per_class, seed), ("test", test_per_class, seed + 1)):
        labels = np.random.default_rng(split_seed).permutation(np.repeat(np.arange(10), per_class))
        (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        x_path = folder / f"{split}_X.bin"
        with open(x_path, "wb") as f:
            f.truncate(len(labels) * 3 * STL10_SIZE * STL10_SIZE)
        jobs = [(x_path, start, chunk, split_seed)
                for start, chunk in zip(range(0, len(labels), 250), _chunks(labels.tolist(), 250))]
        _run(pool, _stl10_chunk, jobs, len(labels), f"stl10 {split}")
        images[split] = len(labels)
    return {"images": images, "image_size": [STL10_SIZE, STL10_SIZE],
            "left_out": "unlabeled_X.bin (100,000 images, 2.7 GB): labkit never reads it"}


# --------------------------------------------------------------------------- JPEG folders

def _jpeg_chunk(job: tuple) -> int:
    """Render and save one chunk of JPEGs: ``items`` are (path, prototype, seed key, (width, height), greyscale).
    An image larger than ``render_size`` is scaled up and given a fine grain."""
    items, render_size, style, quality, grain = job
    for path, proto, key, size, grey in items:
        rng = np.random.default_rng(key)
        arr = synthetic.render(proto, rng, render_size, **style)
        if tuple(size) != (render_size, render_size):
            arr = np.asarray(Image.fromarray(arr).resize(tuple(size), Image.BILINEAR), dtype=np.int16)
            arr = np.clip(arr + rng.integers(-grain, grain + 1, size=arr.shape, dtype=np.int16), 0, 255)
        img = Image.fromarray(arr.astype(np.uint8))
        img = img.convert("L") if grey else img
        img.save(path, "JPEG", quality=quality)
    return len(items)


def write_tiny_imagenet(tmp: Path, pool, seed: int = 0, num_classes: int = 200, train_per_class: int = 500,
                        val_per_class: int = 50) -> dict:
    """The official ``tiny-imagenet-200`` folder (as the zip extracts it, one level down): ``wnids.txt``,
    ``words.txt``, ``train/<wnid>/images/<wnid>_<i>.JPEG`` with ``<wnid>_boxes.txt``, ``val/images/val_<i>.JPEG``
    with ``val_annotations.txt``; 64 x 64 JPEGs, every 25th greyscale as some real ones are. The unlabelled
    ``test/`` split is left out."""
    base = tmp / "tiny-imagenet-200"
    wnids = synthetic.tiny_imagenet_wnids(num_classes)
    first = synthetic.TINY_IMAGENET_FIRST_PROTOTYPE
    order = np.random.default_rng(seed).permutation(num_classes)
    base.mkdir()
    (base / "wnids.txt").write_text("".join(f"{wnids[i]}\n" for i in order))
    (base / "words.txt").write_text("".join(
        f"{w}\tgenerated {synthetic.SHAPES[synthetic.prototype(first + i)['shape']]} {i:03d}, class {i}\n"
        for i, w in enumerate(wnids)))
    box = f"\t0\t0\t{TINY_IMAGENET_SIZE - 1}\t{TINY_IMAGENET_SIZE - 1}\n"
    items = []
    for c, w in enumerate(wnids):
        (base / "train" / w / "images").mkdir(parents=True)
        names = [f"{w}_{i}.JPEG" for i in range(train_per_class)]
        (base / "train" / w / f"{w}_boxes.txt").write_text("".join(name + box for name in names))
        items += [(str(base / "train" / w / "images" / name), first + c, [seed, c, i], (64, 64), i % 25 == 24)
                  for i, name in enumerate(names)]
    (base / "val" / "images").mkdir(parents=True)
    labels = np.random.default_rng(seed + 1).permutation(np.repeat(np.arange(num_classes), val_per_class))
    (base / "val" / "val_annotations.txt").write_text("".join(
        f"val_{i}.JPEG\t{wnids[y]}{box}" for i, y in enumerate(labels)))
    items += [(str(base / "val" / "images" / f"val_{i}.JPEG"), first + int(y), [seed + 1, i, int(y)], (64, 64),
               i % 25 == 24) for i, y in enumerate(labels)]
    jobs = [(chunk, TINY_IMAGENET_SIZE, {}, 90, 0) for chunk in _chunks(items, 500)]
    _run(pool, _jpeg_chunk, jobs, len(items), "tiny-imagenet-200")
    return {"images": {"train": num_classes * train_per_class, "val": len(labels)}, "classes": num_classes,
            "image_size": [TINY_IMAGENET_SIZE, TINY_IMAGENET_SIZE],
            "left_out": "test/ (10,000 unlabelled images): labkit never reads it"}


def photo_sizes(n: int, seed: int) -> np.ndarray:
    """``n`` (width, height) pairs like the Kaggle photos': mostly landscape with a long side of 500 px (about
    500 x 375), the rest 300-499 px; the short side 60-100 % of the long one."""
    rng = np.random.default_rng(seed)
    long = np.where(rng.random(n) < 0.75, 500, rng.integers(300, 500, n))
    ratio = np.where(rng.random(n) < 0.4, 0.75, rng.uniform(0.6, 1.0, n))
    short = np.maximum(np.round(long * ratio), 180).astype(int)
    landscape = rng.random(n) < 0.7
    return np.stack([np.where(landscape, long, short), np.where(landscape, short, long)], axis=1)


def write_dogs_vs_cats(tmp: Path, pool, seed: int = 0, per_class: int = 12500) -> dict:
    """The Kaggle layout, ``train/cat.<n>.jpg`` and ``train/dog.<n>.jpg``: JPEGs of the photos' sizes
    (:func:`photo_sizes`), cats and dogs told apart by shape and texture as in the demo's set."""
    (tmp / "train").mkdir()
    sizes = photo_sizes(2 * per_class, seed)
    style = {"random_hue": True, "distractor": True, "noise": DOGS_VS_CATS_NOISE, "rotation": 0.4}
    items = [(str(tmp / "train" / f"{name}.{n}.jpg"), synthetic.DOGS_VS_CATS_PROTOTYPES[label], [seed, label, n],
              tuple(int(v) for v in sizes[label * per_class + n]), False)
             for label, name in enumerate(("cat", "dog")) for n in range(per_class)]
    jobs = [(chunk, DOGS_VS_CATS_RENDER_SIZE, style, DOGS_VS_CATS_QUALITY, DOGS_VS_CATS_GRAIN)
            for chunk in _chunks(items, 100)]
    _run(pool, _jpeg_chunk, jobs, len(items), "dogs-vs-cats")
    summary = {axis: {"min": int(v.min()), "median": int(np.median(v)), "max": int(v.max())}
               for axis, v in (("width", sizes[:, 0]), ("height", sizes[:, 1]))}
    return {"images": {"cat": per_class, "dog": per_class}, "image_size": summary}


WRITERS = {"stl10": write_stl10, "tiny-imagenet-200": write_tiny_imagenet, "dogs-vs-cats": write_dogs_vs_cats}
