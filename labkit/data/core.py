"""The in-memory dataset type, image decoding and the decoded-dataset cache."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from labkit.errors import MissingFileError
from labkit.paths import atomic_torch_save, cache_dir, code_fingerprint, touch
from labkit.progress import progress

# The datasets' classes in their official order (label 0 first), and STL-10's stored image size.
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
STL10_SIZE = 96
DOGS_VS_CATS_CLASSES = ["cat", "dog"]

# Bump when a loader's output for the same files changes, so old caches are not reused.
CACHE_FORMAT = 2  # 2: per-image ids kept with the arrays


class DatasetNotFoundError(MissingFileError):
    """A dataset is not where it is expected; the message names the path and the command that fetches it."""


@dataclass
class ImageSet:
    """A decoded dataset held in memory: uint8 images N x 3 x H x W (RGB), int64 labels.

    ``key`` is the dataset's identity: its cache key (loader, settings, every source file's path,
    size and modification time, labkit's code fingerprint), extended by the indices for a subset.
    Run keys include it, so a checkpoint never resumes on other data. None for a hand-made set.

    ``ids`` name each image where it came from: its file's path under the dataset folder, or its index in
    the source file (STL-10's binary files); None means the index in this set. Kept with the predictions,
    so two reports can be compared image by image.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: list[str] = field(default_factory=list)
    key: str | None = None
    ids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "ImageSet":
        indices = torch.as_tensor(indices, dtype=torch.long)
        key = None
        if self.key is not None:  # the same parent and indices are the same data; others are not
            key = f"{self.key}/subset-{hashlib.sha256(indices.cpu().numpy().tobytes()).hexdigest()[:12]}"
        ids = [self.image_ids()[i] for i in indices.tolist()]
        return ImageSet(self.images[indices], self.labels[indices], list(self.classes), list(self.skipped), key, ids)

    def image_ids(self) -> list[str]:
        """Each image's id: ``ids``, or its index in this set."""
        return list(self.ids) if self.ids is not None else [str(i) for i in range(len(self))]

    def identity(self) -> str:
        """SHA-256 of the decoded images' bytes and the labels, in order: the same images in the same order
        give the same identity across code changes, machines and a fresh download (unlike :attr:`key`, which
        holds file times and the code fingerprint)."""
        digest = hashlib.sha256()
        digest.update(str(tuple(self.images.shape)).encode())
        digest.update(self.images.contiguous().cpu().numpy().tobytes())
        digest.update(self.labels.to(torch.int64).contiguous().cpu().numpy().tobytes())
        return digest.hexdigest()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def decode_image(path: Path, image_size: int | None) -> np.ndarray:
    """Decode one file fully to an RGB uint8 array (H x W x 3), optionally resized to a square.

    ``Image.load()`` decodes every byte, so truncated JPEGs raise here instead of
    slipping through as ``verify()`` would let them.
    """
    with Image.open(path) as img:
        if image_size is not None and img.format == "JPEG":
            # Let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) when the photo is much larger:
            # far less work than decoding at full size and then shrinking.
            img.draft("RGB", (image_size, image_size))
        img.load()
        img = img.convert("RGB")
        if image_size is not None and img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BILINEAR, reducing_gap=2.0)
        return np.asarray(img, dtype=np.uint8)


_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


# A decode this long (a real dataset's first load: 25,000 Dogs vs Cats photos take minutes) shows progress;
# shorter ones (the demo's synthetic sets, cached loads) stay quiet.
PROGRESS_MIN_FILES = 2000


def decode_many(paths: Sequence[Path], image_size: int | None,
                desc: str = "decoding images") -> tuple[list[np.ndarray | None], list[str]]:
    """Decode files on a thread pool (PIL releases the GIL while decoding). Unreadable files give None.
    From ``PROGRESS_MIN_FILES`` files on, a bar in JupyterLab and on a terminal, sparse text lines under
    the report runner and in logs (:mod:`labkit.progress`)."""

    def one(path):
        try:
            return decode_image(path, image_size)
        except _DECODE_ERRORS:
            return None

    workers = max(1, min(8, os.cpu_count() or 1))
    bar = progress(len(paths), desc, unit="files") if len(paths) >= PROGRESS_MIN_FILES else None
    arrays = []
    with ThreadPoolExecutor(workers) as pool:
        for array in pool.map(one, paths):
            arrays.append(array)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    skipped = [str(p) for p, a in zip(paths, arrays) if a is None]
    return arrays, skipped


def stack_images(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """H x W x 3 arrays (all the same size) to one uint8 tensor N x 3 x H x W."""
    if not arrays:
        return torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def warn_skipped(skipped: Sequence[str], where: Path) -> None:
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable file(s) under {where} (empty, truncated or not an image), "
            f"e.g. {skipped[0]}; see ImageSet.skipped for the full list",
            stacklevel=4,
        )


def _fingerprint(files: Sequence[Path]) -> list:
    out = []
    for f in files:
        st = os.stat(f)
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def dataset_key(kind: str, settings: dict, files: Sequence[Path]) -> str:
    """``<kind>-<hash of loader, settings and files>-<code fingerprint>``: the cache file's stem and
    :attr:`ImageSet.key`. Any change to a file under ``labkit/`` gives a new key, so a changed loader
    never serves arrays that older code decoded."""
    key_material = json.dumps([kind, CACHE_FORMAT, settings, _fingerprint(files)], sort_keys=True)
    return f"{kind}-{hashlib.sha256(key_material.encode()).hexdigest()[:20]}-{code_fingerprint()}"


def cached(kind: str, settings: dict, files: Sequence[Path], build: Callable[[], ImageSet],
           use_cache: bool = True) -> ImageSet:
    """Return ``build()``'s result, decoded once and cached under ``data/cache/datasets/``.

    The key (:func:`dataset_key`) covers the loader, its settings, every source file's path, size
    and modification time, and labkit's code, so editing, adding or removing a file or changing
    labkit invalidates the cache. A damaged cache file is rebuilt.
    """
    key = dataset_key(kind, settings, files)
    if not use_cache:
        data = build()
        data.key = key
        return data
    folder = cache_dir("datasets")
    path = folder / f"{key}.pt"
    if path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            images, labels = blob["images"], blob["labels"]
            if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4
                    and isinstance(labels, torch.Tensor) and labels.shape == (len(images),)):
                raise ValueError("it does not hold a decoded dataset")
            touch(path)  # its last use, for `python -m labkit cache`
            return ImageSet(images, labels, list(blob["classes"]), list(blob["skipped"]), key, blob.get("ids"))
        except Exception as err:  # a damaged cache file is rebuilt, never trusted
            warnings.warn(f"ignoring unreadable cache {path} (it is rebuilt): {err}")
    data = build()
    data.key = key
    atomic_torch_save(path, {"images": data.images, "labels": data.labels, "classes": data.classes,
                             "skipped": data.skipped, "ids": data.ids})
    # The same files decoded by older code are dead weight now (STL-10's test set alone is 0.2 GB):
    # drop them, so the cache does not grow with every change to labkit.
    data_part = key.rsplit("-", 1)[0]
    for stale in folder.glob(f"{data_part}-*.pt"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return data
