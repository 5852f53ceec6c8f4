"""Stand-in backbones: offline replacements for ImageNet pre-training.

The demo profile must run anywhere, offline, and must not depend on what
happens to be in the torch hub cache. So labkit pre-trains ResNet-18/50 itself,
on a synthetic *source task* built like ImageNet-1k relative to STL-10: many
source classes (each prototype of ``labkit.data.synthetic`` in several
variants) map many-to-one onto the target classes, and others map to nothing
(they become ``other``). The result is cached under ``data/cache/standin/``.

These weights only make the pipeline meaningful on synthetic data; numbers
obtained with them are never ImageNet results.
"""
from __future__ import annotations

import io
import json

import torch
import torchvision

from labkit.data.loaders import STL10_CLASSES
from labkit.data.synthetic import STL10_PROTOTYPES, TINY_IMAGENET_FIRST_PROTOTYPE, render_many
from labkit.paths import atomic_write_bytes, cache_dir, code_fingerprint

# Source task: prototypes 0..SOURCE_PROTOTYPES-1, each in VARIANTS variants (source class = proto * VARIANTS + v).
SOURCE_PROTOTYPES = 20
VARIANTS = 2
SETTINGS = {"version": 3, "prototypes": SOURCE_PROTOTYPES, "variants": VARIANTS, "per_class": 12,
            "image_size": 32, "epochs": 3, "lr": 1e-3, "batch_size": 32, "seed": 0}


def source_classes() -> list[str]:
    return [f"proto{p:02d}-v{v}" for p in range(SOURCE_PROTOTYPES) for v in range(VARIANTS)]


def source_to_stl10() -> dict[int, int]:
    """Source class -> STL-10 class index, for the source classes that have one (the rest are 'other').

    Like ImageNet-1k, the stand-in's source task has deer-looking images but no class that maps to
    *deer*: its deer prototype's source classes are left unmapped, so deer can only be wrong or 'other'.
    """
    deer = STL10_CLASSES.index("deer")
    return {p * VARIANTS + v: STL10_PROTOTYPES.index(p)
            for p in STL10_PROTOTYPES if p < SOURCE_PROTOTYPES and STL10_PROTOTYPES.index(p) != deer
            for v in range(VARIANTS)}


def source_to_tiny_imagenet(num_classes: int) -> dict[int, int]:
    """Source class -> synthetic Tiny ImageNet class index (class i is prototype 10 + i)."""
    return {p * VARIANTS + v: p - TINY_IMAGENET_FIRST_PROTOTYPE
            for p in range(TINY_IMAGENET_FIRST_PROTOTYPE, min(SOURCE_PROTOTYPES,
                                                             TINY_IMAGENET_FIRST_PROTOTYPE + num_classes))
            for v in range(VARIANTS)}


def standin_weights(arch: str, progress: bool = False) -> dict:
    """``{"state_dict", "classes", "settings"}`` of the stand-in ``arch``, trained once and cached."""
    # the code fingerprint too: a change to the renderer or the training loop retrains the stand-in
    key = f"{arch}-" + "-".join(f"{k}{v}" for k, v in SETTINGS.items()) + f"-{code_fingerprint()}"
    path = cache_dir("standin") / f"{key}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    blob = {"state_dict": _pretrain(arch, progress), "classes": source_classes(), "settings": json.dumps(SETTINGS)}
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(path, buf.getvalue())
    return blob


def _pretrain(arch: str, progress: bool) -> dict:
    from labkit.data.batches import Batches
    from labkit.optim import make_optimizer
    from labkit.train import fit

    s = SETTINGS
    n_source = SOURCE_PROTOTYPES * VARIANTS
    labels = torch.arange(n_source).repeat_interleave(s["per_class"])
    imgs = render_many((labels // VARIANTS).tolist(), s["image_size"], seed=10_000 + s["seed"],
                       variants=(labels % VARIANTS).tolist())
    images = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    # Pre-train on the CPU in float32 whatever the machine, so the cached weights are the same everywhere.
    with torch.random.fork_rng():
        torch.manual_seed(s["seed"])
        model = getattr(torchvision.models, arch)(weights=None, num_classes=n_source)
        # channels-last: about 10 % faster for ResNet convolutions on the CPU too
        train = Batches(images, labels, s["batch_size"], augment=True, seed=s["seed"], channels_last=True)
        fit(model, train, epochs=s["epochs"], optimizer=make_optimizer("adam", model.parameters(), s["lr"]),
            device=torch.device("cpu"), progress=progress, desc=f"stand-in {arch}", channels_last=True)
        model.to(memory_format=torch.contiguous_format)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
