"""Splits and in-process batching over in-memory uint8 tensors.

No worker processes: the images are already decoded, so a batch is one index
gather, one transfer (as uint8, a quarter of the bytes of float32) and a few
vectorised tensor operations on the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from labkit.params import ParameterError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ORDERS = ("shuffle", "sequential", "class_sorted")


def decode_size(image_size: int, stored_size: int) -> int | None:
    """The one place that decides where images are resized to the network's input size ``image_size``.

    Smaller than the stored images: resized once, when decoded (less memory, no per-batch work). Larger:
    decoded at their stored size (None) and upsampled per batch on the device by :class:`Batches`, since
    e.g. 25,000 Tiny ImageNet images held at 224 px would need 3.8 GB instead of 0.3 GB.
    """
    return image_size if image_size < stored_size else None


def stratified_split(labels, test_fraction: float, seed: int = 0,
                     param: str = "test_fraction") -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split of ``range(len(labels))``: (train indices, held-out indices), each sorted.

    ``test_fraction`` 0 holds nothing out. Too little data for the split is a :class:`ParameterError`
    naming ``param``, the notebook parameter that asked for it."""
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    if test_fraction == 0:
        return idx, idx[:0]
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"{param}={test_fraction} is not allowed; allowed: 0 (hold nothing out) or a number "
                             f"strictly between 0 and 1")
    classes, counts = np.unique(labels, return_counts=True)
    n_classes = len(classes)
    if n_classes == 0 or counts.min() < 2:
        rare = classes[counts.argmin()] if n_classes else None
        raise ParameterError(
            f"{param}={test_fraction}: too few images for this split ({len(labels)} images; class {rare} has "
            f"{counts.min() if n_classes else 0}): every class needs at least 2, one on each side. Use more "
            f"images per class" + (" or val_fraction=0 (no validation split)" if param == "val_fraction" else ""))
    # On tiny sets (smoke profile) keep at least one image of every class on each side.
    n_held = int(np.ceil(test_fraction * len(labels)))
    n_held = min(max(n_held, n_classes), len(labels) - n_classes)
    train, held = train_test_split(idx, test_size=n_held, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(held)


def per_class_subset(labels, per_class: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``per_class`` images of each class, drawn without replacement with ``seed``
    (a class with fewer keeps all of its own); ``None`` keeps everything. A smaller training set with the
    classes still balanced as in the full one."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen)) if chosen else np.arange(0)


@dataclass
class Batches:
    """An iterable of ``(images, labels)`` batches, ready for the model.

    ``order`` is "shuffle" (a new permutation each epoch, seeded by seed and epoch,
    so a resumed run sees the same batches), "sequential", "class_sorted" (all of
    class 0, then class 1, ...), or any iterable of indices such as a sampler
    (e.g. pytorch-metric-learning's ``MPerClassSampler`` for P x K batches).
    Images stay uint8 until they reach ``device``; there they are resized,
    augmented (random crop with padding and horizontal flip, per image, on the
    whole batch) and normalised.
    """

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    order: str | Iterable[int] = "shuffle"
    augment: bool = False
    image_size: int | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    device: str | torch.device = "cpu"
    seed: int = 0
    drop_last: bool = False
    channels_last: bool = False
    epoch: int = 0  # set by fit before each epoch; drives the shuffle and augmentation seeds

    def __post_init__(self):
        if isinstance(self.order, str) and self.order not in ORDERS:
            raise ValueError(f"order={self.order!r} is not allowed; allowed: {', '.join(ORDERS)} or a sampler")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} is not allowed; allowed: an integer >= 1")
        self.device = torch.device(self.device)
        if self.device.type == "cuda" and self.device.index is None:  # "cuda" -> "cuda:<current>", comparable
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._images = self.images
        if self.device.type == "cuda" and self.images.device != self.device:
            # The decoded uint8 set is small next to GPU memory (STL-10: 0.14 GB, 50 Tiny ImageNet classes:
            # 0.3 GB): keep it on the GPU and index there, with no per-batch transfer. Larger sets stay in
            # pinned host memory and each batch is gathered into pinned memory, then copied asynchronously.
            free, _ = torch.cuda.mem_get_info(self.device)
            self._images = self.images.to(self.device) if self.images.numel() < free // 4 else \
                self.images.pin_memory()
        # (x / 255 - mean) / std as one multiply and one add on the 0..255 values
        self._scale = 1.0 / (torch.tensor(self.std, device=self.device).view(1, -1, 1, 1) * 255)
        self._shift = -torch.tensor(self.mean, device=self.device).view(1, -1, 1, 1) / torch.tensor(
            self.std, device=self.device).view(1, -1, 1, 1)

    def indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.order == "shuffle":
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            return torch.randperm(n, generator=g)
        if self.order == "sequential":
            return torch.arange(n)
        if self.order == "class_sorted":
            return torch.sort(self.labels, stable=True).indices
        if hasattr(self.order, "set_epoch"):  # a sampler that draws per epoch (torch's DistributedSampler style)
            self.order.set_epoch(self.epoch)
        return torch.as_tensor(list(iter(self.order)), dtype=torch.long)

    def num_samples(self) -> int:
        if not isinstance(self.order, str) and hasattr(self.order, "__len__"):
            return len(self.order)
        return len(self.labels)

    def batch_sizes(self) -> list[int]:
        n = self.num_samples()
        sizes = [min(self.batch_size, n - i) for i in range(0, n, self.batch_size)]
        if self.drop_last and sizes and sizes[-1] < self.batch_size:
            sizes.pop()
        return sizes

    def __len__(self) -> int:
        return len(self.batch_sizes())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7)
        for idx in self.indices().split(self.batch_size):
            if self.drop_last and len(idx) < self.batch_size:
                break
            x = self._gather(idx)
            y = self.labels[idx].to(self.device, non_blocking=True)
            yield self.prepare(x, g if self.augment else None), y

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        if self._images.device == self.device:
            return self._images[idx.to(self.device)]
        if self._images.is_pinned():
            batch = torch.empty((len(idx),) + tuple(self._images.shape[1:]), dtype=self._images.dtype,
                                pin_memory=True)
            torch.index_select(self._images, 0, idx, out=batch)
            return batch.to(self.device, non_blocking=True)
        return self._images[idx].to(self.device)

    def prepare(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 batch on the device -> normalised float batch (augmented when a generator is given)."""
        if self.image_size is not None and x.shape[-1] != self.image_size:
            x = F.interpolate(x.float(), size=(self.image_size, self.image_size), mode="bilinear",
                              antialias=True, align_corners=False)
        if generator is not None:
            x = random_crop_flip(x, generator)  # on uint8 where possible: a quarter of the bytes to move
        x = x.float()  # a fresh tensor (the index gather above copied), safe to modify in place
        x = x.mul_(self._scale).add_(self._shift)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflection padding of the last two axes by concatenating mirrored edge slices; unlike
    ``F.pad(mode="reflect")`` it works on uint8."""
    x = torch.cat([x[..., 1:pad + 1, :].flip(-2), x, x[..., -pad - 1:-1, :].flip(-2)], dim=-2)
    return torch.cat([x[..., 1:pad + 1].flip(-1), x, x[..., -pad - 1:-1].flip(-1)], dim=-1)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad_fraction: float = 0.125,
                     batched: bool | None = None) -> torch.Tensor:
    """Random crop after reflection padding, and a random horizontal flip, drawn per image.

    Works on uint8 or float batches. On the CPU each image is then one slice copy, which is
    several times faster than a batched gather; on a GPU the batched gather wins. ``batched``
    (default: off the CPU) picks the gather anywhere, so tests check it on the CPU too; both
    give the same output for the same generator.
    """
    n, c, h, w = x.shape
    pad = max(1, int(round(h * pad_fraction)))
    padded = _reflect_pad(x, pad)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    if batched is None:
        batched = x.device.type != "cpu"
    return _gather_windows(padded, dy, dx, flip, h, w) if batched else _slice_windows(padded, dy, dx, flip, h, w)


def _slice_windows(padded: torch.Tensor, dy, dx, flip, h: int, w: int) -> torch.Tensor:
    """Window i of ``padded`` at (dy[i], dx[i]), h x w, mirrored where flip[i]: one slice copy per image."""
    out = torch.empty(padded.shape[:2] + (h, w), dtype=padded.dtype, device=padded.device)
    for i, (y0, x0, f) in enumerate(zip(dy.tolist(), dx.tolist(), flip.tolist())):
        crop = padded[i, :, y0:y0 + h, x0:x0 + w]
        out[i] = crop.flip(-1) if f else crop
    return out


def _gather_windows(padded: torch.Tensor, dy, dx, flip, h: int, w: int) -> torch.Tensor:
    """The same windows as :func:`_slice_windows` with two batched gathers (rows, then columns,
    reversed where flipped): no per-image Python loop, so no per-image kernel launch on a GPU."""
    n, c = padded.shape[:2]
    dy, dx, flip = dy.to(padded.device), dx.to(padded.device), flip.to(padded.device)
    rows = dy.view(n, 1) + torch.arange(h, device=padded.device).view(1, h)
    cols = dx.view(n, 1) + torch.arange(w, device=padded.device).view(1, w)
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols)
    out = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, padded.shape[-1]))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))
